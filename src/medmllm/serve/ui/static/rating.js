// The rating page (RadFM Fig. 6): sign in, then score each blinded output of each case from 0 to 5.
"use strict";

const API = "/ui/api/ratings";
const $ = (id) => document.getElementById(id);
const state = { items: [], rubric: [], current: 0 };

function show(signedIn) {
  $("signin-panel").hidden = signedIn;
  $("rating-panel").hidden = !signedIn;
  $("signout").hidden = !signedIn;
}

async function start() {
  try {
    const me = await (await request(`${API}/me`)).json();
    $("who").textContent = `Signed in as ${me.rater}`;
    show(true);
    await loadItems();
  } catch (e) {
    if (!(e instanceof HttpError && e.status === 401)) showStatus($("signin-status"), e.message, "error");
    show(false);
    $("signin-name").focus();
  }
}

async function signIn(event) {
  event.preventDefault();
  showStatus($("signin-status"), "Signing in…");
  try {
    await request(`${API}/signin`, { method: "POST", json: { name: $("signin-name").value, password: $("signin-password").value } });
    $("signin-password").value = "";
    showStatus($("signin-status"), "");
    await start();
  } catch (e) {
    showStatus($("signin-status"), e.status === 401 ? "Wrong name or password." : e.message, "error");
  }
}

async function signOut() {
  await request(`${API}/signout`, { method: "POST", json: {} }).catch(() => {});
  $("who").textContent = "";
  show(false);
}

async function loadItems() {
  const data = await (await request(`${API}/items`)).json();
  state.items = data.items;
  state.rubric = data.rubric;
  renderRubric();
  const firstOpen = state.items.findIndex((item) => item.rated < item.outputs);
  await openItem(firstOpen >= 0 ? firstOpen : 0);
}

function renderRubric() {
  $("rubric").replaceChildren(...state.rubric.flatMap((r) => [el("dt", {}, `${r.score} · ${r.name}`), el("dd", {}, r.description)]));
}

function renderItemList() {
  $("item-list").replaceChildren(
    ...state.items.map((item, n) =>
      el("li", {},
        el("button", {
          type: "button",
          class: (item.rated === item.outputs ? "done" : item.rated ? "partial" : "") + (n === state.current ? " current" : ""),
          "aria-current": n === state.current ? "true" : null,
          title: `Case ${n + 1}: ${item.rated} of ${item.outputs} rated`,
          onclick: () => openItem(n),
        }, String(n + 1)))),
  );
  $("position").textContent = state.items.length ? `Case ${state.current + 1} of ${state.items.length}` : "No cases loaded yet";
  $("prev").disabled = state.current <= 0;
  $("next").disabled = state.current >= state.items.length - 1;
}

async function openItem(n) {
  if (!state.items.length) {
    renderItemList();
    $("outputs").replaceChildren();
    return;
  }
  state.current = n;
  renderItemList();
  showStatus($("rating-status"), "");
  let item;
  try {
    item = await (await request(`${API}/items/${n}`)).json();
  } catch (e) {
    return handleError(e);
  }
  $("images").replaceChildren(...item.images.map((src, k) => el("img", { src, alt: `Image ${k + 1} of case ${n + 1}` })));
  $("question").textContent = item.question;
  $("reference").textContent = item.reference;
  $("outputs").replaceChildren(...item.outputs.map((output) => renderOutput(n, output)));
}

function renderOutput(n, output) {
  const name = `score-${n}-${output.output}`;
  const choices = state.rubric.map((r) =>
    el("label", { class: "score", title: `${r.name}: ${r.description}` },
      el("input", {
        type: "radio", name, value: r.score, checked: output.score === r.score,
        "data-output": output.output, onchange: () => rate(n, output.output, r.score),
      }),
      String(r.score)));
  return el("article", { class: "output", "data-output": output.output },
    el("h3", {}, `Output ${output.output}`),
    el("p", { class: "prose" }, output.text),
    el("fieldset", { class: "scores" }, el("legend", {}, "Score"), choices));
}

async function rate(n, output, score) {
  try {
    await request(`${API}/items/${n}/ratings`, { method: "POST", json: { output, score } });
    showStatus($("rating-status"), `Saved: output ${output} → ${score}`, "ok");
    const progress = (await (await request(`${API}/items`)).json()).items;
    state.items = progress;
    renderItemList();
  } catch (e) {
    handleError(e);
  }
}

function handleError(e) {
  if (e instanceof HttpError && e.status === 401) {
    show(false);
    showStatus($("signin-status"), "Your session has ended; please sign in again.", "error");
  } else {
    showStatus($("rating-status"), e.message, "error");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("prev").addEventListener("click", () => openItem(state.current - 1));
  $("next").addEventListener("click", () => openItem(state.current + 1));
  start();
});

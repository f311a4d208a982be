// The clinician page: upload the exams of one patient, view slices, draft P2Med reports, ask follow-up questions.
// Everything goes through the server's API (/v1/...) with the API key as a Bearer header.
"use strict";

const KEY_STORAGE = "medmllm_api_key";
const EXAMS_STORAGE = "medmllm_exams"; // this tab's exams (ids, dates, reports) and chat, kept over a reload
const REPORT_TOKENS = 512;
const IMPRESSION_TOKENS = 192;
const ANSWER_TOKENS = 384;
const $ = (id) => document.getElementById(id);

const state = {
  model: null, // the served model's id (GET /v1/models)
  format: null, // P2Med's report prompt and sections (GET /ui/api/report-format)
  exams: [], // [{id, date, modality, slices, report}], in time order
  selected: -1,
  window: null, // null: the study's own display window
  chat: [], // [{role, content}] follow-up turns, after the exams and their reports
  busy: false,
};

// ------------------------------------------------------------------------------ API key and calls

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function askForKey(message) {
  const dialog = $("key-dialog");
  $("key-input").value = "";
  if (message) $("key-input").setAttribute("placeholder", message);
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

async function api(url, options = {}) {
  try {
    return await request(url, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${apiKey()}` } });
  } catch (e) {
    if (e instanceof HttpError && e.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      askForKey("That key was refused; enter a valid key");
    }
    throw e;
  }
}

async function connect() {
  if (!apiKey()) return askForKey();
  try {
    const models = await (await api("/v1/models")).json();
    state.model = models.data[0].id;
    state.format = await (await api("/ui/api/report-format")).json();
    $("model").textContent = `Model: ${state.model}`;
    renderWindows();
    updateButtons();
  } catch (e) {
    showStatus($("upload-status"), e.message, "error");
  }
}

// ------------------------------------------------------------------------------------- the exams

function save() {
  sessionStorage.setItem(EXAMS_STORAGE, JSON.stringify({ exams: state.exams, chat: state.chat, selected: state.selected }));
}

function restore() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(EXAMS_STORAGE) || "null");
    if (saved) Object.assign(state, { exams: saved.exams || [], chat: saved.chat || [], selected: saved.selected ?? -1 });
  } catch (e) {
    sessionStorage.removeItem(EXAMS_STORAGE);
  }
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const date = $("upload-date").value;
  if (!file || !date) return;
  const form = new FormData();
  form.append("file", file);
  form.append("time", date);
  if ($("upload-modality").value) form.append("modality", $("upload-modality").value);
  $("upload-button").disabled = true;
  showStatus($("upload-status"), "Uploading and de-identifying…");
  try {
    const study = await (await api("/v1/studies", { method: "POST", body: form })).json();
    const exam = { id: study.id, date, modality: study.modality || "", slices: study.shape[0], report: "" };
    state.exams.push(exam);
    state.exams.sort((a, b) => (a.date < b.date ? -1 : a.date > b.date ? 1 : 0)); // stable: same-day exams keep upload order
    state.selected = state.exams.indexOf(exam);
    showStatus($("upload-status"), `Exam of ${date} uploaded (${study.shape.join(" × ")}).`, "ok");
    $("upload-form").reset();
    save();
    render();
  } catch (e) {
    showStatus($("upload-status"), e.message, "error");
  } finally {
    $("upload-button").disabled = false;
  }
}

function removeExam(index) {
  state.exams.splice(index, 1);
  state.selected = Math.min(state.selected, state.exams.length - 1);
  save();
  render();
}

function render() {
  $("exams").replaceChildren(
    ...state.exams.map((exam, i) =>
      el("li", { class: i === state.selected ? "selected" : "", onclick: () => selectExam(i), "data-study": exam.id },
        el("span", { class: "date" }, exam.date),
        el("span", {}, `${exam.modality || "scan"} · ${exam.slices} slice${exam.slices === 1 ? "" : "s"}`),
        el("span", { class: "note" }, exam.report ? "report ✓" : ""),
        el("button", { type: "button", class: "secondary", title: "Remove from this page", onclick: (e) => { e.stopPropagation(); removeExam(i); } }, "×"))),
  );
  const exam = state.exams[state.selected];
  $("report-exam").textContent = exam ? `· exam of ${exam.date}` : "";
  $("report").value = exam ? exam.report : "";
  $("chat").replaceChildren(...state.chat.map((turn) => chatBubble(turn.role, turn.content)));
  renderViewer();
  updateButtons();
}

function selectExam(index) {
  state.selected = index;
  save();
  render();
}

function updateButtons() {
  const ready = state.model && state.format && state.selected >= 0 && !state.busy;
  $("draft").disabled = !ready;
  $("ask").disabled = !ready;
}

// ------------------------------------------------------------------------------------ the viewer

function renderWindows() {
  const names = [null, ...Object.keys(state.format.windows)];
  $("windows").replaceChildren(
    ...names.map((name) =>
      el("button", {
        type: "button", class: state.window === name ? "active" : "", "data-window": name || "auto",
        title: name ? `level ${state.format.windows[name].level}, width ${state.format.windows[name].width}` : "The study's own range",
        onclick: () => { state.window = name; renderWindows(); showSlice(); },
      }, name || "auto")),
  );
}

function renderViewer() {
  const exam = state.exams[state.selected];
  const slider = $("slice");
  $("viewer-title").textContent = exam ? `Viewer · exam of ${exam.date}` : "Viewer";
  slider.disabled = !exam;
  if (!exam) {
    $("slice-image").hidden = true;
    $("viewer-empty").hidden = false;
    $("slice-label").textContent = "";
    return;
  }
  slider.max = String(exam.slices - 1);
  slider.value = String(Math.floor((exam.slices - 1) / 2));
  showSlice();
}

let sliceRequest = 0; // only the latest slice request may paint (the slider moves faster than the server)
async function showSlice() {
  const exam = state.exams[state.selected];
  if (!exam) return;
  const k = Number($("slice").value);
  $("slice-label").textContent = `slice ${k + 1} / ${exam.slices}`;
  const mine = ++sliceRequest;
  const query = state.window ? `?window=${encodeURIComponent(state.window)}` : "";
  try {
    const blob = await (await api(`/v1/studies/${exam.id}/slices/${k}.png${query}`)).blob();
    if (mine !== sliceRequest) return;
    const image = $("slice-image");
    if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
    image.src = URL.createObjectURL(blob);
    image.alt = `Slice ${k + 1} of ${exam.slices}, exam of ${exam.date}`;
    image.hidden = false;
    $("viewer-empty").hidden = true;
  } catch (e) {
    if (mine === sliceRequest) showStatus($("upload-status"), e.message, "error");
  }
}

// ------------------------------------------------------------------------------------- reporting

// P2Med's report prompt around the exam's images (the server adds "[Examination time] ... [Image]").
function reportPrompt(index) {
  return {
    role: "user",
    content: [
      { type: "text", text: state.format.before_images },
      { type: "study", study_id: state.exams[index].id, exam: index },
      { type: "text", text: state.format.after_images },
    ],
  };
}

// The rounds of the exams before `index`, in time order: P2Med's multi-round conversation.
function history(index) {
  return state.exams.slice(0, index).flatMap((exam, k) => [reportPrompt(k), { role: "assistant", content: exam.report }]);
}

async function complete(messages, maxTokens) {
  const body = { model: state.model, messages, max_tokens: maxTokens, temperature: 0 };
  const answer = await (await api("/v1/chat/completions", { method: "POST", json: body })).json();
  return answer.choices[0].message.content || "";
}

// Draft the report of exam `index`: the model's answer under [Findings] and [Impression] whatever it wrote.
async function draftOne(index) {
  const messages = [...history(index), reportPrompt(index)];
  const text = await complete(messages, REPORT_TOKENS);
  let sections = await (await api("/ui/api/report/sections", { method: "POST", json: { text } })).json();
  if (sections.needs_impression) {
    const followUp = [...messages, { role: "assistant", content: text }, { role: "user", content: state.format.impression_question }];
    const impression = await complete(followUp, IMPRESSION_TOKENS);
    sections = await (await api("/ui/api/report/sections", { method: "POST", json: { text, impression } })).json();
  }
  state.exams[index].report = sections.report;
  save();
}

async function draft() {
  const target = state.selected;
  setBusy(true);
  try {
    // Earlier exams need their reports first: each round of the conversation carries one.
    for (let k = 0; k <= target; k++) {
      if (k < target && state.exams[k].report) continue;
      showStatus($("report-status"), `Drafting the report of ${state.exams[k].date}${k < target ? " (an earlier exam)" : ""}…`);
      await draftOne(k);
    }
    render();
    showStatus($("report-status"), "Draft ready: read and edit before use.", "ok");
  } catch (e) {
    showStatus($("report-status"), e.message, "error");
  } finally {
    setBusy(false);
  }
}

function setBusy(busy) {
  state.busy = busy;
  updateButtons();
}

async function copyReport() {
  const text = $("report").value;
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    $("report").select(); // no clipboard API (plain http on a non-local address): the old way
    document.execCommand("copy");
  }
  showStatus($("report-status"), "Copied.", "ok");
}

function downloadReport() {
  const exam = state.exams[state.selected];
  const link = el("a", { href: URL.createObjectURL(new Blob([$("report").value + "\n"], { type: "text/plain" })), download: `report-${exam ? exam.date : "draft"}.txt` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// ------------------------------------------------------------------------------ follow-up questions

function chatBubble(role, text) {
  return el("div", { class: `message ${role}` }, el("span", { class: "who" }, role === "user" ? "You" : "Model"), el("span", { class: "text" }, text));
}

// The conversation a question goes into: the exams up to the selected one in time order (those with a
// report as a report round; those without one as images before the first question), then the chat.
function questionMessages(question) {
  const exams = state.exams.slice(0, state.selected + 1);
  const rounds = exams.flatMap((exam, k) => (exam.report ? [reportPrompt(k), { role: "assistant", content: exam.report }] : []));
  const unreported = exams.flatMap((exam, k) => (exam.report ? [] : [{ type: "study", study_id: exam.id, exam: k }]));
  const turns = [...state.chat, { role: "user", content: question }].map((turn) => ({ role: turn.role, content: turn.content }));
  if (unreported.length) turns[0] = { role: "user", content: [...unreported, { type: "text", text: turns[0].content }] };
  return [...rounds, ...turns];
}

// Streams the answer (server-sent events) into its bubble as it is written.
async function streamAnswer(messages, bubbleText) {
  const body = { model: state.model, messages, max_tokens: ANSWER_TOKENS, temperature: 0, stream: true };
  const response = await api("/v1/chat/completions", { method: "POST", json: body });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
      if (delta) {
        text += delta;
        bubbleText.textContent = text;
      }
    }
  }
  return text;
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || state.selected < 0) return;
  const messages = questionMessages(question);
  $("chat").append(chatBubble("user", question));
  const answerBubble = chatBubble("assistant", "…");
  $("chat").append(answerBubble);
  $("question").value = "";
  setBusy(true);
  showStatus($("ask-status"), "Thinking…");
  try {
    const answer = (await streamAnswer(messages, answerBubble.querySelector(".text"))).trim();
    answerBubble.querySelector(".text").textContent = answer || "(the model wrote no text)";
    state.chat.push({ role: "user", content: question }, { role: "assistant", content: answer });
    save();
    showStatus($("ask-status"), "");
  } catch (e) {
    answerBubble.remove();
    showStatus($("ask-status"), e.message, "error");
  } finally {
    setBusy(false);
    $("chat").scrollTop = $("chat").scrollHeight;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY_STORAGE, $("key-input").value.trim());
    connect();
  });
  $("change-key").addEventListener("click", () => askForKey());
  $("upload-form").addEventListener("submit", upload);
  $("slice").addEventListener("input", showSlice);
  $("draft").addEventListener("click", draft);
  $("copy").addEventListener("click", copyReport);
  $("download").addEventListener("click", downloadReport);
  $("report").addEventListener("input", () => {
    const exam = state.exams[state.selected];
    if (exam) { exam.report = $("report").value; save(); }
  });
  $("ask-form").addEventListener("submit", ask);
  restore();
  render();
  connect();
});

// Helpers shared by the clinician page and the rating page. No framework, no build step.
"use strict";

const REQUEST_HEADER = "X-MedMLLM-Request"; // every POST carries it (CSRF: see medmllm/serve/ui/__init__.py)

// el("div", {class: "x", onclick: f}, "text", child) -> an element; text is always set as text, never as HTML.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// An HTTP error with the server's message (FastAPI's {"detail"} or the API's {"error": {"message"}}).
class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    if (body.error && body.error.message) return body.error.message;
  } catch (e) {
    /* not JSON */
  }
  return `${response.status} ${response.statusText}`;
}

// fetch() that throws HttpError on a non-2xx answer; `json` is sent as a JSON body with the request header.
async function request(url, { method = "GET", json, body, headers = {} } = {}) {
  const options = { method, headers: { ...headers }, credentials: "same-origin" };
  if (json !== undefined) {
    options.body = JSON.stringify(json);
    options.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    options.body = body;
  }
  if (method !== "GET") options.headers[REQUEST_HEADER] = "1";
  const response = await fetch(url, options);
  if (!response.ok) throw new HttpError(response.status, await errorMessage(response));
  return response;
}

function showStatus(node, text, kind) {
  node.textContent = text || "";
  node.className = "status" + (kind ? " " + kind : "");
}

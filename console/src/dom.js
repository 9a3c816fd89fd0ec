// Small DOM helpers. Data from the API only ever becomes text nodes or
// attribute values, never markup, so a document title cannot inject a script.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/// `el("button", {type: "button", onclick}, "Delete")`: attributes, `on*` listeners, children.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

/// Runs an action, showing what went wrong in the page's alert box.
export async function run(action) {
  try {
    showError("");
    await action();
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
  }
}

/// Calls `action` once the input has been still for `ms`.
export function debounce(action, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => action(...args), ms);
  };
}

export const money = (v) => (v == null ? "–" : `$${Number(v).toFixed(v !== 0 && Math.abs(v) < 0.01 ? 6 : 4)}`);
export const millis = (v) => (v == null ? "–" : `${Math.round(v)} ms`);
export const count = (v) => (v == null ? "–" : Number(v).toLocaleString("en-US"));
export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

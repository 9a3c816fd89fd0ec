// The stolid console: plain DOM and fetch, no framework. Every call goes
// through the public /v1 API with the key the person signed in with (kept in
// this tab's session storage), so the console can do nothing the API does not
// allow. Errors are shown from the API's JSON error body.
"use strict";

const KEY = "stolid.api_key";
const $ = (selector) => document.querySelector(selector);
const state = { conversationId: null, citations: new Map(), refresh: null };

/// A text node or element: never innerHTML with data from the API.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

/// Calls the API; throws an Error whose message is the API's `error.message` (with its code).
async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error;
    throw new Error(error ? `${error.message} (${error.code})` : `HTTP ${response.status}`);
  }
  return body;
}

async function run(action) {
  try {
    showError("");
    await action();
  } catch (error) {
    showError(error.message);
  }
}

// Sign-in ------------------------------------------------------------------

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    const me = await api("/v1/me");
    $("#who").textContent = `tenant ${me.tenant} (${me.provider} provider)`;
    $("#sign-in").hidden = true;
    $("#nav").hidden = false;
    $("#sign-out").hidden = false;
    show("documents");
  } catch (error) {
    sessionStorage.removeItem(KEY);
    throw error;
  }
}

function signOut() {
  sessionStorage.removeItem(KEY);
  location.reload();
}

function show(view) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== view;
  for (const button of document.querySelectorAll("#nav button")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === view));
  }
  if (view === "documents") run(loadDocuments);
  if (view === "usage") run(loadUsage);
}

// Documents ----------------------------------------------------------------

async function loadDocuments() {
  const page = await api("/v1/documents?limit=100");
  const rows = $("#document-table tbody");
  rows.replaceChildren();
  for (const doc of page.documents) {
    const status = el("span", { class: `status ${doc.status}` }, doc.status);
    const detail = doc.error ? el("div", { class: "reason" }, doc.error) : "";
    const actions = el(
      "td",
      {},
      el("button", { type: "button", onclick: () => run(() => showChunks(doc)) }, "Chunks"),
      el("button", { type: "button", onclick: () => run(() => act(`/v1/documents/${doc.id}/reindex`, "POST")) }, "Re-index"),
      el("button", { type: "button", onclick: () => run(() => act(`/v1/documents/${doc.id}/summarize`, "POST")) }, "Summarize"),
      el("button", { type: "button", onclick: () => run(() => act(`/v1/documents/${doc.id}`, "DELETE")) }, "Delete"),
    );
    rows.append(el("tr", {}, el("td", {}, doc.title), el("td", {}, doc.collection), el("td", {}, status, detail), el("td", {}, doc.chunk_count), actions));
  }
  $("#no-documents").hidden = page.documents.length > 0;
  // Poll while something is still on its way.
  clearTimeout(state.refresh);
  if (page.documents.some((d) => d.status === "queued" || d.status === "processing")) {
    state.refresh = setTimeout(() => run(loadDocuments), 1500);
  }
}

async function act(path, method) {
  await api(path, { method });
  await loadDocuments();
}

async function showChunks(doc) {
  const page = await api(`/v1/documents/${doc.id}/chunks?limit=100`);
  const list = $("#chunks ol");
  list.replaceChildren(
    ...page.chunks.map((c) =>
      el("li", {}, el("p", { class: "source" }, c.heading_path.join(" › ") || doc.title, ` · ${c.token_count} tokens`), el("p", {}, c.content)),
    ),
  );
  $("#chunks-title").textContent = `Chunks of ${doc.title}`;
  $("#chunks").hidden = false;
}

async function upload(files) {
  if (!files.length) throw new Error("choose or drop at least one file");
  const form = new FormData();
  for (const file of files) form.append("file", file);
  const collection = $("#collection").value.trim();
  if (collection) form.append("collection", collection);
  const metadata = $("#metadata").value.trim();
  if (metadata) form.append("metadata", metadata);
  await api("/v1/documents", { method: "POST", body: form });
  $("#files").value = "";
  await loadDocuments();
}

// Playground ---------------------------------------------------------------

async function ask(message) {
  const collection = $("#chat-collection").value.trim();
  const body = { message, conversation_id: state.conversationId, collection: collection || undefined };
  $("#transcript").append(el("p", { class: "user" }, message));
  const reply = await api("/v1/chat", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  state.conversationId = reply.conversation_id;
  for (const citation of reply.citations) state.citations.set(`${reply.message_id}:${citation.number}`, citation);
  $("#transcript").append(el("div", { class: "assistant" }, ...withCitationLinks(reply)));
}

/// The answer with each `[n]` marker as a link that opens the cited passage.
function withCitationLinks(reply) {
  const parts = [];
  let last = 0;
  for (const match of reply.answer.matchAll(/\[(\d+)\]/g)) {
    const citation = state.citations.get(`${reply.message_id}:${match[1]}`);
    if (!citation) continue;
    parts.push(reply.answer.slice(last, match.index));
    parts.push(el("a", { href: `#citation-${citation.chunk_id}`, class: "citation", onclick: (e) => { e.preventDefault(); openPassage(citation); } }, `[${citation.number}]`));
    last = match.index + match[0].length;
  }
  parts.push(reply.answer.slice(last));
  return parts;
}

function openPassage(citation) {
  $("#passage .source").textContent = [citation.title, ...citation.heading_path].join(" › ");
  $("#passage blockquote").textContent = citation.snippet;
  $("#passage").hidden = false;
}

// Usage ----------------------------------------------------------------------

const money = (v) => (v == null ? "-" : `$${Number(v).toFixed(4)}`);
const ms = (v) => (v == null ? "-" : Math.round(v));

async function loadUsage() {
  const [usage, budget, signals] = await Promise.all([api("/v1/usage"), api("/v1/budget"), api("/v1/ops/signals")]);
  const c = usage.conversations;
  $("#usage-summary").replaceChildren(
    el("p", {}, `${c.count} conversations; cost per conversation: mean ${money(c.mean_cost_usd)}, p50 ${money(c.p50_cost_usd)}, `, el("strong", {}, `p95 ${money(c.p95_cost_usd)}`), `, max ${money(c.max_cost_usd)}`),
  );
  $("#usage-table tbody").replaceChildren(
    ...usage.groups.map((g) =>
      el("tr", {}, el("td", {}, g.key), el("td", {}, g.calls), el("td", {}, g.input_tokens), el("td", {}, g.output_tokens), el("td", {}, money(g.cost_usd)), el("td", {}, ms(g.latency_p50_ms)), el("td", {}, ms(g.latency_p95_ms))),
    ),
  );
  const limit = budget.limits.usd_per_day == null ? "no daily limit" : `of ${money(budget.limits.usd_per_day)} a day`;
  $("#budget").replaceChildren(el("p", {}, `Today: ${money(budget.day.spent_usd)} spent, ${money(budget.day.reserved_usd)} reserved, ${limit}; resets ${budget.day.resets_at}.`));
  $("#signals").replaceChildren(
    ...[["Cold start", signals.cold_start], ["Retrieval", signals.retrieval], ["Embedding", signals.embedding]].map(([name, s]) =>
      el("li", {}, el("strong", { class: `verdict ${s.verdict}` }, `${name}: ${s.verdict}`), ` — ${s.reason}`),
    ),
  );
}

// Wiring ---------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => signIn($("#api-key").value.trim()));
  });
  $("#sign-out").addEventListener("click", signOut);
  for (const button of document.querySelectorAll("#nav button")) button.addEventListener("click", () => show(button.dataset.view));
  $("#upload-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => upload($("#files").files));
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    run(() => upload(e.dataTransfer.files));
  });
  $("#chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const message = $("#message").value.trim();
    $("#message").value = "";
    run(() => ask(message));
  });
  $("#new-conversation").addEventListener("click", () => {
    state.conversationId = null;
    $("#transcript").replaceChildren();
    $("#passage").hidden = true;
  });
  const key = sessionStorage.getItem(KEY);
  if (key) run(() => signIn(key));
});

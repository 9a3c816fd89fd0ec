// Documents: upload (chosen or dropped files, a collection, metadata), a list
// that refreshes while anything is indexing, and a document's chunks.

import { api } from "./api.js";
import { $, el, count, run, when } from "./dom.js";

let refresh = null;

/// The tenant's collections, for the pickers here and in the playground.
export async function loadCollections() {
  const { collections } = await api("/v1/collections");
  const names = collections.map((c) => c.name);
  $("#collection-names").replaceChildren(...names.map((name) => el("option", { value: name })));
  for (const select of [$("#list-collection"), $("#scope-collection")]) {
    const chosen = select.value;
    select.replaceChildren(
      el("option", { value: "" }, "All collections"),
      ...collections.map((c) => el("option", { value: c.name }, `${c.name} (${c.indexed} of ${c.documents} indexed)`)),
    );
    if (names.includes(chosen)) select.value = chosen;
  }
  return collections;
}

export async function loadDocuments() {
  clearTimeout(refresh);
  const query = new URLSearchParams({ limit: "100" });
  if ($("#list-status").value) query.set("status", $("#list-status").value);
  if ($("#list-collection").value) query.set("collection", $("#list-collection").value);
  const page = await api(`/v1/documents?${query}`);
  $("#document-table tbody").replaceChildren(...page.documents.map(documentRow));
  $("#no-documents").hidden = page.documents.length > 0;
  $("#more-documents").hidden = !page.next_cursor;
  // Poll while something is on its way (paused documents wait for their budget, not for us).
  if (page.documents.some((d) => d.status === "processing" || (d.status === "queued" && !d.paused_until))) {
    refresh = setTimeout(() => run(loadDocuments), 1500);
  }
}

export function stopRefreshing() {
  clearTimeout(refresh);
}

function documentRow(doc) {
  const button = (label, action) =>
    el("button", { type: "button", "aria-label": `${label} ${doc.title}`, onclick: () => run(action) }, label);
  const reason = doc.error ? el("div", { class: "reason" }, doc.error) : null;
  const paused = doc.paused_until ? el("div", { class: "reason" }, `paused until ${when(doc.paused_until)}`) : null;
  const aggregate = doc.aggregate ? el("div", { class: "reason" }, aggregateNote(doc)) : null;
  return el(
    "tr",
    { "data-id": doc.id },
    el("td", {}, el("a", { href: `#document-${doc.id}`, onclick: (e) => { e.preventDefault(); run(() => showDocument(doc.id)); } }, doc.title)),
    el("td", {}, doc.collection),
    el("td", {}, el("span", { class: `status ${doc.status}` }, doc.status), reason, paused, aggregate),
    el("td", { class: "number" }, count(doc.chunk_count)),
    el("td", { class: "number" }, count(doc.token_count)),
    el(
      "td",
      { class: "actions" },
      button("Re-index", () => act(`/v1/documents/${doc.id}/reindex`, "POST")),
      button("Summarize", () => act(`/v1/documents/${doc.id}/summarize`, "POST", "summary queued: it appears in the document's view")),
      button("Delete", async () => {
        if (!confirm(`Delete "${doc.title}" with its chunks and embeddings?`)) return;
        await act(`/v1/documents/${doc.id}`, "DELETE");
        if ($("#document-view").dataset.id === doc.id) $("#document-view").hidden = true;
      }),
    ),
  );
}

// Why search ranks a document below the pages it repeats, and by how much it does.
function aggregateNote(doc) {
  return `aggregate: ${Math.round(doc.aggregate_share * 100)}% of its text is in smaller documents; search cites those`;
}

async function act(path, method, done) {
  await api(path, { method });
  if (done) $("#upload-status").textContent = done;
  await Promise.all([loadDocuments(), loadCollections()]);
}

/// A document: its status, metadata and summary, and its chunks with heading paths.
/// (`chunkId`: scroll to that chunk and mark it, as when a citation is followed.)
export async function showDocument(id, chunkId) {
  const [doc, page] = await Promise.all([api(`/v1/documents/${id}`), api(`/v1/documents/${id}/chunks?limit=${CHUNK_PAGE}`)]);
  const view = $("#document-view");
  view.dataset.id = id;
  $("#document-title").textContent = doc.title;
  $("#document-facts").replaceChildren(
    ...[
      ["Status", doc.status],
      ["Collection", doc.collection],
      ["Type", doc.content_type],
      ["Chunks", count(doc.chunk_count)],
      ["Tokens", count(doc.token_count)],
      ["Embedding model", doc.embedding_model || "–"],
      ["Indexed", when(doc.indexed_at)],
      ["Aggregate", doc.aggregate ? aggregateNote(doc) : doc.aggregate_share == null ? "–" : `no (${Math.round(doc.aggregate_share * 100)}% of its text is in smaller documents)`],
      ["Original", doc.original_missing_since ? `missing from the bucket since ${when(doc.original_missing_since)}` : "stored"],
      ["Metadata", JSON.stringify(doc.metadata)],
    ].flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]),
  );
  $("#document-summary").replaceChildren(doc.summary ? el("p", {}, doc.summary) : el("p", { class: "hint" }, "No summary yet."));
  $("#document-chunks").replaceChildren();
  appendChunks(doc, page.chunks);
  view.hidden = false;
  const cited = chunkId && document.getElementById(`chunk-${chunkId}`);
  if (cited) cited.classList.add("cited");
  (cited || view).scrollIntoView({ block: "start" });
}

const CHUNK_PAGE = 200;

function appendChunks(doc, chunks) {
  $("#document-chunks").append(
    ...chunks.map((c) =>
      el(
        "li",
        { id: `chunk-${c.id}`, "data-ordinal": c.ordinal },
        el("p", { class: "source" }, (c.heading_path.length ? c.heading_path.join(" › ") : doc.title) + ` · ${c.token_count} tokens`),
        el("p", { class: "content" }, c.content),
      ),
    ),
  );
  const more = $("#more-chunks");
  more.hidden = chunks.length < CHUNK_PAGE;
  more.onclick = () =>
    run(async () => {
      const after = chunks[chunks.length - 1].ordinal;
      const next = await api(`/v1/documents/${doc.id}/chunks?after=${after}&limit=${CHUNK_PAGE}`);
      appendChunks(doc, next.chunks);
    });
}

/// Files go one per request, a few at a time: each is held to the server's body
/// limit alone, and one refused file (an image, an empty file) does not stop the rest.
const UPLOADS_AT_ONCE = 3;

async function upload(chosen) {
  const files = [...chosen];
  if (!files.length) throw new Error("choose or drop at least one file");
  const collection = $("#collection").value.trim();
  const metadata = $("#metadata").value.trim();
  if (metadata) {
    let parsed;
    try {
      parsed = JSON.parse(metadata);
    } catch {
      // Checked here so that no file is sent with metadata the API would refuse.
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new Error('metadata must be a JSON object, e.g. {"team": "docs"}');
    }
  }
  const status = $("#upload-status");
  const refused = $("#upload-refused");
  refused.replaceChildren();
  let sent = 0;
  let uploaded = 0;
  let duplicates = 0;
  const progress = () => (status.textContent = `uploading: ${sent} of ${files.length} sent…`);
  progress();
  const queue = [...files];
  const worker = async () => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      const form = new FormData();
      form.append("file", file);
      if (collection) form.append("collection", collection);
      if (metadata) form.append("metadata", metadata);
      try {
        const { documents } = await api("/v1/documents", { method: "POST", body: form });
        uploaded += documents.length;
        duplicates += documents.filter((d) => d.duplicate).length;
      } catch (error) {
        // The API's reason usually names the file already.
        refused.append(el("li", {}, error.message.startsWith(file.name) ? error.message : `${file.name}: ${error.message}`));
      }
      sent += 1;
      progress();
    }
  };
  await Promise.all(Array.from({ length: Math.min(UPLOADS_AT_ONCE, files.length) }, worker));
  const failures = files.length - uploaded;
  status.textContent =
    `${uploaded} of ${files.length} uploaded` +
    (duplicates ? `, ${duplicates} already there (same content)` : "") +
    (failures ? `; ${failures} refused (below)` : "") +
    (uploaded ? "; indexing shows in the list." : ".");
  $("#files").value = "";
  await Promise.all([loadDocuments(), loadCollections()]);
}

export function wireDocuments() {
  $("#upload-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => upload($("#files").files));
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    run(() => upload(e.dataTransfer.files));
  });
  // The drop zone is focusable: Enter or Space opens the file chooser.
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      $("#files").click();
    }
  });
  for (const select of [$("#list-status"), $("#list-collection")]) select.addEventListener("change", () => run(loadDocuments));
  $("#close-document").addEventListener("click", () => ($("#document-view").hidden = true));
}

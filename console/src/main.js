// The stolid console: sign-in and the three views. Plain DOM and fetch; every
// call goes through the public /v1 API with the key signed in with.

import { api, key } from "./api.js";
import { loadCollections, loadDocuments, showDocument, stopRefreshing, wireDocuments } from "./documents.js";
import { $, $$, run } from "./dom.js";
import { loadConversations, wirePlayground } from "./playground.js";
import { loadUsage, wireUsage } from "./usage.js";

const VIEWS = {
  documents: () => Promise.all([loadCollections(), loadDocuments()]),
  playground: () => Promise.all([loadCollections(), loadConversations()]),
  usage: loadUsage,
};

async function signIn(value) {
  key.set(value);
  try {
    const me = await api("/v1/me");
    $("#who").textContent = `tenant ${me.tenant} · ${me.provider} provider`;
  } catch (error) {
    key.clear();
    throw error;
  }
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  await show(location.hash.slice(1) in VIEWS ? location.hash.slice(1) : "documents");
}

function signOut() {
  key.clear();
  location.hash = "";
  location.reload();
}

async function show(view) {
  for (const section of $$(".view")) section.hidden = section.id !== view;
  for (const button of $$("#nav button")) button.setAttribute("aria-current", button.dataset.view === view ? "page" : "false");
  if (view !== "documents") stopRefreshing();
  history.replaceState(null, "", `#${view}`);
  await VIEWS[view]();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => signIn($("#api-key").value.trim()));
  });
  $("#sign-out").addEventListener("click", signOut);
  for (const button of $$("#nav button")) button.addEventListener("click", () => run(() => show(button.dataset.view)));
  wireDocuments();
  wirePlayground();
  wireUsage();
  // A cited passage opens in its document (the playground does not know the views).
  document.addEventListener("open-document", (e) =>
    run(async () => {
      await show("documents");
      await showDocument(e.detail.id, e.detail.chunkId);
    }),
  );
  if (key.get()) run(() => signIn(key.get()));
});

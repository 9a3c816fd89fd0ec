// The playground: chat (streamed, with citations that open their passage) or
// the agent (its tool calls shown as they happen), suggestions as you type,
// a collection and metadata-filter scope, and the conversations list.

import { api, apiStream } from "./api.js";
import { $, debounce, el, money, run, when } from "./dom.js";

const state = { conversationId: null, suggesting: null, asking: null };

/// The collection and filter every call of the playground is scoped to.
function scope() {
  const collection = $("#scope-collection").value || undefined;
  const raw = $("#scope-filter").value.trim();
  if (!raw) return { collection };
  let filter;
  try {
    filter = JSON.parse(raw);
  } catch {
    throw new Error('the filter must be a JSON object of metadata, e.g. {"lang": "en"}');
  }
  if (typeof filter !== "object" || filter === null || Array.isArray(filter)) {
    throw new Error('the filter must be a JSON object of metadata, e.g. {"lang": "en"}');
  }
  return { collection, filter };
}

// Answers ------------------------------------------------------------------

/// The answer's text with each `[n]` that has a citation as a link opening the passage.
function answerWithCitations(answer, citations) {
  const byNumber = new Map(citations.map((c) => [String(c.number), c]));
  const parts = [];
  let last = 0;
  for (const match of answer.matchAll(/\[(\d+)\]/g)) {
    const citation = byNumber.get(match[1]);
    if (!citation) continue;
    parts.push(answer.slice(last, match.index));
    parts.push(
      el(
        "a",
        {
          href: `#chunk-${citation.chunk_id}`,
          class: "citation",
          title: citation.title,
          "aria-label": `source ${citation.number}: ${citation.title}`,
          onclick: (e) => {
            e.preventDefault();
            openPassage(citation);
          },
        },
        `[${citation.number}]`,
      ),
    );
    last = match.index + match[0].length;
  }
  parts.push(answer.slice(last));
  return parts;
}

function sources(citations) {
  if (!citations.length) return null;
  return el(
    "ol",
    { class: "sources", "aria-label": "Sources" },
    citations.map((c) =>
      el(
        "li",
        { value: c.number },
        el("a", { href: `#chunk-${c.chunk_id}`, onclick: (e) => { e.preventDefault(); openPassage(c); } }, [c.title, ...c.heading_path].join(" › ")),
      ),
    ),
  );
}

function openPassage(citation) {
  const passage = $("#passage");
  passage.dataset.chunkId = citation.chunk_id;
  $("#passage-source").textContent = `[${citation.number}] ` + [citation.title, ...citation.heading_path].join(" › ");
  $("#passage-text").textContent = citation.snippet;
  $("#passage-open").onclick = () => document.dispatchEvent(new CustomEvent("open-document", { detail: { id: citation.document_id, chunkId: citation.chunk_id } }));
  passage.hidden = false;
  passage.focus();
}

function usageLine(usage, extra) {
  if (!usage) return null;
  const tokens = `${usage.input_tokens} in, ${usage.output_tokens} out`;
  return el("p", { class: "meta" }, [tokens, usage.cost_usd != null ? money(usage.cost_usd) : null, extra].filter(Boolean).join(" · "));
}

function userTurn(text) {
  $("#transcript").append(el("div", { class: "turn user" }, el("p", {}, text)));
}

/// An assistant turn being written: text as it streams, then the final answer.
function assistantTurn() {
  const text = el("p", { class: "answer streaming" });
  const turn = el("div", { class: "turn assistant", "aria-busy": "true" }, text);
  $("#transcript").append(turn);
  return {
    turn,
    append(delta) {
      text.append(delta);
      turn.scrollIntoView({ block: "end" });
    },
    finish(answer, citations, ...after) {
      text.classList.remove("streaming");
      text.replaceChildren(...answerWithCitations(answer, citations));
      turn.append(...[sources(citations), ...after].filter(Boolean));
      turn.removeAttribute("aria-busy");
    },
    fail() {
      turn.removeAttribute("aria-busy");
      turn.classList.add("failed");
    },
  };
}

async function ask(message) {
  const mode = $("input[name=mode]:checked").value;
  const body = { message, conversation_id: state.conversationId || undefined, ...scope() };
  state.asking?.abort();
  state.asking = new AbortController();
  userTurn(message);
  const reply = assistantTurn();
  try {
    if (mode === "agent") await askAgent(body, reply, state.asking.signal);
    else await askChat(body, reply, state.asking.signal);
  } catch (error) {
    reply.fail();
    throw error;
  } finally {
    state.asking = null;
  }
  await loadConversations();
}

async function askChat(body, reply, signal) {
  await apiStream(
    "/v1/chat",
    body,
    (event, data) => {
      if (event === "delta") reply.append(data.text);
      if (event === "done") {
        state.conversationId = data.conversation_id || state.conversationId;
        reply.finish(data.answer, data.citations, usageLine(data.usage, data.model));
      }
    },
    signal,
  );
}

async function askAgent(body, reply, signal) {
  const trace = el("ol", { class: "trace", "aria-label": "Agent trace" });
  reply.turn.prepend(el("details", { open: true }, el("summary", {}, "Tool calls"), trace));
  await apiStream(
    "/v1/agent",
    body,
    (event, data) => {
      if (event === "step") {
        trace.append(
          el("li", {}, el("code", {}, `${data.tool}(${JSON.stringify(data.arguments)})`), el("span", { class: "result" }, ` → ${data.result}`)),
        );
      }
      if (event === "done") {
        state.conversationId = data.conversation_id;
        const stop = data.stop_reason === "answered" ? `${data.steps} model calls` : `stopped after ${data.steps} model calls (max steps)`;
        reply.finish(data.answer, data.citations, usageLine(data.usage, stop));
      }
    },
    signal,
  );
}

// Suggestions ----------------------------------------------------------------

async function suggest(text) {
  state.suggesting?.abort();
  const box = $("#suggestions");
  if (text.trim().length < 3) {
    box.replaceChildren();
    return;
  }
  state.suggesting = new AbortController();
  const reply = await api("/v1/suggest", {
    json: { text, n: 3, conversation_id: state.conversationId || undefined, ...scope() },
    signal: state.suggesting.signal,
  });
  box.replaceChildren(
    ...reply.suggestions.map((s) =>
      el(
        "button",
        {
          type: "button",
          class: "suggestion",
          title: `from ${s.title}`,
          onclick: () => {
            $("#message").value = s.text;
            box.replaceChildren();
            $("#message").focus();
          },
        },
        s.text,
      ),
    ),
  );
}

// Conversations ----------------------------------------------------------------

export async function loadConversations() {
  const { conversations } = await api("/v1/conversations?limit=50");
  $("#conversation-list").replaceChildren(
    ...conversations.map((c) =>
      el(
        "li",
        { class: c.id === state.conversationId ? "current" : null },
        el("a", { href: `#conversation-${c.id}`, "aria-current": c.id === state.conversationId ? "true" : null, onclick: (e) => { e.preventDefault(); run(() => openConversation(c.id)); } }, c.title || "(untitled)"),
        el("span", { class: "meta" }, when(c.updated_at)),
      ),
    ),
  );
  $("#no-conversations").hidden = conversations.length > 0;
}

async function openConversation(id) {
  const conversation = await api(`/v1/conversations/${id}`);
  state.conversationId = id;
  $("#transcript").replaceChildren();
  $("#passage").hidden = true;
  for (const message of conversation.messages) {
    if (message.role === "user") userTurn(message.content);
    else {
      const cost = { input_tokens: message.input_tokens, output_tokens: message.output_tokens, cost_usd: message.cost_usd };
      assistantTurn().finish(message.content, message.citations || [], usageLine(cost));
    }
  }
  $("#conversation-title").textContent = conversation.title || "(untitled)";
  $("#delete-conversation").hidden = false;
  await loadConversations();
}

function newConversation() {
  state.asking?.abort();
  state.conversationId = null;
  $("#transcript").replaceChildren();
  $("#passage").hidden = true;
  $("#conversation-title").textContent = "New conversation";
  $("#delete-conversation").hidden = true;
  run(loadConversations);
}

export function wirePlayground() {
  $("#chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const message = $("#message").value.trim();
    if (!message) return;
    $("#message").value = "";
    $("#suggestions").replaceChildren();
    state.suggesting?.abort();
    run(() => ask(message));
  });
  // Enter sends; Shift+Enter is a new line.
  $("#message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("#chat-form").requestSubmit();
    }
  });
  const later = debounce((text) => run(() => suggest(text)), 400);
  $("#message").addEventListener("input", (e) => later(e.target.value));
  $("#new-conversation").addEventListener("click", newConversation);
  $("#delete-conversation").addEventListener("click", () =>
    run(async () => {
      if (!state.conversationId || !confirm("Delete this conversation and its messages?")) return;
      await api(`/v1/conversations/${state.conversationId}`, { method: "DELETE" });
      newConversation();
    }),
  );
  $("#close-passage").addEventListener("click", () => ($("#passage").hidden = true));
}

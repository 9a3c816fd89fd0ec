//! Retrieval-augmented chat: retrieve, build a prompt within budget, ask the
//! model through the gateway, cite, and persist the turn in its conversation.

pub mod prompt;
pub mod stream;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::error::{DomainError, Result};
use crate::domain::retrieval::{self, Mode};
use crate::domain::signals::Stopwatch;
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::llm::{ChatRequest, Role, TokenUsage};
use crate::store::conversations::{self, NewMessage, Thread};
use crate::store::search::Scope;
use prompt::{Budget, Citation, Prompt, Turn};

/// What the user sees when retrieval finds nothing relevant: no model call, no invention.
pub const NOT_FOUND: &str = "I could not find anything about this in your documents.";

pub struct ChatInput {
    pub message: String,
    pub conversation_id: Option<Uuid>,
    pub scope: Scope,
    /// A stateless turn (the OpenAI-compatible facade): the client sends the
    /// history, and nothing is stored.
    pub history: Option<Vec<Turn>>,
    /// Rewrite a follow-up into a standalone query before retrieval (one small
    /// model call, only when there is history).
    pub rewrite_query: bool,
    /// Let the chat model reorder the retrieved passages (see `retrieval::rerank`).
    pub rerank: bool,
}

/// Everything decided before the model is called.
pub struct Prepared {
    /// Where the turn is stored: the same conversation, or one it starts;
    /// `None` for a stateless turn.
    pub thread: Option<Thread>,
    /// For every model call of the turn; its meter adds up what the turn cost.
    pub ctx: crate::llm::CallContext,
    pub prompt: Prompt,
    pub request: ChatRequest,
    /// The turn's time so far; recorded by [`finish`].
    pub stopwatch: Stopwatch,
}

impl Prepared {
    pub fn conversation_id(&self) -> Option<Uuid> {
        self.thread.as_ref().map(Thread::id)
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatReply {
    pub conversation_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    pub answer: String,
    /// Sources cited in the answer, numbered as in its `[n]` markers.
    pub citations: Vec<Citation>,
    pub usage: TokenUsage,
    pub model: String,
    /// `openai` or `local`.
    pub provider: &'static str,
}

/// Loads or starts the conversation, retrieves, and builds the prompt.
pub async fn prepare(state: &AppState, tenant: &Tenant, input: &ChatInput) -> Result<Prepared> {
    if input.message.trim().is_empty() {
        return Err(DomainError::invalid("message is empty"));
    }
    let (thread, history) = match (&input.history, input.conversation_id) {
        (Some(history), _) => (None, history.clone()),
        (None, Some(id)) => {
            let id =
                conversations::get(&state.db, tenant.id, id).await?.ok_or(DomainError::NotFound("conversation"))?.id;
            let history = conversations::messages(&state.db, tenant.id, id)
                .await?
                .into_iter()
                .map(|m| Turn {
                    role: if m.role == "assistant" { Role::Assistant } else { Role::User },
                    content: m.content,
                })
                .collect();
            (Some(Thread::Existing(id)), history)
        }
        (None, None) => (Some(Thread::start(&input.message)), Vec::new()),
    };
    let mut stopwatch = Stopwatch::start(!history.iter().any(|t| t.role == Role::User));
    let conversation_id = thread.as_ref().map(Thread::id);
    let chat = &state.config.chat;
    let ctx = tenant.call_context("chat", conversation_id).metered();
    let rewrite = input.rewrite_query && state.gateway.has_language_model();
    let standalone = if rewrite && history.iter().any(|t| t.role == Role::User) {
        let rewriting = std::time::Instant::now();
        let query = standalone_query(state, &ctx, &history, &input.message).await;
        stopwatch.model(rewriting.elapsed());
        query
    } else {
        input.message.clone()
    };
    let query = retrieval::Query {
        text: &standalone,
        k: chat.top_k,
        mode: Mode::Hybrid,
        scope: input.scope.clone(),
        min_similarity: Some(chat.min_similarity),
        rerank: input.rerank,
        demote_aggregates: true,
    };
    let retrieved = retrieval::search(state, &ctx, query).await?;
    stopwatch.retrieved(retrieved.timings);
    let hits = retrieved.hits;
    let budget = Budget { context_tokens: chat.context_tokens, history_tokens: chat.history_tokens };
    let prompt = prompt::build(&hits, &history, &input.message, budget);
    let request = ChatRequest {
        messages: prompt.messages.clone(),
        max_tokens: Some(chat.max_answer_tokens),
        temperature: Some(0.2),
        ..Default::default()
    };
    Ok(Prepared { thread, ctx, prompt, request, stopwatch })
}

/// The follow-up rewritten by the chat model into a query that stands alone.
/// A failed or empty rewrite falls back to the message itself: the turn is
/// answered either way, with retrieval only as good as the raw question.
async fn standalone_query(state: &AppState, ctx: &crate::llm::CallContext, history: &[Turn], message: &str) -> String {
    match state.gateway.chat(ctx, &prompt::rewrite_request(history, message)).await {
        Ok(response) => {
            // The first line that says something: a model may open with a blank line.
            let rewritten = response.content.lines().map(|l| l.trim().trim_matches('"').trim()).find(|l| !l.is_empty());
            match rewritten {
                Some(query) => {
                    tracing::debug!(query.rewritten = %query, "follow-up rewritten for retrieval");
                    query.to_string()
                }
                None => message.to_string(),
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "query rewrite failed; retrieving with the message as asked");
            message.to_string()
        }
    }
}

/// Answers one message (non-streaming).
pub async fn respond(state: &AppState, tenant: &Tenant, input: ChatInput) -> Result<ChatReply> {
    let mut prepared = prepare(state, tenant, &input).await?;
    if prepared.prompt.passages.is_empty() {
        let model = state.gateway.chat_model().to_string();
        return finish(state, tenant, &input.message, prepared, NOT_FOUND.to_string(), model).await;
    }
    let response = state.gateway.chat(&prepared.ctx, &prepared.request).await?;
    prepared.stopwatch.model(response.latency);
    finish(state, tenant, &input.message, prepared, response.content, response.model).await
}

/// Cites and stores the turn (question and answer) in one transaction, with
/// what all of its model calls cost (once the answer's call is recorded).
pub async fn finish(
    state: &AppState,
    tenant: &Tenant,
    question: &str,
    prepared: Prepared,
    answer: String,
    model: String,
) -> Result<ChatReply> {
    let usage = prepared.ctx.metered_usage();
    let citations = prompt::citations(&answer, &prepared.prompt.passages);
    let reply = |message_id| ChatReply {
        conversation_id: prepared.conversation_id(),
        message_id,
        answer: answer.clone(),
        citations: citations.clone(),
        usage: usage.clone(),
        model: model.clone(),
        provider: state.gateway.provider_name(),
    };
    let Some(thread) = &prepared.thread else {
        prepared.stopwatch.record(state, tenant, "chat", None);
        return Ok(reply(None));
    };
    let assistant = answer_message(&answer, &citations, &usage);
    let message_id = conversations::add_turn(&state.db, tenant.id, thread, question, assistant).await?;
    prepared.stopwatch.record(state, tenant, "chat", Some(thread.id()));
    Ok(reply(Some(message_id)))
}

/// An assistant message as stored: the answer with its citations and what it cost.
pub fn answer_message<'a>(answer: &'a str, citations: &[Citation], usage: &TokenUsage) -> NewMessage<'a> {
    NewMessage {
        role: "assistant",
        content: answer,
        citations: serde_json::to_value(citations).expect("citations serialize"),
        input_tokens: usage.input_tokens as i32,
        output_tokens: usage.output_tokens as i32,
        cost_usd: usage.cost_usd,
    }
}

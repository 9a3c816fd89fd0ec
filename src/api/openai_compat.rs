//! `POST /v1/chat/completions`: stolid as a retrieval-augmented "model" in the
//! OpenAI Chat Completions format, so existing clients (official SDKs,
//! LangChain, chat UIs) work unchanged. The `model` picks a collection (`stolid`
//! or `default`: all documents); the last user message is the question and the
//! earlier turns are history; nothing is stored. Citations ride along in an
//! extra `citations` field that ordinary clients ignore.

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::{AppJson, Error, Result};
use crate::domain::chat::prompt::Turn;
use crate::domain::chat::stream::TurnEvent;
use crate::domain::chat::{self, ChatInput, ChatReply};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::llm::Role;
use crate::store::search::Scope;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat_completions))
}

/// The subset of the Chat Completions request stolid uses; other fields are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// `stolid` or `default` for all documents; any other name selects that collection.
    model: String,
    #[schema(value_type = Vec<Object>)]
    messages: Vec<Value>,
    #[serde(default)]
    stream: bool,
}

fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

/// Chat Completions, answered from the tenant's documents with citations.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", security(("api_key" = [])), request_body = ChatCompletionRequest,
    responses((status = 200, description = "an OpenAI `chat.completion` (or `chat.completion.chunk` events) with an extra `citations` field")))]
pub async fn chat_completions(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(request): AppJson<ChatCompletionRequest>,
) -> Result<Response> {
    let last_user = request
        .messages
        .iter()
        .rposition(|m| m["role"] == "user")
        .ok_or_else(|| Error::invalid("messages need a user message"))?;
    let question = text_of(&request.messages[last_user]);
    let history = request.messages[..last_user]
        .iter()
        .filter_map(|m| match m["role"].as_str() {
            Some("user") => Some(Turn { role: Role::User, content: text_of(m) }),
            Some("assistant") => Some(Turn { role: Role::Assistant, content: text_of(m) }),
            _ => None, // the system prompt is stolid's own
        })
        .collect();
    let collection = match request.model.as_str() {
        "stolid" | "default" | "" => None,
        name => Some(name.to_string()),
    };
    let scope = Scope { tenant_id: tenant.id, collection, metadata_any: vec![] };
    let input = ChatInput {
        message: question,
        conversation_id: None,
        scope,
        history: Some(history),
        rewrite_query: true,
        rerank: true,
    };
    let id = format!("chatcmpl-{}", Uuid::now_v7().simple());
    let created = chrono::Utc::now().timestamp();
    let model = request.model;
    if !request.stream {
        let reply = chat::respond(&state, &tenant, input).await?;
        return Ok(AppJson(completion(&id, created, &model, &reply)).into_response());
    }
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let events = chat::stream::respond(state, tenant, input).await?.map(move |event| match event {
        TurnEvent::Delta(text) => chunk(json!({"content": text}), None),
        TurnEvent::Done(reply) => {
            let mut last = chunk(json!({}), Some("stop"));
            last["usage"] = usage(&reply);
            last["citations"] = json!(reply.citations);
            last
        }
        TurnEvent::Error(err) => {
            // OpenAI's stream error shape: `type` beside `code` and `message`.
            let mut body = Error::from(err).event_body();
            body["error"]["type"] = body["error"]["code"].clone();
            body
        }
    });
    let sse = futures::stream::once(async move { first })
        .chain(events)
        .map(|value| Event::default().data(value.to_string()))
        .chain(futures::stream::once(async { Event::default().data("[DONE]") }))
        .map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}

fn usage(reply: &ChatReply) -> Value {
    let (input, output) = (reply.usage.input_tokens, reply.usage.output_tokens);
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

fn completion(id: &str, created: i64, model: &str, reply: &ChatReply) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.answer}, "finish_reason": "stop"}],
        "usage": usage(reply),
        "citations": reply.citations,
    })
}

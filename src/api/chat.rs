//! `POST /v1/chat` (JSON or Server-Sent Events) and the conversations it keeps.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::{AppJson, Error, Result};
use crate::api::views::{self, Conversation, Message};
use crate::domain::chat::stream::TurnEvent;
use crate::domain::chat::{self, ChatInput, ChatReply};
use crate::domain::retrieval;
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::store::conversations;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat", post(chat))
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/conversations/{id}", get(get_conversation).delete(delete_conversation))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[schema(pattern = r"\S")]
    message: String,
    /// Continue this conversation; a new one starts without it.
    conversation_id: Option<Uuid>,
    collection: Option<String>,
    /// Metadata filter, as in `/v1/search`.
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Value>,
    /// Answer as Server-Sent Events: `delta` events, then one `done` event with citations and usage.
    #[serde(default)]
    stream: bool,
    /// In a conversation, rewrite the message into a standalone search query
    /// first (one small model call, metered), so a follow-up like "and how do I
    /// undo it?" retrieves what "it" is. Default true; no effect on a first message.
    #[serde(default = "yes")]
    rewrite_query: bool,
    /// Let the chat model reorder the retrieved passages before answering (one
    /// short model call, metered as endpoint `rerank`). Default true; has no
    /// effect with the local provider or with `RERANK_CANDIDATES=0`.
    #[serde(default = "yes")]
    rerank: bool,
}

pub(crate) fn yes() -> bool {
    true
}

/// Answers with retrieval-augmented generation and citations.
#[utoipa::path(post, path = "/v1/chat", tag = "chat", security(("api_key" = [])), request_body = ChatRequest,
    responses((status = 200, body = ChatReply, description = "JSON, or text/event-stream when `stream` is true"),
              (status = 404, body = crate::api::error::ErrorBody), (status = 422, body = crate::api::error::ErrorBody)))]
pub async fn chat(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(request): AppJson<ChatRequest>,
) -> Result<Response> {
    let scope = retrieval::scope(tenant.id, request.collection, request.filter.as_ref())?;
    let input = ChatInput {
        message: request.message,
        conversation_id: request.conversation_id,
        scope,
        history: None,
        rewrite_query: request.rewrite_query,
        rerank: request.rerank,
    };
    if !request.stream {
        return Ok(AppJson(chat::respond(&state, &tenant, input).await?).into_response());
    }
    let events = chat::stream::respond(state, tenant, input).await?.map(|event| {
        let (name, data) = match event {
            TurnEvent::Delta(text) => ("delta", serde_json::json!({ "text": text })),
            TurnEvent::Done(reply) => ("done", serde_json::to_value(reply).expect("reply serializes")),
            TurnEvent::Error(err) => ("error", Error::from(err).event_body()),
        };
        Ok::<_, std::convert::Infallible>(Event::default().event(name).data(data.to_string()))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    conversations: Vec<Conversation>,
}

/// The tenant's conversations, most recently active first.
#[utoipa::path(get, path = "/v1/conversations", tag = "chat", security(("api_key" = [])), params(ListParams),
    responses((status = 200, body = ConversationList)))]
pub async fn list_conversations(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<ListParams>,
) -> Result<AppJson<ConversationList>> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 200"));
    }
    Ok(AppJson(ConversationList { conversations: views::all(conversations::list(&state.db, tenant.id, limit).await?) }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    conversation: Conversation,
    /// In order, each with its citations, token usage and cost.
    messages: Vec<Message>,
}

/// One conversation with its messages.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "chat", security(("api_key" = [])),
    responses((status = 200, body = ConversationDetail), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn get_conversation(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<Uuid>,
) -> Result<AppJson<ConversationDetail>> {
    let conversation = conversations::get(&state.db, tenant.id, id)
        .await?
        .map(Conversation::from)
        .ok_or(Error::NotFound("conversation"))?;
    let messages = views::all(conversations::messages(&state.db, tenant.id, id).await?);
    Ok(AppJson(ConversationDetail { conversation, messages }))
}

/// Deletes a conversation and its messages (usage records stay).
#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "chat", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn delete_conversation(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    if !conversations::delete(&state.db, tenant.id, id).await? {
        return Err(Error::NotFound("conversation"));
    }
    Ok(StatusCode::NO_CONTENT)
}

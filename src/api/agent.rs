//! `POST /v1/agent`: the tool-using loop over the tenant's documents.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::api::error::{AppJson, Error, Result};
use crate::domain::agent::{self, AgentInput, AgentReply, TraceStep};
use crate::domain::retrieval;
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/agent", post(run_agent))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    #[schema(pattern = r"\S")]
    message: String,
    conversation_id: Option<Uuid>,
    /// Model calls allowed, 1 to 10 (default 4).
    #[schema(minimum = 1, maximum = 10)]
    max_steps: Option<usize>,
    /// Every tool call stays inside this collection.
    collection: Option<String>,
    /// Every tool call stays inside this metadata filter.
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Value>,
    /// Server-Sent Events: a `step` event per tool call as it happens, then `done` with the whole reply.
    #[serde(default)]
    stream: bool,
    /// Let the chat model reorder the passages each search finds (one short model
    /// call, metered as endpoint `rerank`). Default true; has no effect with the
    /// local provider or with `RERANK_CANDIDATES=0`.
    #[serde(default = "crate::api::chat::yes")]
    rerank: bool,
}

/// Answers with a bounded tool-using loop; returns the answer, citations and the trace of tool calls.
#[utoipa::path(post, path = "/v1/agent", tag = "agent", security(("api_key" = [])), request_body = AgentRequest,
    responses((status = 200, body = AgentReply), (status = 422, body = crate::api::error::ErrorBody)))]
pub async fn run_agent(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(request): AppJson<AgentRequest>,
) -> Result<Response> {
    let max_steps = request.max_steps.unwrap_or(4);
    if !(1..=10).contains(&max_steps) {
        return Err(Error::invalid("max_steps must be between 1 and 10"));
    }
    let scope = retrieval::scope(tenant.id, request.collection, request.filter.as_ref())?;
    if request.stream
        && let Some(id) = request.conversation_id
    {
        // Settle what can be refused before the stream's 200 is sent.
        crate::store::conversations::get(&state.db, tenant.id, id).await?.ok_or(Error::NotFound("conversation"))?;
    }
    let input = AgentInput {
        message: request.message,
        conversation_id: request.conversation_id,
        max_steps,
        scope,
        rerank: request.rerank,
    };
    if !request.stream {
        return Ok(AppJson(agent::run(&state, &tenant, input, None).await?).into_response());
    }
    let (steps_tx, steps_rx) = tokio::sync::mpsc::channel::<TraceStep>(16);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let steps_closed = steps_tx.clone();
    let streams_end = state.streams_end.clone();
    tokio::spawn(async move {
        tokio::select! {
            reply = agent::run(&state, &tenant, input, Some(steps_tx)) => { let _ = done_tx.send(reply); }
            // The client went away: dropping the loop cancels its in-flight model call.
            _ = steps_closed.closed() => tracing::info!("agent stream closed by the client; stopping"),
            // A shutdown: stop the loop the same way, and say so.
            _ = streams_end.cancelled() => {
                let _ = done_tx.send(Err(crate::domain::error::DomainError::shutting_down()));
            }
        }
    });
    let steps = tokio_stream::wrappers::ReceiverStream::new(steps_rx)
        .map(|step| Event::default().event("step").data(serde_json::to_string(&step).expect("step serializes")));
    let done = futures::stream::once(async move {
        match done_rx.await {
            Ok(Ok(reply)) => {
                Event::default().event("done").data(serde_json::to_string(&reply).expect("reply serializes"))
            }
            Ok(Err(err)) => Event::default().event("error").data(Error::from(err).event_body().to_string()),
            Err(_) => {
                Event::default().event("error").data(r#"{"error":{"code":"internal","message":"agent stopped"}}"#)
            }
        }
    });
    let events = steps.chain(done).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

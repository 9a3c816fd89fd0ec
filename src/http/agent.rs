//! `POST /v1/agent`: the tool-using loop over the tenant's documents.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::agent::{self, AgentInput, AgentReply};
use crate::app::AppState;
use crate::error::{AppJson, Error, Result};
use crate::http::auth::Tenant;
use crate::retrieval;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/agent", post(run_agent))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    message: String,
    conversation_id: Option<Uuid>,
    /// Model calls allowed, 1 to 10 (default 4).
    max_steps: Option<usize>,
    /// Every tool call stays inside this collection.
    collection: Option<String>,
    /// Every tool call stays inside this metadata filter.
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Value>,
    /// Streaming is not implemented for the agent yet; `true` is refused.
    #[serde(default)]
    stream: bool,
}

/// Answers with a bounded tool-using loop; returns the answer, citations and the trace of tool calls.
#[utoipa::path(post, path = "/v1/agent", tag = "agent", security(("api_key" = [])), request_body = AgentRequest,
    responses((status = 200, body = AgentReply), (status = 422, body = crate::error::ErrorBody)))]
pub async fn run_agent(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(request): AppJson<AgentRequest>,
) -> Result<AppJson<AgentReply>> {
    if request.stream {
        return Err(Error::Unprocessable {
            code: "stream_unsupported",
            message: "the agent does not stream yet; send stream: false".into(),
        });
    }
    let max_steps = request.max_steps.unwrap_or(4);
    if !(1..=10).contains(&max_steps) {
        return Err(Error::invalid("max_steps must be between 1 and 10"));
    }
    let scope = retrieval::scope(tenant.id, request.collection, request.filter.as_ref())?;
    let input = AgentInput { message: request.message, conversation_id: request.conversation_id, max_steps, scope };
    Ok(AppJson(agent::run(&state, &tenant, input).await?))
}

//! `POST /v1/suggest`: grounded suggestions while a person types or between turns.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::{AppJson, Error, Result};
use crate::domain::retrieval;
use crate::domain::state::AppState;
use crate::domain::suggest::{self, SuggestInput, SuggestReply};
use crate::domain::tenant::Tenant;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/suggest", post(suggest_questions))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuggestRequest {
    /// What the person has typed so far (may be empty between turns).
    #[serde(default)]
    text: String,
    conversation_id: Option<Uuid>,
    /// 1 to 5 (default 3).
    #[schema(minimum = 1, maximum = 5)]
    n: Option<usize>,
    collection: Option<String>,
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Value>,
    /// Let the chat model reorder the retrieved passages first (one short model
    /// call, metered as endpoint `rerank`). Default true; has no effect with the
    /// local provider or with `RERANK_CANDIDATES=0`.
    #[serde(default = "crate::api::chat::yes")]
    rerank: bool,
}

/// Likely follow-up questions that the tenant's documents can answer, each with its source.
#[utoipa::path(post, path = "/v1/suggest", tag = "suggest", security(("api_key" = [])), request_body = SuggestRequest,
    responses((status = 200, body = SuggestReply), (status = 422, body = crate::api::error::ErrorBody)))]
pub async fn suggest_questions(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(request): AppJson<SuggestRequest>,
) -> Result<AppJson<SuggestReply>> {
    let n = request.n.unwrap_or(3);
    if !(1..=5).contains(&n) {
        return Err(Error::invalid("n must be between 1 and 5"));
    }
    let scope = retrieval::scope(tenant.id, request.collection, request.filter.as_ref())?;
    let input =
        SuggestInput { text: request.text, conversation_id: request.conversation_id, n, scope, rerank: request.rerank };
    Ok(AppJson(suggest::suggest(&state, &tenant, input).await?))
}

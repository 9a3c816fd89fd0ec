//! `POST /v1/search`: retrieval over the tenant's indexed chunks.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::{AppJson, Error, Result};
use crate::api::views::{self, Hit};
use crate::domain::retrieval::{self, Mode};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/search", post(search))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[schema(pattern = r"\S")]
    query: String,
    /// Results to return, 1 to 100 (default 10).
    #[schema(minimum = 1, maximum = 100)]
    k: Option<usize>,
    collection: Option<String>,
    /// Metadata filter: `{"key": value}` or `{"key": {"in": [...]}}`, all keys must match.
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Value>,
    /// `hybrid` (default), `vector` or `keyword`.
    #[serde(default)]
    mode: Mode,
    /// Let the chat model reorder the best candidates (one short model call,
    /// metered as endpoint `rerank`). Default false here; chat, suggest and the
    /// agent rerank by default.
    #[serde(default)]
    rerank: bool,
    /// Rank passages of aggregate documents (print pages, concatenated
    /// exports: `aggregate` on the document) below the pages they repeat.
    /// Default true; `AGGREGATE_DEMOTION` sets by how much.
    #[serde(default = "yes")]
    demote_aggregates: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    results: Vec<Hit>,
    /// Whether the results are in the reranker's order (false when not asked,
    /// with the local provider, or when the reranking call failed).
    reranked: bool,
}

/// Finds the chunks that best match the query.
#[utoipa::path(post, path = "/v1/search", tag = "search", security(("api_key" = [])), request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 422, body = crate::api::error::ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(request): AppJson<SearchRequest>,
) -> Result<AppJson<SearchResponse>> {
    let k = request.k.unwrap_or(10);
    if !(1..=100).contains(&k) {
        return Err(Error::invalid("k must be between 1 and 100"));
    }
    if request.query.trim().is_empty() {
        return Err(Error::invalid("query is empty"));
    }
    let scope = retrieval::scope(tenant.id, request.collection, request.filter.as_ref())?;
    let query = retrieval::Query {
        text: &request.query,
        k,
        mode: request.mode,
        scope,
        min_similarity: None,
        rerank: request.rerank,
        demote_aggregates: request.demote_aggregates,
    };
    let retrieved = retrieval::search(&state, &tenant.call_context("search", None), query).await?;
    Ok(AppJson(SearchResponse { results: views::all(retrieved.hits), reranked: retrieved.reranked }))
}

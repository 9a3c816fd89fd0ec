//! `GET /v1/ops/signals`: the three signals for the caller's own traffic and
//! backlog (see [`crate::domain::signals`]); `stolid signals` gives the deployment's.

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::error::{AppJson, Error, Result};
use crate::domain::signals::{self, Signals};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;

/// The longest window asked for: the timings are kept as long as usage is.
const MAX_WINDOW_SECS: u64 = 31 * 24 * 3600;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/ops/signals", get(get_signals))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SignalsParams {
    /// The window, in seconds back from now (default 3600).
    window_secs: Option<u64>,
}

/// Cold start, retrieval's share of response time and embedding throughput,
/// each with a verdict (`ok`, `watch`, `act`) and the rule that decided it.
#[utoipa::path(get, path = "/v1/ops/signals", tag = "ops", security(("api_key" = [])), params(SignalsParams),
    responses((status = 200, body = Signals), (status = 422, body = crate::api::error::ErrorBody)))]
pub async fn get_signals(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<SignalsParams>,
) -> Result<AppJson<Signals>> {
    let window_secs = params.window_secs.unwrap_or(3600);
    if window_secs == 0 || window_secs > MAX_WINDOW_SECS {
        return Err(Error::invalid(format!("window_secs must be between 1 and {MAX_WINDOW_SECS}")));
    }
    // Requests answered a moment ago may still be in the writer's queue.
    state.gateway.recorder().flush().await;
    let window = std::time::Duration::from_secs(window_secs);
    let limits = &state.config.llm.embedding_limits;
    Ok(AppJson(signals::measure(&state.db, limits, Some(tenant.id), window).await?))
}

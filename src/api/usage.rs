//! `GET /v1/usage`: tokens, cost and latency from the model-call records, and
//! the cost-per-conversation distribution ("what is my P95 cost per conversation?").

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{AppJson, Error, Result};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::llm::accounting::usage_rows::{self, ConversationCosts, GroupBy, UsageGroup};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/usage", get(get_usage))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageParams {
    /// Start (inclusive): RFC 3339 or `YYYY-MM-DD` (UTC). Default: 30 days before `to`.
    from: Option<String>,
    /// End (exclusive): RFC 3339 or `YYYY-MM-DD` (UTC). Default: now.
    to: Option<String>,
    /// `model` (default), `endpoint` or `day`.
    group_by: Option<GroupBy>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    groups: Vec<UsageGroup>,
    conversations: ConversationCosts,
}

/// A time parameter; absent or empty (`?from=`) is `None`.
fn parse_time(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    let Some(raw) = raw.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(|d| Some(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()))
        .map_err(|_| Error::invalid(format!("{name} must be RFC 3339 or YYYY-MM-DD")))
}

/// Usage of the tenant in a time window.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", security(("api_key" = [])), params(UsageParams),
    responses((status = 200, body = UsageReport), (status = 422, body = crate::api::error::ErrorBody)))]
pub async fn get_usage(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<UsageParams>,
) -> Result<AppJson<UsageReport>> {
    let to = parse_time("to", params.to.as_deref())?.unwrap_or_else(Utc::now);
    let from = parse_time("from", params.from.as_deref())?.unwrap_or(to - chrono::Duration::days(30));
    if from >= to {
        return Err(Error::invalid("from must be before to"));
    }
    // Calls recorded a moment ago may still be in the writer's queue.
    state.gateway.recorder().flush().await;
    let group_by = params.group_by.unwrap_or(GroupBy::Model);
    let groups = usage_rows::grouped(&state.db, tenant.id, from, to, group_by).await?;
    let conversations = usage_rows::conversation_costs(&state.db, tenant.id, from, to).await?;
    Ok(AppJson(UsageReport { from, to, groups, conversations }))
}

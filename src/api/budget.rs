//! `GET /v1/budget`: the tenant's spend limits and where it stands against
//! them; `PUT /v1/budget`: the tenant lowers its own soft daily limit. Hard
//! limits are the operator's (`stolid budgets set`); see `llm::budget`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::{AppJson, Error, Result};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::llm::accounting::budget_rows::{self, Limits, Standing};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/budget", get(get_budget).put(put_budget))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetResponse {
    limits: LimitsView,
    /// The current UTC day.
    day: PeriodView,
    /// The current UTC month.
    month: PeriodView,
    /// When today's spend crossed the soft limit, if it did.
    soft_limit_crossed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsView {
    /// Hard: calls that could pass it are refused with `budget_exceeded`.
    usd_per_day: Option<f64>,
    usd_per_month: Option<f64>,
    tokens_per_day: Option<i64>,
    /// The soft daily limit in force (the lower of the operator's and the tenant's):
    /// crossing it is logged once a day, nothing is refused.
    soft_usd_per_day: Option<f64>,
    operator_soft_usd_per_day: Option<f64>,
    tenant_soft_usd_per_day: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodView {
    spent_usd: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    spent_tokens: Option<i64>,
    /// Held by calls in flight.
    reserved_usd: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved_tokens: Option<i64>,
    /// Room left under the hard limit; absent without one.
    remaining_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_tokens: Option<i64>,
    resets_at: DateTime<Utc>,
}

fn view(limits: Limits, standing: Standing) -> BudgetResponse {
    let remaining = |limit: Option<f64>, spent: f64| limit.map(|l| (l - spent - standing.reserved_usd).max(0.0));
    BudgetResponse {
        day: PeriodView {
            spent_usd: standing.day_spent_usd,
            spent_tokens: Some(standing.day_spent_tokens),
            reserved_usd: standing.reserved_usd,
            reserved_tokens: Some(standing.reserved_tokens),
            remaining_usd: remaining(limits.usd_per_day, standing.day_spent_usd),
            remaining_tokens: limits
                .tokens_per_day
                .map(|l| (l - standing.day_spent_tokens - standing.reserved_tokens).max(0)),
            resets_at: standing.day_resets_at,
        },
        month: PeriodView {
            spent_usd: standing.month_spent_usd,
            spent_tokens: None,
            reserved_usd: standing.reserved_usd,
            reserved_tokens: None,
            remaining_usd: remaining(limits.usd_per_month, standing.month_spent_usd),
            remaining_tokens: None,
            resets_at: standing.month_resets_at,
        },
        soft_limit_crossed_at: standing.soft_crossed_at,
        limits: LimitsView {
            usd_per_day: limits.usd_per_day,
            usd_per_month: limits.usd_per_month,
            tokens_per_day: limits.tokens_per_day,
            soft_usd_per_day: limits.soft_usd_per_day_in_force(),
            operator_soft_usd_per_day: limits.soft_usd_per_day,
            tenant_soft_usd_per_day: limits.tenant_soft_usd_per_day,
        },
    }
}

async fn current(state: &AppState, tenant: &Tenant, limits: Option<Limits>) -> Result<BudgetResponse> {
    // Calls recorded a moment ago may still be in the writer's queue.
    state.gateway.recorder().flush().await;
    let limits = match limits {
        Some(limits) => limits,
        None => budget_rows::limits(&state.db, tenant.id).await?.unwrap_or_default(),
    };
    let standing = budget_rows::standing(&state.db, tenant.id).await?;
    Ok(view(limits, standing))
}

/// The tenant's limits, spend, reservations and reset times.
#[utoipa::path(get, path = "/v1/budget", tag = "budget", security(("api_key" = [])),
    responses((status = 200, body = BudgetResponse)))]
pub async fn get_budget(State(state): State<AppState>, tenant: Tenant) -> Result<AppJson<BudgetResponse>> {
    Ok(AppJson(current(&state, &tenant, None).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetUpdate {
    /// The tenant's own soft daily limit in USD, at most the operator's soft and
    /// hard daily limits; `null` removes it.
    soft_usd_per_day: Option<f64>,
}

/// Sets the tenant's own soft daily limit (it can only be lower than the operator's).
#[utoipa::path(put, path = "/v1/budget", tag = "budget", security(("api_key" = [])), request_body = BudgetUpdate,
    responses((status = 200, body = BudgetResponse), (status = 422, body = crate::api::error::ErrorBody)))]
pub async fn put_budget(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(update): AppJson<BudgetUpdate>,
) -> Result<AppJson<BudgetResponse>> {
    if let Some(usd) = update.soft_usd_per_day {
        if !usd.is_finite() || usd < 0.0 {
            return Err(Error::invalid("soft_usd_per_day must be a number of dollars, 0 or more"));
        }
        let limits = budget_rows::limits(&state.db, tenant.id).await?.unwrap_or_default();
        for (name, ceiling) in [("soft", limits.soft_usd_per_day), ("hard", limits.usd_per_day)] {
            if let Some(ceiling) = ceiling.filter(|c| usd > *c) {
                return Err(Error::invalid(format!(
                    "soft_usd_per_day can only lower the operator's limits: the {name} daily limit is ${ceiling:.2}"
                )));
            }
        }
    }
    let limits = budget_rows::set_tenant_soft_limit(&state.db, tenant.id, update.soft_usd_per_day).await?;
    Ok(AppJson(current(&state, &tenant, Some(limits)).await?))
}

//! Per-tenant spend limits, enforced before each model call.
//!
//! The operator sets hard limits per tenant (USD per day and per month, tokens
//! per day; `stolid budgets set`) and a soft daily limit, which the tenant may
//! lower (`PUT /v1/budget`). Every chat completion, embedding request (bulk or
//! query) and agent step of a tenant with limits goes through three steps:
//! 1. **reserve** what the call can cost at most: its input tokens (counted,
//!    plus [`ESTIMATE_MARGIN`]) and its output at the call's `max_tokens`. The
//!    reservation is one call to `budget_reserve` (migration 0009), which locks
//!    the tenant's `budgets` row, so reservations of one tenant are decided one
//!    at a time across the fleet, and is refused if spent + reserved + this would
//!    pass a hard limit: the caller gets [`LlmError::BudgetExceeded`] and nothing
//!    is sent;
//! 2. the call runs; each attempt is recorded as usual;
//! 3. **settle**: when the call ends (or its future is dropped) the
//!    [`Reservation`] is released through the usage writer, which adds the
//!    recorded cost to `budget_spend` and deletes the reservation in the same
//!    transaction as the `model_calls` rows.
//!
//! So concurrent calls cannot overshoot a hard limit: each was admitted only if
//! its worst case fit beside everything admitted before it; spend passes the
//! limit only when a call costs more than its reservation (a provider counting
//! more tokens than cl100k with the margin).
//!
//! Tenants without limits (no `budgets` row, known from the API key lookup)
//! reserve nothing, so their calls cost no round trip; their spend is still
//! counted, so a limit set mid-day counts the morning.
//!
//! Failure modes:
//! - a task that dies mid-call leaves its reservation: it counts until
//!   `BUDGET_RESERVATION_TTL_SECS` after it was made (longer than any call may
//!   run), then stops counting; the calls it made and had not yet stored are
//!   not counted (as in `model_calls`);
//! - Postgres unreachable: a budgeted call is refused as unavailable (503)
//!   rather than made unaccounted;
//! - clocks: periods (UTC days and months) and expiry use the database's
//!   clock, so the tasks' clocks do not matter.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::llm::LlmError;
use crate::llm::accounting::budget_rows::{self, Refusal};
use crate::llm::accounting::usage::UsageRecorder;

/// Reservations count this much more input than was counted, since providers
/// count tokens their own way (role markup, tool schemas, other tokenizers).
pub const ESTIMATE_MARGIN: f64 = 1.1;

/// Output reserved for a call that sets no `max_tokens`.
pub const DEFAULT_OUTPUT_RESERVE: u32 = 4_096;

/// The hard limit a call would have passed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Exceeded {
    /// `day` or `month` (UTC).
    pub period: &'static str,
    /// `usd` or `tokens`.
    pub unit: &'static str,
    pub limit: f64,
    /// Spent plus reserved by calls in flight, in the period.
    pub used: f64,
    /// What the refused call needed reserved (in `unit`).
    pub needed: f64,
    pub resets_at: DateTime<Utc>,
}

impl Exceeded {
    fn new(refusal: Refusal, estimate: Estimate) -> Self {
        let unit = if refusal.unit == "tokens" { "tokens" } else { "usd" };
        Self {
            period: if refusal.period == "month" { "month" } else { "day" },
            unit,
            limit: refusal.limit_value,
            used: refusal.used,
            needed: if unit == "tokens" { estimate.tokens as f64 } else { estimate.usd },
            resets_at: refusal.resets_at,
        }
    }

    /// An amount in the limit's unit, as people read it: `$5.00`, `1000 tokens`.
    pub fn amount(&self, value: f64) -> String {
        if self.unit == "tokens" { format!("{value} tokens") } else { usd(value) }
    }

    /// Whether the call could never fit, even in an unused period.
    pub fn larger_than_limit(&self) -> bool {
        self.needed > self.limit
    }

    /// Whole seconds until the period resets (at least 1), for `Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        (self.resets_at - Utc::now()).num_seconds().max(1) as u64
    }
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let period = if self.period == "month" { "monthly" } else { "daily" };
        if self.used >= self.limit {
            write!(f, "the {period} budget of {} is spent", self.amount(self.limit))?;
        } else {
            write!(
                f,
                "the {period} budget of {} has no room for this call ({} used or reserved, {} needed)",
                self.amount(self.limit),
                self.amount(self.used),
                self.amount(self.needed)
            )?;
        }
        write!(f, "; it resets at {}", self.resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }
}

/// Dollars with cents, and below a cent with two significant digits, so a call
/// that needs $0.00092 never reads "$0.00 needed".
fn usd(value: f64) -> String {
    let decimals = if value <= 0.0 || value >= 0.01 { 2 } else { (1.0 - value.log10().floor()).min(10.0) as usize };
    format!("${value:.decimals$}")
}

/// What one call may cost at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub usd: f64,
    pub tokens: u64,
}

/// Admits calls against their tenant's limits; one per gateway.
pub struct Budgets {
    db: PgPool,
    recorder: UsageRecorder,
    ttl: Duration,
}

impl Budgets {
    pub fn new(db: PgPool, recorder: UsageRecorder, ttl: Duration) -> Self {
        Self { db, recorder, ttl }
    }

    /// Reserves `estimate` for a call of `tenant_id`; the reservation ends when
    /// the returned value is dropped.
    pub async fn reserve(&self, tenant_id: Uuid, estimate: Estimate) -> Result<Reservation, LlmError> {
        let id = Uuid::now_v7();
        let refused = budget_rows::reserve(
            &self.db,
            tenant_id,
            id,
            estimate.usd,
            estimate.tokens.min(i64::MAX as u64) as i64,
            self.ttl.as_secs_f64(),
        )
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "budget reservation failed");
            LlmError::Unavailable(format!("the spend limit could not be checked: {err}"))
        })?;
        if let Some(refusal) = refused {
            let exceeded = Exceeded::new(refusal, estimate);
            self.recorder.emit(refusal_line(tenant_id, &exceeded));
            return Err(LlmError::BudgetExceeded(Box::new(exceeded)));
        }
        Ok(Reservation { id, recorder: self.recorder.clone() })
    }
}

/// A refused call as one EMF line (metric `budget_refusals`, by period).
pub fn refusal_line(tenant_id: Uuid, exceeded: &Exceeded) -> serde_json::Value {
    crate::infra::telemetry::emf(
        Utc::now(),
        &[&["event"], &["event", "period"]],
        &[("budget_refusals", "Count")],
        serde_json::json!({
            "level": "INFO",
            "target": "stolid::budget",
            "message": "call refused: over budget",
            "event": "budget_exceeded",
            "budget_refusals": 1,
            "tenant_id": tenant_id,
            "period": exceeded.period,
            "unit": exceeded.unit,
            "limit": exceeded.limit,
            "used": exceeded.used,
            "needed": exceeded.needed,
            "resets_at": exceeded.resets_at,
        }),
    )
}

/// Room held for one call. Dropping it ends the reservation once the call's
/// attempts, recorded before, are stored.
pub struct Reservation {
    id: Uuid,
    recorder: UsageRecorder,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.recorder.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exceeded_budget_says_which_limit_and_when_it_resets() {
        let resets_at = "2026-12-03T00:00:00Z".parse().unwrap();
        let exceeded = Exceeded { period: "day", unit: "usd", limit: 5.0, used: 4.99, needed: 0.02, resets_at };
        assert!(!exceeded.larger_than_limit());
        assert_eq!(
            exceeded.to_string(),
            "the daily budget of $5.00 has no room for this call ($4.99 used or reserved, $0.02 needed); \
             it resets at 2026-12-03T00:00:00Z"
        );
        let tokens = Exceeded { period: "day", unit: "tokens", limit: 1000.0, used: 1000.0, ..exceeded };
        assert_eq!(tokens.to_string(), "the daily budget of 1000 tokens is spent; it resets at 2026-12-03T00:00:00Z");
        stolid_testkit::emf::check(&refusal_line(Uuid::nil(), &tokens)).unwrap();
        let tiny = Exceeded { limit: 0.001, used: 0.0005, needed: 0.00092, ..exceeded };
        assert!(tiny.to_string().contains("($0.00050 used or reserved, $0.00092 needed)"), "{tiny}");
    }

    #[test]
    fn dollar_amounts_below_a_cent_keep_two_significant_digits() {
        for (value, text) in
            [(0.0, "$0.00"), (5.0, "$5.00"), (0.01, "$0.01"), (0.0099, "$0.0099"), (0.00092, "$0.00092")]
        {
            assert_eq!(usd(value), text);
        }
    }
}

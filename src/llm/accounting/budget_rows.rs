//! `budgets`, `budget_spend`, `budget_reservations`: per-tenant spend limits
//! and what counts against them (migration 0009 explains the design).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A tenant's limits; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct Limits {
    pub usd_per_day: Option<f64>,
    pub usd_per_month: Option<f64>,
    pub tokens_per_day: Option<i64>,
    /// The operator's soft daily limit: crossing it is logged, not refused.
    pub soft_usd_per_day: Option<f64>,
    /// The tenant's own soft daily limit, at most the operator's.
    pub tenant_soft_usd_per_day: Option<f64>,
}

impl Limits {
    /// The soft daily limit in force: the lower of the operator's and the
    /// tenant's (as `least(...)` in the usage writer's statement).
    pub fn soft_usd_per_day_in_force(&self) -> Option<f64> {
        match (self.soft_usd_per_day, self.tenant_soft_usd_per_day) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The hard limit a call would pass.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Refusal {
    /// `day` or `month`.
    pub period: String,
    /// `usd` or `tokens`.
    pub unit: String,
    pub limit_value: f64,
    /// Spent plus reserved in the period, before this call.
    pub used: f64,
    pub resets_at: DateTime<Utc>,
}

/// One of the operator's changes to a tenant's limits: `Some(None)` clears a limit,
/// `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct LimitChanges {
    pub usd_per_day: Option<Option<f64>>,
    pub usd_per_month: Option<Option<f64>>,
    pub tokens_per_day: Option<Option<i64>>,
    pub soft_usd_per_day: Option<Option<f64>>,
}

/// Applies the operator's changes (creating the row), and returns the limits now in force.
pub async fn set_limits(db: impl PgExecutor<'_>, tenant_id: Uuid, changes: &LimitChanges) -> sqlx::Result<Limits> {
    sqlx::query_as(
        "INSERT INTO budgets (tenant_id, usd_per_day, usd_per_month, tokens_per_day, soft_usd_per_day)
         VALUES ($1, $3, $5, $7, $9)
         ON CONFLICT (tenant_id) DO UPDATE SET
             usd_per_day = CASE WHEN $2 THEN EXCLUDED.usd_per_day ELSE budgets.usd_per_day END,
             usd_per_month = CASE WHEN $4 THEN EXCLUDED.usd_per_month ELSE budgets.usd_per_month END,
             tokens_per_day = CASE WHEN $6 THEN EXCLUDED.tokens_per_day ELSE budgets.tokens_per_day END,
             soft_usd_per_day = CASE WHEN $8 THEN EXCLUDED.soft_usd_per_day ELSE budgets.soft_usd_per_day END,
             updated_at = now()
         RETURNING usd_per_day, usd_per_month, tokens_per_day, soft_usd_per_day, tenant_soft_usd_per_day",
    )
    .bind(tenant_id)
    .bind(changes.usd_per_day.is_some())
    .bind(changes.usd_per_day.flatten())
    .bind(changes.usd_per_month.is_some())
    .bind(changes.usd_per_month.flatten())
    .bind(changes.tokens_per_day.is_some())
    .bind(changes.tokens_per_day.flatten())
    .bind(changes.soft_usd_per_day.is_some())
    .bind(changes.soft_usd_per_day.flatten())
    .fetch_one(db)
    .await
}

/// Sets the tenant's own soft daily limit (`None` clears it).
pub async fn set_tenant_soft_limit(db: impl PgExecutor<'_>, tenant_id: Uuid, usd: Option<f64>) -> sqlx::Result<Limits> {
    sqlx::query_as(
        "INSERT INTO budgets (tenant_id, tenant_soft_usd_per_day) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET tenant_soft_usd_per_day = EXCLUDED.tenant_soft_usd_per_day,
                                               updated_at = now()
         RETURNING usd_per_day, usd_per_month, tokens_per_day, soft_usd_per_day, tenant_soft_usd_per_day",
    )
    .bind(tenant_id)
    .bind(usd)
    .fetch_one(db)
    .await
}

pub async fn limits(db: impl PgExecutor<'_>, tenant_id: Uuid) -> sqlx::Result<Option<Limits>> {
    sqlx::query_as(
        "SELECT usd_per_day, usd_per_month, tokens_per_day, soft_usd_per_day, tenant_soft_usd_per_day
         FROM budgets WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

/// Whether the tenant has a budgets row, so its calls must reserve.
pub async fn is_budgeted(db: impl PgExecutor<'_>, tenant_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM budgets WHERE tenant_id = $1)").bind(tenant_id).fetch_one(db).await
}

/// Reserves room for one call, or says which limit it would pass.
pub async fn reserve(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    usd: f64,
    tokens: i64,
    ttl_secs: f64,
) -> sqlx::Result<Option<Refusal>> {
    sqlx::query_as("SELECT * FROM budget_reserve($1, $2, $3, $4, $5)")
        .bind(tenant_id)
        .bind(id)
        .bind(usd)
        .bind(tokens)
        .bind(ttl_secs)
        .fetch_optional(db)
        .await
}

/// Where a tenant stands in the current day and month.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Standing {
    pub day_spent_usd: f64,
    pub day_spent_tokens: i64,
    pub month_spent_usd: f64,
    pub reserved_usd: f64,
    pub reserved_tokens: i64,
    pub day_resets_at: DateTime<Utc>,
    pub month_resets_at: DateTime<Utc>,
    pub soft_crossed_at: Option<DateTime<Utc>>,
}

pub async fn standing(db: impl PgExecutor<'_>, tenant_id: Uuid) -> sqlx::Result<Standing> {
    sqlx::query_as(
        "WITH clock AS (
             SELECT (now() AT TIME ZONE 'UTC')::date AS today,
                    date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month_start
         )
         SELECT coalesce(sum(s.spent_usd) FILTER (WHERE s.day = c.today), 0) AS day_spent_usd,
                coalesce(sum(s.spent_tokens) FILTER (WHERE s.day = c.today), 0)::bigint AS day_spent_tokens,
                coalesce(sum(s.spent_usd), 0) AS month_spent_usd,
                (SELECT coalesce(sum(usd), 0) FROM budget_reservations
                  WHERE tenant_id = $1 AND expires_at > now()) AS reserved_usd,
                (SELECT coalesce(sum(tokens), 0)::bigint FROM budget_reservations
                  WHERE tenant_id = $1 AND expires_at > now()) AS reserved_tokens,
                (c.today + 1)::timestamp AT TIME ZONE 'UTC' AS day_resets_at,
                (c.month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC' AS month_resets_at,
                max(s.soft_crossed_at) FILTER (WHERE s.day = c.today) AS soft_crossed_at
         FROM clock c LEFT JOIN budget_spend s ON s.tenant_id = $1 AND s.day >= c.month_start
         GROUP BY c.today, c.month_start",
    )
    .bind(tenant_id)
    .fetch_one(db)
    .await
}

/// One row of `stolid budgets list`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Listed {
    pub tenant: String,
    #[sqlx(flatten)]
    pub limits: Limits,
    pub day_spent_usd: f64,
    pub month_spent_usd: f64,
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Listed>> {
    sqlx::query_as(
        "SELECT t.name AS tenant, b.usd_per_day, b.usd_per_month, b.tokens_per_day, b.soft_usd_per_day,
                b.tenant_soft_usd_per_day,
                coalesce(sum(s.spent_usd) FILTER (WHERE s.day = (now() AT TIME ZONE 'UTC')::date), 0) AS day_spent_usd,
                coalesce(sum(s.spent_usd), 0) AS month_spent_usd
         FROM budgets b JOIN tenants t ON t.id = b.tenant_id
         LEFT JOIN budget_spend s ON s.tenant_id = b.tenant_id
              AND s.day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date
         GROUP BY t.name, b.tenant_id
         ORDER BY t.name",
    )
    .fetch_all(db)
    .await
}

/// A soft limit crossed by the spend just added.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SoftCrossing {
    pub tenant_id: Uuid,
    pub spent_usd: f64,
    pub soft_usd_per_day: f64,
}

/// Deletes reservations that stopped counting (their task died mid-call).
pub async fn delete_expired_reservations(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    Ok(sqlx::query("DELETE FROM budget_reservations WHERE expires_at < now() - interval '1 minute'")
        .execute(db)
        .await?
        .rows_affected())
}

//! `model_calls`: one row per model call, the source of every usage report.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::llm::accounting::budget_rows::SoftCrossing;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Chat,
    Embed,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embed => "embed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    RateLimited,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RateLimited => "rate_limited",
            Outcome::Error => "error",
        }
    }
}

/// One model call, as logged and stored.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCall {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub conversation_id: Option<Uuid>,
    pub endpoint: String,
    pub provider: &'static str,
    pub model: String,
    pub operation: Operation,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub latency_ms: f64,
    /// How long an embedding waited for the fleet's limiter before it was sent.
    pub wait_ms: f64,
    pub cost_usd: f64,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Inserts many calls in one statement (arrays unnested server-side), with
/// their cost added to their tenants' budget spend ([`write_batch`]).
pub async fn insert_model_calls(db: impl PgExecutor<'_>, calls: &[ModelCall]) -> sqlx::Result<()> {
    write_batch(db, calls, &[], &[]).await.map(drop)
}

/// Where one chat, suggest or agent request's time went (`request_timings`).
#[derive(Debug, Clone, Serialize)]
pub struct RequestTiming {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub request_id: Option<String>,
    pub endpoint: &'static str,
    pub conversation_id: Option<Uuid>,
    pub first_message: bool,
    pub total_ms: f64,
    pub vector_ms: f64,
    pub keyword_ms: f64,
    pub model_ms: f64,
    pub created_at: DateTime<Utc>,
}

/// The usage writer's batch, in one statement (so atomic, and one round
/// trip): the calls, their cost added to their tenants' day in
/// `budget_spend`, the budget reservations of the calls that ended
/// (`released`) deleted, and the request timings. A reservation thus stops
/// counting exactly when its call's cost starts to. Returns the soft daily
/// limits this spend crossed, each once per tenant and day.
pub async fn write_batch(
    db: impl PgExecutor<'_>,
    calls: &[ModelCall],
    timings: &[RequestTiming],
    released: &[Uuid],
) -> sqlx::Result<Vec<SoftCrossing>> {
    let of = |f: fn(&ModelCall) -> f64| calls.iter().map(f).collect::<Vec<f64>>();
    let timed = |f: fn(&RequestTiming) -> f64| timings.iter().map(f).collect::<Vec<f64>>();
    sqlx::query_as(
        "WITH calls AS (
             INSERT INTO model_calls (id, tenant_id, request_id, conversation_id, endpoint, provider, model,
                                      operation, input_tokens, output_tokens, latency_ms, cost_usd, outcome,
                                      error, created_at, wait_ms)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::int4[], $10::int4[], $11::float8[],
                                  $12::float8[], $13::text[], $14::text[], $15::timestamptz[], $16::float8[])
             RETURNING tenant_id, cost_usd, input_tokens, output_tokens
         ), released AS (
             DELETE FROM budget_reservations WHERE id = ANY($17)
         ), timings AS (
             INSERT INTO request_timings (id, tenant_id, request_id, endpoint, conversation_id, first_message,
                                          total_ms, vector_ms, keyword_ms, model_ms, created_at)
             SELECT * FROM UNNEST($18::uuid[], $19::uuid[], $20::text[], $21::text[], $22::uuid[], $23::bool[],
                                  $24::float8[], $25::float8[], $26::float8[], $27::float8[], $28::timestamptz[])
         ), spend AS (
             INSERT INTO budget_spend AS s (tenant_id, day, spent_usd, spent_tokens, soft_crossed_at)
             SELECT c.tenant_id, (now() AT TIME ZONE 'UTC')::date, sum(c.cost_usd),
                    sum(c.input_tokens + c.output_tokens),
                    CASE WHEN sum(c.cost_usd) >= min(least(b.soft_usd_per_day, b.tenant_soft_usd_per_day))
                         THEN now() END
             FROM calls c LEFT JOIN budgets b ON b.tenant_id = c.tenant_id
             WHERE c.tenant_id IS NOT NULL
             GROUP BY c.tenant_id
             ON CONFLICT (tenant_id, day) DO UPDATE
                SET spent_usd = s.spent_usd + EXCLUDED.spent_usd,
                    spent_tokens = s.spent_tokens + EXCLUDED.spent_tokens,
                    soft_crossed_at = coalesce(s.soft_crossed_at, CASE
                        WHEN s.spent_usd + EXCLUDED.spent_usd >= (
                            SELECT least(b.soft_usd_per_day, b.tenant_soft_usd_per_day)
                            FROM budgets b WHERE b.tenant_id = EXCLUDED.tenant_id)
                        THEN now() END)
             RETURNING tenant_id, spent_usd, soft_crossed_at
         )
         SELECT s.tenant_id, s.spent_usd, least(b.soft_usd_per_day, b.tenant_soft_usd_per_day) AS soft_usd_per_day
         FROM spend s JOIN budgets b ON b.tenant_id = s.tenant_id
         WHERE s.soft_crossed_at = now()",
    )
    .bind(calls.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.tenant_id).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.request_id.clone()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.conversation_id).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.endpoint.clone()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.provider).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.model.clone()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.operation.as_str()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.input_tokens as i32).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.output_tokens as i32).collect::<Vec<_>>())
    .bind(of(|c| c.latency_ms))
    .bind(of(|c| c.cost_usd))
    .bind(calls.iter().map(|c| c.outcome.as_str()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.error.clone()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.created_at).collect::<Vec<_>>())
    .bind(of(|c| c.wait_ms))
    .bind(released)
    .bind(timings.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(timings.iter().map(|r| r.tenant_id).collect::<Vec<_>>())
    .bind(timings.iter().map(|r| r.request_id.clone()).collect::<Vec<_>>())
    .bind(timings.iter().map(|r| r.endpoint).collect::<Vec<_>>())
    .bind(timings.iter().map(|r| r.conversation_id).collect::<Vec<_>>())
    .bind(timings.iter().map(|r| r.first_message).collect::<Vec<_>>())
    .bind(timed(|r| r.total_ms))
    .bind(timed(|r| r.vector_ms))
    .bind(timed(|r| r.keyword_ms))
    .bind(timed(|r| r.model_ms))
    .bind(timings.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .fetch_all(db)
    .await
}

/// What usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Model,
    Endpoint,
    Day,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UsageGroup {
    /// The model, the endpoint, or the day (`YYYY-MM-DD`, UTC).
    pub key: String,
    pub calls: i64,
    pub failed_calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// Latency percentiles of successful calls, in milliseconds.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

pub async fn grouped(
    db: impl PgExecutor<'_>,
    tenant_id: uuid::Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    group_by: GroupBy,
) -> sqlx::Result<Vec<UsageGroup>> {
    let key = match group_by {
        GroupBy::Model => "model",
        GroupBy::Endpoint => "endpoint",
        GroupBy::Day => "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {key} AS key,
                count(*) AS calls,
                count(*) FILTER (WHERE outcome <> 'ok') AS failed_calls,
                coalesce(sum(input_tokens), 0)::int8 AS input_tokens,
                coalesce(sum(output_tokens), 0)::int8 AS output_tokens,
                coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
                percentile_cont(0.50) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE outcome = 'ok') AS latency_p50_ms,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE outcome = 'ok') AS latency_p95_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE outcome = 'ok') AS latency_p99_ms
         FROM model_calls
         WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
         GROUP BY 1 ORDER BY 1"
    )))
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}

/// Cost per conversation: the distribution over conversations with model calls in the window.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ConversationCosts {
    pub count: i64,
    pub mean_cost_usd: Option<f64>,
    pub p50_cost_usd: Option<f64>,
    pub p95_cost_usd: Option<f64>,
    pub max_cost_usd: Option<f64>,
    /// The distribution as up to `COST_BUCKETS` equal-width buckets from 0 to
    /// the maximum (one when every conversation cost the same); empty without conversations.
    #[sqlx(json)]
    pub histogram: Vec<CostBucket>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CostBucket {
    pub from_usd: f64,
    pub to_usd: f64,
    pub conversations: i64,
}

/// Enough to see the shape of a long tail, few enough to read as bars.
const COST_BUCKETS: i32 = 12;

pub async fn conversation_costs(
    db: impl PgExecutor<'_>,
    tenant_id: uuid::Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<ConversationCosts> {
    sqlx::query_as(
        "WITH per_conversation AS (
             SELECT conversation_id, sum(cost_usd)::float8 AS cost
             FROM model_calls
             WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 AND conversation_id IS NOT NULL
             GROUP BY conversation_id),
         top AS (SELECT max(cost) AS max_cost FROM per_conversation),
         -- Bucket n of N covers [max (n-1)/N, max n/N); the maximum itself goes in the last.
         bucketed AS (
             SELECT CASE WHEN max_cost > 0 THEN least(width_bucket(cost, 0, max_cost, $4), $4) ELSE 1 END AS bucket,
                    CASE WHEN max_cost > 0 THEN $4 ELSE 1 END AS buckets, max_cost
             FROM per_conversation, top),
         counts AS (SELECT bucket, count(*) AS conversations FROM bucketed GROUP BY bucket),
         histogram AS (
             SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'from_usd', max_cost * (b - 1) / buckets, 'to_usd', max_cost * b / buckets,
                        'conversations', coalesce(counts.conversations, 0)) ORDER BY b), '[]') AS histogram
             FROM (SELECT DISTINCT buckets, max_cost FROM bucketed) AS shape
             CROSS JOIN generate_series(1, shape.buckets) AS b
             LEFT JOIN counts ON counts.bucket = b)
         SELECT count(*) AS count,
                avg(cost)::float8 AS mean_cost_usd,
                percentile_cont(0.50) WITHIN GROUP (ORDER BY cost) AS p50_cost_usd,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY cost) AS p95_cost_usd,
                max(cost)::float8 AS max_cost_usd,
                (SELECT histogram FROM histogram) AS histogram
         FROM per_conversation",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .bind(COST_BUCKETS)
    .fetch_one(db)
    .await
}

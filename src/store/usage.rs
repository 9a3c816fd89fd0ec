//! `model_calls`: one row per model call, the source of every usage report.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

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
    pub cost_usd: f64,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Inserts many calls in one statement (arrays unnested server-side).
pub async fn insert_model_calls(db: impl PgExecutor<'_>, calls: &[ModelCall]) -> sqlx::Result<()> {
    let mut ids = Vec::with_capacity(calls.len());
    let mut tenants = Vec::with_capacity(calls.len());
    let mut request_ids = Vec::with_capacity(calls.len());
    let mut conversations = Vec::with_capacity(calls.len());
    let mut endpoints = Vec::with_capacity(calls.len());
    let mut providers = Vec::with_capacity(calls.len());
    let mut models = Vec::with_capacity(calls.len());
    let mut operations = Vec::with_capacity(calls.len());
    let mut inputs = Vec::with_capacity(calls.len());
    let mut outputs = Vec::with_capacity(calls.len());
    let mut latencies = Vec::with_capacity(calls.len());
    let mut costs = Vec::with_capacity(calls.len());
    let mut outcomes = Vec::with_capacity(calls.len());
    let mut errors = Vec::with_capacity(calls.len());
    let mut created = Vec::with_capacity(calls.len());
    for c in calls {
        ids.push(c.id);
        tenants.push(c.tenant_id);
        request_ids.push(c.request_id.clone());
        conversations.push(c.conversation_id);
        endpoints.push(c.endpoint.clone());
        providers.push(c.provider.to_string());
        models.push(c.model.clone());
        operations.push(c.operation.as_str().to_string());
        inputs.push(c.input_tokens as i32);
        outputs.push(c.output_tokens as i32);
        latencies.push(c.latency_ms);
        costs.push(c.cost_usd);
        outcomes.push(c.outcome.as_str().to_string());
        errors.push(c.error.clone());
        created.push(c.created_at);
    }
    sqlx::query(
        "INSERT INTO model_calls (id, tenant_id, request_id, conversation_id, endpoint, provider, model,
                                  operation, input_tokens, output_tokens, latency_ms, cost_usd, outcome,
                                  error, created_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[],
                              $7::text[], $8::text[], $9::int4[], $10::int4[], $11::float8[],
                              $12::float8[], $13::text[], $14::text[], $15::timestamptz[])",
    )
    .bind(ids)
    .bind(tenants)
    .bind(request_ids)
    .bind(conversations)
    .bind(endpoints)
    .bind(providers)
    .bind(models)
    .bind(operations)
    .bind(inputs)
    .bind(outputs)
    .bind(latencies)
    .bind(costs)
    .bind(outcomes)
    .bind(errors)
    .bind(created)
    .execute(db)
    .await?;
    Ok(())
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
}

pub async fn conversation_costs(
    db: impl PgExecutor<'_>,
    tenant_id: uuid::Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<ConversationCosts> {
    sqlx::query_as(
        "WITH per_conversation AS (
             SELECT conversation_id, sum(cost_usd) AS cost
             FROM model_calls
             WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 AND conversation_id IS NOT NULL
             GROUP BY conversation_id)
         SELECT count(*) AS count,
                avg(cost)::float8 AS mean_cost_usd,
                percentile_cont(0.50) WITHIN GROUP (ORDER BY cost) AS p50_cost_usd,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY cost) AS p95_cost_usd,
                max(cost)::float8 AS max_cost_usd
         FROM per_conversation",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await
}

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

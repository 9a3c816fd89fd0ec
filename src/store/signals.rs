//! What the ops signals read: `request_timings`, `model_calls` and the
//! documents still to index, over a window, for one tenant or all (`None`).

use serde::Serialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

/// A latency distribution, in ms.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow, ToSchema)]
pub struct Percentiles {
    pub count: i64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// Chat latency of first messages and of later ones.
pub async fn chat_latency(
    db: impl PgExecutor<'_>,
    tenant_id: Option<Uuid>,
    window_secs: f64,
) -> sqlx::Result<(Percentiles, Percentiles)> {
    let rows: Vec<(bool, i64, Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT first_message, count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY total_ms)
         FROM request_timings
         WHERE endpoint = 'chat' AND created_at > now() - make_interval(secs => $2)
           AND ($1::uuid IS NULL OR tenant_id = $1)
         GROUP BY first_message",
    )
    .bind(tenant_id)
    .bind(window_secs)
    .fetch_all(db)
    .await?;
    let pick = |first: bool| {
        rows.iter().find(|r| r.0 == first).map(|r| Percentiles { count: r.1, p50: r.2, p95: r.3 }).unwrap_or_default()
    };
    Ok((pick(true), pick(false)))
}

/// A share of response time (0 to 1), p50 and p95 over requests.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Share {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Shares {
    pub endpoint: String,
    pub requests: i64,
    pub vector: Share,
    pub keyword: Share,
    pub model: Share,
}

/// Per endpoint, the shares of each request's time in vector search, keyword search and the model.
pub async fn shares(db: impl PgExecutor<'_>, tenant_id: Option<Uuid>, window_secs: f64) -> sqlx::Result<Vec<Shares>> {
    type Row = (String, i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT endpoint, count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY vector_ms / total_ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY vector_ms / total_ms),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY keyword_ms / total_ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY keyword_ms / total_ms),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY model_ms / total_ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY model_ms / total_ms)
         FROM request_timings
         WHERE total_ms > 0 AND created_at > now() - make_interval(secs => $2)
           AND ($1::uuid IS NULL OR tenant_id = $1)
         GROUP BY endpoint ORDER BY endpoint",
    )
    .bind(tenant_id)
    .bind(window_secs)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Shares {
            endpoint: r.0,
            requests: r.1,
            vector: Share { p50: r.2, p95: r.3 },
            keyword: Share { p50: r.4, p95: r.5 },
            model: Share { p50: r.6, p95: r.7 },
        })
        .collect())
}

/// Documents waiting to be indexed.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow, ToSchema)]
pub struct Backlog {
    /// `queued` or `processing`, not paused.
    pub queued_documents: i64,
    /// Waiting for their tenant's budget.
    pub paused_documents: i64,
    /// Their chunks, estimated from their size and the bytes per chunk of
    /// the documents indexed so far.
    pub estimated_chunks: i64,
    /// Age of the oldest queued document (not paused), seconds.
    pub oldest_queued_secs: Option<f64>,
}

pub async fn backlog(db: impl PgExecutor<'_>, tenant_id: Option<Uuid>) -> sqlx::Result<Backlog> {
    sqlx::query_as(
        "WITH scoped AS (SELECT * FROM documents WHERE $1::uuid IS NULL OR tenant_id = $1),
         density AS (
             SELECT sum(size_bytes)::float8 / nullif(sum(chunk_count), 0) AS bytes_per_chunk
             FROM scoped WHERE status = 'indexed' AND chunk_count > 0
         )
         SELECT count(*) FILTER (WHERE s.paused_until IS NULL) AS queued_documents,
                count(*) FILTER (WHERE s.paused_until IS NOT NULL) AS paused_documents,
                coalesce(ceil(sum(s.size_bytes) / coalesce(max(d.bytes_per_chunk), 2000.0)), 0)::int8 AS estimated_chunks,
                extract(epoch FROM now() - min(s.created_at) FILTER (WHERE s.paused_until IS NULL))::float8
                    AS oldest_queued_secs
         FROM scoped s CROSS JOIN density d
         WHERE s.status IN ('queued', 'processing')",
    )
    .bind(tenant_id)
    .fetch_one(db)
    .await
}

/// How long embeddings waited for the fleet's limiter, ms.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Waits {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub total: f64,
}

pub struct EmbeddingUsage {
    pub calls: i64,
    pub tokens: i64,
    pub rate_limited: i64,
    pub waits: Waits,
}

pub async fn embedding_usage(
    db: impl PgExecutor<'_>,
    tenant_id: Option<Uuid>,
    window_secs: f64,
) -> sqlx::Result<EmbeddingUsage> {
    let row: (i64, i64, i64, Option<f64>, Option<f64>, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE outcome = 'ok'),
                coalesce(sum(input_tokens) FILTER (WHERE outcome = 'ok'), 0)::int8,
                count(*) FILTER (WHERE outcome = 'rate_limited'),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_ms) FILTER (WHERE outcome = 'ok'),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY wait_ms) FILTER (WHERE outcome = 'ok'),
                coalesce(sum(wait_ms), 0)
         FROM model_calls
         WHERE operation = 'embed' AND created_at > now() - make_interval(secs => $2)
           AND ($1::uuid IS NULL OR tenant_id = $1)",
    )
    .bind(tenant_id)
    .bind(window_secs)
    .fetch_one(db)
    .await?;
    Ok(EmbeddingUsage {
        calls: row.0,
        tokens: row.1,
        rate_limited: row.2,
        waits: Waits { p50: row.3, p95: row.4, total: row.5 },
    })
}

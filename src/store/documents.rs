//! `documents`: one row per uploaded original, tenant-scoped, deduplicated by
//! content hash and type within a tenant and collection.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a document is in its life cycle (the `documents.status` column, text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DocumentStatus {
    /// Waiting for its index job.
    Queued,
    /// A worker is extracting, chunking and embedding it.
    Processing,
    /// Searchable.
    Indexed,
    /// Will not index; `error` says why.
    Failed,
}

impl DocumentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Queued => "queued",
            DocumentStatus::Processing => "processing",
            DocumentStatus::Indexed => "indexed",
            DocumentStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DocumentStatus {
    type Err = ();

    fn from_str(raw: &str) -> Result<Self, ()> {
        [Self::Queued, Self::Processing, Self::Indexed, Self::Failed].into_iter().find(|s| s.as_str() == raw).ok_or(())
    }
}

/// A `documents` row. What each public column means is documented where
/// clients see it, `api::views::Document`; the columns only the server reads
/// are documented here.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Document {
    pub id: Uuid,
    /// Every query filters by it; never shown.
    pub tenant_id: Uuid,
    pub collection: String,
    pub title: String,
    pub content_type: String,
    /// Where the original is (`tenants/<tenant>/<document>`); never shown.
    pub s3_key: String,
    pub content_hash: String,
    pub size_bytes: i64,
    pub metadata: serde_json::Value,
    pub status: DocumentStatus,
    pub error: Option<String>,
    pub chunk_count: i32,
    pub token_count: i32,
    pub embedding_model: Option<String>,
    pub summary: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub processing_started_at: Option<DateTime<Utc>>,
    pub indexed_at: Option<DateTime<Utc>>,
    pub paused_until: Option<DateTime<Utc>>,
    pub original_missing_since: Option<DateTime<Utc>>,
    pub aggregate: bool,
    pub aggregate_share: Option<f32>,
    /// Which generation of chunks is the document's (migration 0011); never shown.
    pub chunk_generation: i64,
}

pub struct NewDocument<'a> {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub collection: &'a str,
    pub title: &'a str,
    pub content_type: &'a str,
    pub s3_key: &'a str,
    pub content_hash: &'a str,
    pub size_bytes: i64,
    pub metadata: &'a serde_json::Value,
}

/// Inserts the document, or returns `None` if the same content is already in
/// the tenant's collection (a concurrent upload won the race).
pub async fn insert(db: impl PgExecutor<'_>, doc: &NewDocument<'_>) -> sqlx::Result<Option<Document>> {
    sqlx::query_as(
        "INSERT INTO documents (id, tenant_id, collection, title, content_type, s3_key, content_hash, size_bytes, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, collection, content_hash, content_type) DO NOTHING
         RETURNING *",
    )
    .bind(doc.id)
    .bind(doc.tenant_id)
    .bind(doc.collection)
    .bind(doc.title)
    .bind(doc.content_type)
    .bind(doc.s3_key)
    .bind(doc.content_hash)
    .bind(doc.size_bytes)
    .bind(doc.metadata)
    .fetch_optional(db)
    .await
}

pub async fn find_by_hash(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    collection: &str,
    content_hash: &str,
    content_type: &str,
) -> sqlx::Result<Option<Document>> {
    sqlx::query_as(
        "SELECT * FROM documents
         WHERE tenant_id = $1 AND collection = $2 AND content_hash = $3 AND content_type = $4",
    )
    .bind(tenant_id)
    .bind(collection)
    .bind(content_hash)
    .bind(content_type)
    .fetch_optional(db)
    .await
}

pub async fn get(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<Document>> {
    sqlx::query_as("SELECT * FROM documents WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Locks the row for the rest of the transaction; `None` if it was deleted.
pub async fn lock(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<Document>> {
    sqlx::query_as("SELECT * FROM documents WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Which documents a listing returns.
#[derive(Debug, Default)]
pub struct DocumentFilter {
    pub status: Option<DocumentStatus>,
    pub collection: Option<String>,
    /// Only these documents (e.g. a client following its own uploads).
    pub ids: Option<Vec<Uuid>>,
}

/// A page of documents, newest first; `before` is the cursor (created_at, id) of the last row seen.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    filter: &DocumentFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Document>> {
    let (before_at, before_id) = before.unzip();
    sqlx::query_as(
        "SELECT * FROM documents
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR collection = $3)
           AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
           AND ($7::uuid[] IS NULL OR id = ANY($7))
         ORDER BY created_at DESC, id DESC
         LIMIT $6",
    )
    .bind(tenant_id)
    .bind(filter.status.map(DocumentStatus::as_str))
    .bind(&filter.collection)
    .bind(before_at)
    .bind(before_id)
    .bind(limit)
    .bind(&filter.ids)
    .fetch_all(db)
    .await
}

/// A collection of the tenant's, with how much of it is searchable.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CollectionSummary {
    pub name: String,
    pub documents: i64,
    pub indexed: i64,
    pub chunks: i64,
}

pub async fn collections(db: impl PgExecutor<'_>, tenant_id: Uuid) -> sqlx::Result<Vec<CollectionSummary>> {
    sqlx::query_as(
        "SELECT collection AS name, count(*) AS documents, count(*) FILTER (WHERE status = 'indexed') AS indexed,
                coalesce(sum(chunk_count), 0)::int8 AS chunks
         FROM documents WHERE tenant_id = $1 GROUP BY collection ORDER BY collection",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

/// Deletes the row (chunks and embeddings cascade) and marks its collection's
/// aggregate marks stale (`store::aggregates`), in one transaction; returns
/// its S3 key and collection.
///
/// Two statements, in this order, not one: the cascade's keyword triggers
/// lock `keyword_frequencies` rows when the delete statement ends, and a
/// publishing job locks those rows before the stale row (its chunks are
/// written first). In one statement the stale row was locked first, and the
/// two deadlocked.
pub async fn delete(db: &sqlx::PgPool, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<(String, String)>> {
    let mut tx = db.begin().await?;
    let deleted: Option<(String, String)> =
        sqlx::query_as("DELETE FROM documents WHERE tenant_id = $1 AND id = $2 RETURNING s3_key, collection")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((_, collection)) = &deleted {
        super::aggregates::mark_stale(&mut *tx, tenant_id, collection).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// Starts an indexing attempt: the document shows `processing` (unless it is
/// indexed already, with another model: it stays searchable meanwhile), and
/// the attempt draws the chunk generation it writes under. `None` if the
/// document is gone or `failed`: failed is final until someone asks for a
/// re-index (which queues it first), whatever messages are still in the queue.
pub async fn start_attempt(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<i64>> {
    // The outer SELECT sees the row as it was before the UPDATE (one snapshot).
    sqlx::query_scalar(
        "WITH started AS (
             UPDATE documents SET status = 'processing', processing_started_at = now(), updated_at = now(),
                    error = NULL, paused_until = NULL
             WHERE tenant_id = $1 AND id = $2 AND status NOT IN ('indexed', 'failed')
         )
         SELECT nextval('chunk_generations') FROM documents
         WHERE tenant_id = $1 AND id = $2 AND status <> 'failed'",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Marks the document failed, dropping what unfinished attempts wrote (chunks
/// of generations it does not show): its last indexed chunks stay searchable.
pub async fn mark_failed(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "WITH failed AS (
             UPDATE documents SET status = 'failed', error = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2
             RETURNING id, chunk_generation
         )
         DELETE FROM chunks c USING failed f WHERE c.document_id = f.id AND c.generation <> f.chunk_generation",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}

/// Queues the document again (re-index); `None` if it does not exist.
pub async fn mark_queued(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<Document>> {
    sqlx::query_as(
        "UPDATE documents SET status = 'queued', error = NULL, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING *",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Marks the document indexed, showing the chunks of `chunk_generation`.
pub async fn mark_indexed(
    db: impl PgExecutor<'_>,
    id: Uuid,
    chunk_generation: i64,
    chunk_count: i32,
    token_count: i32,
    embedding_model: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE documents SET status = 'indexed', error = NULL, chunk_count = $2, token_count = $3,
                embedding_model = $4, chunk_generation = $5, indexed_at = now(), updated_at = now(), sweeps = 0,
                paused_until = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(chunk_count)
    .bind(token_count)
    .bind(embedding_model)
    .bind(chunk_generation)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_summary(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid, summary: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE documents SET summary = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .bind(summary)
        .execute(db)
        .await?;
    Ok(())
}

/// Ids of the tenant's documents matching the filter (for batch operations).
pub async fn ids(db: impl PgExecutor<'_>, tenant_id: Uuid, filter: &DocumentFilter) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM documents
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR collection = $3)
           AND ($4::uuid[] IS NULL OR id = ANY($4))
         ORDER BY created_at",
    )
    .bind(tenant_id)
    .bind(filter.status.map(DocumentStatus::as_str))
    .bind(&filter.collection)
    .bind(&filter.ids)
    .fetch_all(db)
    .await
}

/// Queues many documents again (re-index); returns their ids.
/// A document's status before a re-index queued it, so a failed enqueue can put it back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PriorStatus {
    pub id: Uuid,
    pub status: DocumentStatus,
    pub error: Option<String>,
}

/// Marks the documents `queued` for re-indexing and returns what each was before.
pub async fn mark_many_queued(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<Vec<PriorStatus>> {
    sqlx::query_as(
        "UPDATE documents d SET status = 'queued', error = NULL, updated_at = now(), sweeps = 0
         FROM (SELECT id, status, error FROM documents WHERE tenant_id = $1 AND id = ANY($2) FOR UPDATE) prior
         WHERE d.id = prior.id
         RETURNING d.id, prior.status, prior.error",
    )
    .bind(tenant_id)
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Undoes [`mark_many_queued`] for documents no job has touched since (still `queued`).
pub async fn restore_status(db: impl PgExecutor<'_>, tenant_id: Uuid, prior: &[PriorStatus]) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = prior.iter().map(|p| p.id).collect();
    let statuses: Vec<&str> = prior.iter().map(|p| p.status.as_str()).collect();
    let errors: Vec<Option<&str>> = prior.iter().map(|p| p.error.as_deref()).collect();
    sqlx::query(
        "UPDATE documents d SET status = p.status, error = p.error, updated_at = now()
         FROM unnest($2::uuid[], $3::text[], $4::text[]) AS p(id, status, error)
         WHERE d.tenant_id = $1 AND d.id = p.id AND d.status = 'queued'",
    )
    .bind(tenant_id)
    .bind(&ids)
    .bind(&statuses)
    .bind(&errors)
    .execute(db)
    .await?;
    Ok(())
}

/// A job was interrupted (shutdown, deadline): the document waits for the
/// message's next delivery, so say `queued`, with why the last attempt stopped.
pub async fn requeue(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid, reason: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE documents SET status = 'queued', error = $3, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND status = 'processing'",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}

/// Indexing waits for the tenant's budget: the document stays `queued`, with
/// the reason, until the sweeper resumes it (at `until`, or sooner if the limit is raised).
pub async fn pause(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    reason: &str,
    until: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE documents SET status = 'queued', error = $3, paused_until = $4, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'processing')",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(reason)
    .bind(until)
    .execute(db)
    .await?;
    Ok(())
}

/// Ends the pause of up to `limit` budget-paused documents that may have room
/// now: their pause ran out (the period reset), or their tenant's limits
/// changed since they paused (raised, or removed). Returns (tenant, document)
/// pairs, whose jobs the caller sends again. Whether a document fits is not
/// guessed here: a job that still finds no room pauses again.
pub async fn resume_paused(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    sqlx::query_as(
        "UPDATE documents SET paused_until = NULL, error = NULL, updated_at = now()
         WHERE id IN (SELECT d.id FROM documents d LEFT JOIN budgets b ON b.tenant_id = d.tenant_id
                      WHERE d.paused_until IS NOT NULL
                        AND (d.paused_until <= now() OR b.tenant_id IS NULL OR b.updated_at > d.updated_at)
                      ORDER BY d.created_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED)
         RETURNING tenant_id, id",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How many documents wait for their tenant's budget.
pub async fn count_paused(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM documents WHERE paused_until IS NOT NULL").fetch_one(db).await
}

/// A document the sweeper looks at: unfinished and untouched for a while.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unfinished {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub sweeps: i32,
    pub updated_at: DateTime<Utc>,
}

/// Documents `queued` or `processing` and not updated for `idle_secs`, oldest
/// first (not those paused by their budget: they wait on purpose).
pub async fn unfinished(db: impl PgExecutor<'_>, idle_secs: f64, limit: i64) -> sqlx::Result<Vec<Unfinished>> {
    sqlx::query_as(
        "SELECT id, tenant_id, sweeps, updated_at FROM documents
         WHERE status IN ('queued', 'processing') AND paused_until IS NULL
           AND updated_at < now() - make_interval(secs => $1)
         ORDER BY updated_at LIMIT $2",
    )
    .bind(idle_secs)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Records that the sweeper sent these documents' jobs again.
pub async fn record_sweep(db: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE documents SET status = 'queued', sweeps = sweeps + 1, updated_at = now()
         WHERE id = ANY($1) AND status IN ('queued', 'processing')",
    )
    .bind(ids)
    .execute(db)
    .await?;
    Ok(())
}

/// Fails unfinished documents for good, with the reason (and without their unpublished chunks).
pub async fn fail_unfinished(db: impl PgExecutor<'_>, ids: &[Uuid], reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "WITH failed AS (
             UPDATE documents SET status = 'failed', error = $2, updated_at = now()
             WHERE id = ANY($1) AND status IN ('queued', 'processing')
             RETURNING id, chunk_generation
         )
         DELETE FROM chunks c USING failed f WHERE c.document_id = f.id AND c.generation <> f.chunk_generation",
    )
    .bind(ids)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}

/// Documents that failed within the last `secs` (all tenants).
pub async fn failed_since(db: impl PgExecutor<'_>, secs: f64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM documents WHERE status = 'failed' AND updated_at > now() - make_interval(secs => $1)",
    )
    .bind(secs)
    .fetch_one(db)
    .await
}

/// Which of these ids have a document row (in any tenant).
pub async fn existing(db: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("SELECT id FROM documents WHERE id = ANY($1)").bind(ids).fetch_all(db).await
}

/// One page of the sweeper's listing of originals against the documents table.
/// Of the documents in the key range `(after, upto]` (tenant, then id: the
/// listing's order) created before `before`, those not in `present` are marked
/// missing their original (the first time only) and those in it lose the mark.
/// Returns the newly marked ones.
pub async fn reconcile_originals(
    db: impl PgExecutor<'_>,
    after: (Uuid, Uuid),
    upto: (Uuid, Uuid),
    present: &[Uuid],
    before: DateTime<Utc>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "WITH span AS (
             SELECT id, id = ANY($5) AS present, original_missing_since IS NOT NULL AS marked FROM documents
             WHERE (tenant_id, id) > ($1, $2) AND (tenant_id, id) <= ($3, $4) AND created_at < $6
         ), found AS (
             UPDATE documents d SET original_missing_since = NULL FROM span s
             WHERE d.id = s.id AND s.present AND s.marked
         )
         UPDATE documents d SET original_missing_since = now() FROM span s
         WHERE d.id = s.id AND NOT s.present AND NOT s.marked
         RETURNING d.id",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(upto.0)
    .bind(upto.1)
    .bind(present)
    .bind(before)
    .fetch_all(db)
    .await
}

/// The database's clock, which stamps `created_at`.
pub async fn database_now(db: impl PgExecutor<'_>) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT now()").fetch_one(db).await
}

/// Marks one document's original missing (found so on reading it).
pub async fn mark_original_missing(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE documents SET original_missing_since = now()
         WHERE tenant_id = $1 AND id = $2 AND original_missing_since IS NULL",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Documents whose original is missing, across the deployment.
pub async fn count_missing_originals(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM documents WHERE original_missing_since IS NOT NULL").fetch_one(db).await
}

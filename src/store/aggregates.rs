//! Aggregate documents: those most of whose text also occurs in smaller
//! documents of the same collection (a book's print page, a concatenated
//! export). Measured from the chunks' stored shingle samples
//! (`ingest::shingles`), per collection, whenever a document of it is
//! published or deleted.
//!
//! Kept right under concurrency without a queue of its own: the change and a
//! bump of the collection's row in `aggregate_marks_stale` commit together;
//! after committing, the task measures the collection and deletes the row only
//! if its version is still the one it read before measuring. Measurements of
//! one collection take turns (a transaction-scoped advisory lock): a task that
//! finds one running leaves its change to it, and the running one measures
//! again if the version moved meanwhile. Each measurement is one statement, so
//! it sees every change committed before it starts. A row left by a task that
//! died is measured by the sweeper.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A document is an aggregate when at least this share of its sampled
/// passages also occurs in smaller documents of its collection.
pub const AGGREGATE_SHARE: f32 = 0.5;

/// A passage found in more documents of the collection than this is
/// boilerplate (a footer, the options section every command page of a manual
/// repeats), not content an aggregate gathers: it counts neither for nor
/// against a document. (Counting it marked 60 of the Cargo book's 106 pages.)
pub const MAX_SHARED_BY: i64 = 4;

/// Documents with fewer distinct shingle samples (boilerplate left out) than this (about 500 words) are never
/// marked: an aggregate gathers several pages, and short pages that share
/// boilerplate (the Rust book's 200 "this edition moved" stubs) are not one.
pub const MIN_SAMPLES: i64 = 32;

/// Records, in the caller's transaction, that the collection changed.
pub async fn mark_stale(db: impl PgExecutor<'_>, tenant_id: Uuid, collection: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO aggregate_marks_stale (tenant_id, collection) VALUES ($1, $2)
         ON CONFLICT (tenant_id, collection)
         DO UPDATE SET version = aggregate_marks_stale.version + 1, changed_at = now()",
    )
    .bind(tenant_id)
    .bind(collection)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Measured; the marks reflect every change committed before.
    Measured,
    /// Nothing had changed.
    UpToDate,
    /// Another task is measuring the collection and will see this change.
    Busy,
}

/// Measures the collection's aggregate marks again if they are stale.
pub async fn refresh(db: &PgPool, tenant_id: Uuid, collection: &str) -> sqlx::Result<Refresh> {
    loop {
        let mut tx = db.begin().await?;
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('aggregate_marks/' || $1::text || '/' || $2, 0))",
        )
        .bind(tenant_id)
        .bind(collection)
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            return Ok(Refresh::Busy);
        }
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM aggregate_marks_stale WHERE tenant_id = $1 AND collection = $2")
                .bind(tenant_id)
                .bind(collection)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(version) = version else { return Ok(Refresh::UpToDate) };
        measure(&mut *tx, tenant_id, collection).await?;
        let done =
            sqlx::query("DELETE FROM aggregate_marks_stale WHERE tenant_id = $1 AND collection = $2 AND version = $3")
                .bind(tenant_id)
                .bind(collection)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        if done.rows_affected() == 1 {
            return Ok(Refresh::Measured);
        }
        // The collection changed while it was measured: measure again.
    }
}

/// Sets `aggregate` and `aggregate_share` of every document of the
/// collection: the share of a document's distinct samples (those in at most
/// [`MAX_SHARED_BY`] documents) that some smaller document (fewer samples)
/// also holds. Smaller, so that a chapter, whose
/// every passage the print page repeats, is not marked for it; and documents
/// of equal size (mirrored copies) are not marked for each other: search folds
/// those (`retrieval::collapse`). Only rows whose mark changes are written.
async fn measure(db: impl PgExecutor<'_>, tenant_id: Uuid, collection: &str) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "WITH samples AS (
             SELECT DISTINCT c.document_id, s.hash
             FROM documents d
             JOIN chunks c ON c.document_id = d.id AND c.generation = d.chunk_generation
             CROSS JOIN LATERAL unnest(c.shingles) AS s(hash)
             WHERE d.tenant_id = $1 AND d.collection = $2
         ), sizes AS (
             SELECT document_id, count(*) AS samples FROM samples GROUP BY document_id
         ), holders AS (
             SELECT s.hash, min(z.samples) AS smallest, count(*) AS documents
             FROM samples s JOIN sizes z USING (document_id) GROUP BY s.hash
         ), shares AS (
             SELECT s.document_id, count(*) AS samples,
                    (count(*) FILTER (WHERE h.smallest < z.samples))::real / count(*) AS share
             FROM samples s JOIN sizes z USING (document_id) JOIN holders h USING (hash)
             WHERE h.documents <= $5
             GROUP BY s.document_id
         ), marks AS (
             SELECT x.id, coalesce(sh.samples >= $3 AND sh.share >= $4, false) AS aggregate,
                    CASE WHEN sh.samples >= $3 THEN sh.share END AS share
             FROM documents x LEFT JOIN shares sh ON sh.document_id = x.id
             WHERE x.tenant_id = $1 AND x.collection = $2
         )
         UPDATE documents d SET aggregate = m.aggregate, aggregate_share = m.share
         FROM marks m
         WHERE d.id = m.id AND (d.aggregate, d.aggregate_share) IS DISTINCT FROM (m.aggregate, m.share)",
    )
    .bind(tenant_id)
    .bind(collection)
    .bind(MIN_SAMPLES)
    .bind(AGGREGATE_SHARE)
    .bind(MAX_SHARED_BY)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Collections whose marks are stale (their task died before measuring, or
/// left it to one that failed, or one is measuring now), oldest first.
pub async fn stale(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as("SELECT tenant_id, collection FROM aggregate_marks_stale ORDER BY changed_at LIMIT $1")
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Chunks written before shingle samples were stored (migration 0013): up to
/// `limit` of them, with their text, to be sampled.
pub async fn unsampled_chunks(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as("SELECT id, content FROM chunks WHERE shingles IS NULL LIMIT $1").bind(limit).fetch_all(db).await
}

/// Stores the samples of chunks written before they were, and marks their
/// collections stale.
pub async fn store_samples(db: &PgPool, ids: &[Uuid], samples: &[Vec<i64>]) -> sqlx::Result<()> {
    let samples = super::chunks::json_arrays(samples.iter());
    let mut tx = db.begin().await?;
    let collections: Vec<(Uuid, String)> = sqlx::query_as(
        "WITH updated AS (
             UPDATE chunks c SET shingles = ARRAY(SELECT jsonb_array_elements_text(u.samples::jsonb)::int8)
             FROM UNNEST($1::uuid[], $2::text[]) AS u(id, samples)
             WHERE c.id = u.id AND c.shingles IS NULL
             RETURNING c.document_id
         )
         SELECT DISTINCT d.tenant_id, d.collection FROM updated JOIN documents d ON d.id = updated.document_id",
    )
    .bind(ids)
    .bind(&samples)
    .fetch_all(&mut *tx)
    .await?;
    for (tenant_id, collection) in &collections {
        mark_stale(&mut *tx, *tenant_id, collection).await?;
    }
    tx.commit().await
}

//! `chunks` and their embeddings: written in bulk (arrays unnested server-side)
//! under a generation per indexing attempt; a document shows one generation, so
//! a redelivered job leaves exactly one set visible, and the others are deleted
//! when a generation is published.

use std::collections::HashMap;

use pgvector::Vector;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub use crate::ingest::chunk::Chunk;

/// Existing embeddings of this tenant, by chunk content hash, for `model`.
pub async fn embeddings_by_hash(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    model: &str,
    hashes: &[String],
) -> sqlx::Result<HashMap<String, Vector>> {
    let rows: Vec<(String, Vector)> = sqlx::query_as(
        "SELECT DISTINCT ON (c.content_hash) c.content_hash, e.embedding
         FROM chunks c JOIN chunk_embeddings e ON e.chunk_id = c.id AND e.model = $2
         WHERE c.tenant_id = $1 AND c.content_hash = ANY($3)",
    )
    .bind(tenant_id)
    .bind(model)
    .bind(hashes)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Writes chunks and their embeddings for `model` under `generation`: unseen
/// by search and listings until the document points at that generation.
pub async fn insert(
    db: &mut PgConnection,
    tenant_id: Uuid,
    document_id: Uuid,
    generation: i64,
    model: &str,
    chunks: &[Chunk],
    embeddings: Vec<Vector>,
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = chunks.iter().map(|_| Uuid::now_v7()).collect();
    let heading_paths = json_arrays(chunks.iter().map(|c| &c.heading_path));
    let shingles = json_arrays(chunks.iter().map(|c| &c.shingles));
    sqlx::query(
        "INSERT INTO chunks (id, tenant_id, document_id, generation, ordinal, content, content_hash, token_count,
                             heading_path, start_offset, end_offset, context, shingles)
         SELECT u.id, $2, $3, $12, u.ordinal, u.content, u.content_hash, u.token_count,
                ARRAY(SELECT jsonb_array_elements_text(u.heading_path::jsonb)), u.start_offset, u.end_offset, u.context,
                ARRAY(SELECT jsonb_array_elements_text(u.shingles::jsonb)::int8)
         FROM UNNEST($1::uuid[], $4::int4[], $5::text[], $6::text[], $7::int4[], $8::text[], $9::int4[], $10::int4[],
                     $11::text[], $13::text[])
              AS u(id, ordinal, content, content_hash, token_count, heading_path, start_offset, end_offset, context,
                   shingles)",
    )
    .bind(&ids)
    .bind(tenant_id)
    .bind(document_id)
    .bind(chunks.iter().map(|c| c.ordinal).collect::<Vec<_>>())
    .bind(chunks.iter().map(|c| c.content.clone()).collect::<Vec<_>>())
    .bind(chunks.iter().map(|c| c.content_hash.clone()).collect::<Vec<_>>())
    .bind(chunks.iter().map(|c| c.token_count).collect::<Vec<_>>())
    .bind(heading_paths)
    .bind(chunks.iter().map(|c| c.start_offset).collect::<Vec<_>>())
    .bind(chunks.iter().map(|c| c.end_offset).collect::<Vec<_>>())
    .bind(chunks.iter().map(|c| c.context.clone()).collect::<Vec<_>>())
    .bind(generation)
    .bind(shingles)
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "INSERT INTO chunk_embeddings (chunk_id, tenant_id, model, embedding)
         SELECT u.chunk_id, $2, $3, u.embedding FROM UNNEST($1::uuid[], $4::vector[]) AS u(chunk_id, embedding)",
    )
    .bind(&ids)
    .bind(tenant_id)
    .bind(model)
    .bind(embeddings)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// One JSON array per row, for binding as `text[]` and unnesting with
/// `jsonb_array_elements_text`: Postgres arrays of arrays must be rectangular,
/// and a chunk's heading path or shingle samples have any length.
pub(super) fn json_arrays<'a, T: serde::Serialize + 'a>(rows: impl Iterator<Item = &'a Vec<T>>) -> Vec<String> {
    rows.map(|row| serde_json::to_string(row).unwrap_or_else(|_| "[]".into())).collect()
}

/// Records that `generation` is being written in slices, before each slice
/// commits: keyword search hides the chunks of open generations, and the
/// sweeper deletes those of attempts that died. Idempotent, so that a slice
/// written after the sweeper gave its attempt up is hidden again.
pub async fn open_generation(db: impl PgExecutor<'_>, document_id: Uuid, generation: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO chunk_generations_open (generation, document_id) VALUES ($1, $2)
         ON CONFLICT (generation) DO NOTHING",
    )
    .bind(generation)
    .bind(document_id)
    .execute(db)
    .await?;
    Ok(())
}

/// `generation` is published or discarded: no longer being written.
pub async fn close_generation(db: impl PgExecutor<'_>, generation: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM chunk_generations_open WHERE generation = $1").bind(generation).execute(db).await?;
    Ok(())
}

/// Deletes the chunks of generations opened more than `older_than_secs` ago
/// and never closed (their attempt died), unless a document shows one;
/// returns how many generations were abandoned.
pub async fn delete_abandoned_generations(db: impl PgExecutor<'_>, older_than_secs: f64) -> sqlx::Result<u64> {
    sqlx::query_scalar(
        "WITH abandoned AS (
             DELETE FROM chunk_generations_open WHERE opened_at < now() - make_interval(secs => $1)
             RETURNING generation, document_id
         ), deleted AS (
             DELETE FROM chunks c USING abandoned a, documents d
             WHERE c.document_id = a.document_id AND c.generation = a.generation
               AND d.id = a.document_id AND d.chunk_generation <> a.generation
         )
         SELECT count(*) FROM abandoned",
    )
    .bind(older_than_secs)
    .fetch_one(db)
    .await
    .map(|n: i64| n as u64)
}

/// How many chunks of the document's `generation` are written.
pub async fn count_generation(db: impl PgExecutor<'_>, document_id: Uuid, generation: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM chunks WHERE document_id = $1 AND generation = $2")
        .bind(document_id)
        .bind(generation)
        .fetch_one(db)
        .await
}

/// Deletes the document's chunks of every generation but `keep`.
pub async fn delete_other_generations(db: impl PgExecutor<'_>, document_id: Uuid, keep: i64) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM chunks WHERE document_id = $1 AND generation <> $2")
        .bind(document_id)
        .bind(keep)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Replaces the document's chunks and their embeddings for `model` at once,
/// under the generation it shows (loaders and benchmarks; indexing jobs write
/// in slices and then switch generations).
pub async fn replace(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    document_id: Uuid,
    model: &str,
    chunks: &[Chunk],
    embeddings: Vec<Vector>,
) -> sqlx::Result<()> {
    let generation: i64 = sqlx::query_scalar("SELECT chunk_generation FROM documents WHERE id = $1")
        .bind(document_id)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM chunks WHERE document_id = $1").bind(document_id).execute(&mut *tx).await?;
    insert(tx, tenant_id, document_id, generation, model, chunks, embeddings).await
}

/// A chunk as a document's chunk listing reads it.
#[derive(Debug, sqlx::FromRow)]
pub struct ChunkRow {
    pub id: Uuid,
    pub ordinal: i32,
    pub content: String,
    pub token_count: i32,
    pub heading_path: Vec<String>,
    pub start_offset: i32,
    pub end_offset: i32,
}

pub async fn list_for_document(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    document_id: Uuid,
    after_ordinal: i32,
    limit: i64,
) -> sqlx::Result<Vec<ChunkRow>> {
    sqlx::query_as(
        "SELECT c.id, c.ordinal, c.content, c.token_count, c.heading_path, c.start_offset, c.end_offset
         FROM chunks c JOIN documents d ON d.id = c.document_id AND c.generation = d.chunk_generation
         WHERE d.tenant_id = $1 AND d.id = $2 AND c.ordinal > $3
         ORDER BY c.ordinal LIMIT $4",
    )
    .bind(tenant_id)
    .bind(document_id)
    .bind(after_ordinal)
    .bind(limit)
    .fetch_all(db)
    .await
}

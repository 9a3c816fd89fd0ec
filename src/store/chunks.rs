//! `chunks` and their embeddings: written in bulk (arrays unnested server-side),
//! replaced per document in one transaction so a redelivered job leaves exactly
//! one set.

use std::collections::HashMap;

use pgvector::Vector;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

/// A chunk of a document's extracted text, as chunking makes it and this table stores it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Chunk {
    pub ordinal: i32,
    pub content: String,
    /// The document title and heading path this chunk sits under, embedded and
    /// keyword-indexed with it ("Title > Chapter > Section").
    pub context: String,
    /// SHA-256 of the embedded text (context and content): embeddings are reused
    /// across re-indexing by it.
    pub content_hash: String,
    pub token_count: i32,
    /// The Markdown headings this chunk sits under, outermost first.
    pub heading_path: Vec<String>,
    /// Byte offsets into the extracted text.
    pub start_offset: i32,
    pub end_offset: i32,
}

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

/// Replaces the document's chunks and their embeddings for `model`.
pub async fn replace(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    document_id: Uuid,
    model: &str,
    chunks: &[Chunk],
    embeddings: Vec<Vector>,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM chunks WHERE document_id = $1").bind(document_id).execute(&mut *tx).await?;
    let ids: Vec<Uuid> = chunks.iter().map(|_| Uuid::now_v7()).collect();
    let heading_paths: Vec<String> =
        chunks.iter().map(|c| serde_json::to_string(&c.heading_path).unwrap_or_else(|_| "[]".into())).collect();
    sqlx::query(
        "INSERT INTO chunks (id, tenant_id, document_id, ordinal, content, content_hash, token_count,
                             heading_path, start_offset, end_offset, context)
         SELECT u.id, $2, $3, u.ordinal, u.content, u.content_hash, u.token_count,
                ARRAY(SELECT jsonb_array_elements_text(u.heading_path::jsonb)), u.start_offset, u.end_offset, u.context
         FROM UNNEST($1::uuid[], $4::int4[], $5::text[], $6::text[], $7::int4[], $8::text[], $9::int4[], $10::int4[],
                     $11::text[])
              AS u(id, ordinal, content, content_hash, token_count, heading_path, start_offset, end_offset, context)",
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
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO chunk_embeddings (chunk_id, tenant_id, model, embedding)
         SELECT u.chunk_id, $2, $3, u.embedding FROM UNNEST($1::uuid[], $4::vector[]) AS u(chunk_id, embedding)",
    )
    .bind(&ids)
    .bind(tenant_id)
    .bind(model)
    .bind(embeddings)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct ChunkView {
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
) -> sqlx::Result<Vec<ChunkView>> {
    sqlx::query_as(
        "SELECT id, ordinal, content, token_count, heading_path, start_offset, end_offset
         FROM chunks WHERE tenant_id = $1 AND document_id = $2 AND ordinal > $3
         ORDER BY ordinal LIMIT $4",
    )
    .bind(tenant_id)
    .bind(document_id)
    .bind(after_ordinal)
    .bind(limit)
    .fetch_all(db)
    .await
}

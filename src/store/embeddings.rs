//! `chunk_embeddings`: vectors per (chunk, model), and the per-model HNSW index.
//!
//! Why an untyped `vector` column plus a partial expression index per model,
//! rather than a `vector(1536)` column: the model and its dimension are
//! configuration. A new model gets its own index, created at start-up with no
//! hand-written migration, while the old model's vectors and index keep serving
//! searches until a re-index to the new one completes. Queries must use the same
//! expression (`embedding::vector(<dim>)`) and `model = '<model>'` predicate for
//! the planner to pick the index.

use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The index name for a model and dimension: stable, short, and safe to splice.
pub fn index_name(model: &str, dims: usize) -> String {
    let digest = Sha256::digest(format!("{model}:{dims}").as_bytes());
    format!("chunk_embeddings_hnsw_{}", &hex::encode(digest)[..12])
}

/// Creates the model's HNSW (cosine) index unless it exists. Concurrently, so a
/// deploy that adds a model never blocks writers; an advisory lock keeps two
/// starting tasks from building it twice.
pub async fn ensure_index(db: &PgPool, model: &str, dims: usize) -> sqlx::Result<()> {
    let name = index_name(model, dims);
    let mut conn = db.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))").bind(&name).execute(&mut *conn).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1)")
        .bind(&name)
        .fetch_one(&mut *conn)
        .await?;
    let result = if exists {
        Ok(())
    } else {
        let literal = model.replace('\'', "''");
        let sql = format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON chunk_embeddings \
             USING hnsw ((embedding::vector({dims})) vector_cosine_ops) WHERE model = '{literal}'"
        );
        tracing::info!(index = %name, model, dims, "creating the HNSW index for the embedding model");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.map(|_| ())
    };
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))").bind(&name).execute(&mut *conn).await?;
    result
}

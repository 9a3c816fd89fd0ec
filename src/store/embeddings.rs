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

/// Creates the model's HNSW (cosine) index unless a valid one exists.
/// Concurrently, so a deploy that adds a model never blocks writers; an
/// advisory lock keeps the tasks of a fleet starting together from building it
/// twice. The lock is taken with `pg_try_advisory_lock` in a loop, never by
/// waiting inside `pg_advisory_lock`: `CREATE INDEX CONCURRENTLY` waits for
/// every other session's running statement to finish, and a statement blocked
/// on the lock never would (Postgres reports that as a deadlock, which is how
/// two of three tasks started together used to die).
pub async fn ensure_index(db: &PgPool, model: &str, dims: usize) -> sqlx::Result<()> {
    let name = index_name(model, dims);
    let mut conn = db.acquire().await?;
    loop {
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))").bind(&name).fetch_one(&mut *conn).await?;
        if locked {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let result = create_unless_valid(&mut conn, &name, model, dims).await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))").bind(&name).execute(&mut *conn).await?;
    result
}

async fn create_unless_valid(conn: &mut sqlx::PgConnection, name: &str, model: &str, dims: usize) -> sqlx::Result<()> {
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    match valid {
        Some(true) => return Ok(()),
        // A build interrupted half-way (a task killed during it) leaves an invalid index behind.
        Some(false) => {
            tracing::warn!(index = %name, "dropping an invalid (interrupted) HNSW index to build it again");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX CONCURRENTLY IF EXISTS {name}")))
                .execute(&mut *conn)
                .await?;
        }
        None => {}
    }
    let literal = model.replace('\'', "''");
    let sql = format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON chunk_embeddings \
         USING hnsw ((embedding::vector({dims})) vector_cosine_ops) WHERE model = '{literal}'"
    );
    tracing::info!(index = %name, model, dims, "creating the HNSW index for the embedding model");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.map(|_| ())
}

//! Retrieval queries: nearest chunks by vector (HNSW), by full-text rank, both
//! tenant-scoped with collection and metadata filters applied inside the SQL.

use serde::Serialize;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

/// One retrieved chunk.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Hit {
    pub chunk_id: Uuid,
    pub document_id: Uuid,
    pub title: String,
    pub collection: String,
    pub content: String,
    pub heading_path: Vec<String>,
    pub start_offset: i32,
    pub end_offset: i32,
    /// Mode-specific: cosine similarity, text rank, or fused score.
    pub score: f64,
}

/// Restrictions every search applies in SQL: tenant always, collection and
/// metadata when given.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub tenant_id: Uuid,
    pub collection: Option<String>,
    /// Each entry: documents whose metadata contains at least one of these objects
    /// (one object for equality, several for `in`).
    pub metadata_any: Vec<Vec<serde_json::Value>>,
}

fn push_scope(q: &mut QueryBuilder<Postgres>, scope: &Scope) {
    q.push(" AND d.tenant_id = ").push_bind(scope.tenant_id);
    if let Some(collection) = &scope.collection {
        q.push(" AND d.collection = ").push_bind(collection.clone());
    }
    for alternatives in &scope.metadata_any {
        q.push(" AND d.metadata @> ANY(").push_bind(alternatives.clone()).push("::jsonb[])");
    }
}

/// Nearest chunks by cosine distance through the model's HNSW index. Iterative
/// index scans (pgvector 0.8) keep scanning until `k` rows pass the filters, so
/// a selective filter does not starve the result.
pub async fn vector(
    conn: &mut PgConnection,
    scope: &Scope,
    model: &str,
    dims: usize,
    embedding: &[f32],
    k: i64,
    ef_search: u32,
) -> sqlx::Result<Vec<Hit>> {
    // Settings are per transaction; the caller wraps this in one.
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL hnsw.ef_search = {}", ef_search.clamp(1, 1000))))
        .execute(&mut *conn)
        .await?;
    sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order").execute(&mut *conn).await?;
    // The model and dimension are spliced as literals: the partial expression
    // index only matches a query that repeats its exact predicate and expression.
    let model = model.replace('\'', "''");
    let vector = pgvector::Vector::from(embedding.to_vec());
    let mut q = QueryBuilder::new(format!(
        "SELECT c.id AS chunk_id, c.document_id, d.title, d.collection, c.content, c.heading_path,
                c.start_offset, c.end_offset, (1 - (e.embedding::vector({dims}) <=> "
    ));
    q.push_bind(vector.clone()).push(format!(
        "::vector({dims})))::float8 AS score
         FROM chunk_embeddings e
         JOIN chunks c ON c.id = e.chunk_id
         JOIN documents d ON d.id = c.document_id
         WHERE e.model = '{model}' AND d.embedding_model = e.model AND e.tenant_id = "
    ));
    q.push_bind(scope.tenant_id);
    push_scope(&mut q, scope);
    q.push(format!(" ORDER BY e.embedding::vector({dims}) <=> "))
        .push_bind(vector)
        .push(format!("::vector({dims}) LIMIT "))
        .push_bind(k);
    q.build_query_as().fetch_all(&mut *conn).await
}

/// Best chunks by full-text rank (`websearch_to_tsquery`, English).
pub async fn keyword(conn: &mut PgConnection, scope: &Scope, query: &str, k: i64) -> sqlx::Result<Vec<Hit>> {
    let mut q = QueryBuilder::new(
        "SELECT c.id AS chunk_id, c.document_id, d.title, d.collection, c.content, c.heading_path,
                c.start_offset, c.end_offset, ts_rank_cd(c.tsv, query)::float8 AS score
         FROM chunks c
         JOIN documents d ON d.id = c.document_id,
              websearch_to_tsquery('english', ",
    );
    q.push_bind(query.to_string()).push(") AS query WHERE c.tsv @@ query AND c.tenant_id = ");
    q.push_bind(scope.tenant_id);
    push_scope(&mut q, scope);
    q.push(" ORDER BY score DESC, c.id LIMIT ").push_bind(k);
    q.build_query_as().fetch_all(&mut *conn).await
}

/// Embedding models other than `current` that some of the tenant's documents
/// are still indexed with, and their dimensions.
pub async fn other_models(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Uuid,
    current: &str,
) -> sqlx::Result<Vec<(String, i32)>> {
    // Two range conditions instead of `<>`, so both halves use the index.
    sqlx::query_as(
        "SELECT m.model, (SELECT vector_dims(e.embedding) FROM chunk_embeddings e
                          WHERE e.model = m.model AND e.tenant_id = $1 LIMIT 1) AS dims
         FROM (SELECT DISTINCT embedding_model AS model FROM documents
               WHERE tenant_id = $1 AND (embedding_model < $2 OR embedding_model > $2)) m",
    )
    .bind(tenant_id)
    .bind(current)
    .fetch_all(db)
    .await
    .map(|rows: Vec<(String, Option<i32>)>| rows.into_iter().filter_map(|(m, d)| d.map(|d| (m, d))).collect())
}

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

impl Hit {
    /// Where the passage comes from, as prompts show it: `title › heading › heading`.
    pub fn source_label(&self) -> String {
        if self.heading_path.is_empty() {
            self.title.clone()
        } else {
            format!("{} › {}", self.title, self.heading_path.join(" › "))
        }
    }
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
    // Settings are per transaction (`SET LOCAL`); the caller wraps this in one.
    sqlx::query(
        "SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
    )
    .bind(ef_search.clamp(1, 1000).to_string())
    .execute(&mut *conn)
    .await?;
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

/// BM25's term-frequency saturation and length normalisation (the usual defaults).
const BM25_K1: f64 = 1.2;
const BM25_B: f64 = 0.75;

/// Each query term contributes at most this many chunks as candidates. Terms
/// rarer than this are counted and ranked exactly; a term in more chunks than
/// this is common enough that its own matches add little, so it brings a sample
/// and still scores the candidates the rarer terms found. The cost of a search
/// is then bounded by terms x this, however many rows match.
pub const TERM_CANDIDATES: i64 = 2_000;

/// At most this many distinct words of a query are searched for: a pasted
/// paragraph must not turn into a hundred index scans.
pub const MAX_QUERY_TERMS: usize = 16;

/// Best chunks for a question, ranked like BM25: a chunk matching *some* of the
/// query's words scores the sum over those words of their inverse document
/// frequency (rare words count more; English stop words, dropped by
/// `to_tsvector`, nothing), with stemming, longer chunks damped. A word in the
/// chunk's context (title and headings) counts as a second occurrence.
///
/// Each word is one index scan (GIN on `tsv`) of at most [`TERM_CANDIDATES`]
/// rows inside the caller's scope, so the cost is bounded by the words of the
/// query, not by the rows that match. Document frequencies come from those same
/// scans (exact below the cap, capped above), so they are never stale and need
/// no table kept in step with every write.
pub async fn keyword(conn: &mut PgConnection, scope: &Scope, query: &str, k: i64) -> sqlx::Result<Vec<Hit>> {
    // Postgres's own parser and stemmer make the terms, as they made the index.
    let mut terms: Vec<String> = sqlx::query_scalar(
        "SELECT lexeme FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS lexeme ORDER BY lexeme",
    )
    .bind(query)
    .fetch_all(&mut *conn)
    .await?;
    terms.truncate(MAX_QUERY_TERMS);
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::new("WITH matches AS (");
    for (i, term) in terms.iter().enumerate() {
        if i > 0 {
            q.push(" UNION ALL ");
        }
        // One branch per word, its lexeme a bound value: the planner sees each
        // match as an index condition of its own.
        q.push(format!("(SELECT {i} AS term, c.id AS chunk_id, c.token_count, c.tsv @@ keyword_lexeme("));
        q.push_bind(term.clone()).push(", 'B') AS in_context FROM chunks c JOIN documents d ON d.id = c.document_id");
        q.push(" WHERE c.tsv @@ keyword_lexeme(").push_bind(term.clone()).push(") AND c.tenant_id = ");
        q.push_bind(scope.tenant_id);
        push_scope(&mut q, scope);
        q.push(" LIMIT ").push_bind(TERM_CANDIDATES).push(")");
    }
    q.push(
        "), frequencies AS (
             SELECT term, count(*)::float8 AS df FROM matches GROUP BY term
         ), corpus AS (
             SELECT greatest(sum(d.chunk_count), 1)::float8 AS chunks,
                    greatest(sum(d.token_count)::float8 / greatest(sum(d.chunk_count), 1), 1) AS average_tokens
             FROM documents d WHERE d.status = 'indexed'",
    );
    push_scope(&mut q, scope);
    q.push(format!(
        "), scored AS (
             SELECT m.chunk_id, sum(
                 ln(1 + (greatest(corpus.chunks, f.df) - f.df + 0.5) / (f.df + 0.5))
                 * w.tf * ({BM25_K1} + 1)
                 / (w.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * m.token_count / corpus.average_tokens))
             ) AS score
             FROM matches m
             JOIN frequencies f USING (term)
             CROSS JOIN corpus
             CROSS JOIN LATERAL (SELECT CASE WHEN m.in_context THEN 2.0 ELSE 1.0 END AS tf) w
             GROUP BY m.chunk_id
             ORDER BY score DESC, m.chunk_id
             LIMIT "
    ));
    q.push_bind(k).push(
        ")
         SELECT c.id AS chunk_id, c.document_id, d.title, d.collection, c.content, c.heading_path,
                c.start_offset, c.end_offset, s.score::float8 AS score
         FROM scored s JOIN chunks c ON c.id = s.chunk_id JOIN documents d ON d.id = c.document_id
         ORDER BY s.score DESC, c.id",
    );
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

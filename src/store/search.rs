//! Retrieval queries: nearest chunks by vector (HNSW), by full-text rank, both
//! tenant-scoped with collection and metadata filters applied inside the SQL.

use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

/// One retrieved chunk, as retrieval works with it. The API shows it as
/// `api::views::Hit`, where its public fields are documented; the ranking
/// inputs only the server reads are documented here.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hit {
    pub chunk_id: Uuid,
    pub document_id: Uuid,
    pub title: String,
    pub collection: String,
    pub content: String,
    pub heading_path: Vec<String>,
    pub start_offset: i32,
    pub end_offset: i32,
    pub token_count: i32,
    pub score: f64,
    /// Filled by `domain::retrieval::duplicates`, not by SQL.
    #[sqlx(skip)]
    pub also_in: Vec<AlsoIn>,
    /// The document is an aggregate (`store::aggregates`); never shown.
    pub aggregate: bool,
    /// The document's length in tokens: of two copies of a passage, the one in
    /// the shorter document is the more specific. Never shown.
    pub document_tokens: i32,
}

/// A document that also holds a result's passage.
#[derive(Debug, Clone, PartialEq)]
pub struct AlsoIn {
    pub document_id: Uuid,
    pub title: String,
    pub chunk_id: Uuid,
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

/// Nearest chunks by cosine distance through the model's HNSW index, with the
/// connection's HNSW settings (`store::search_session`).
pub async fn vector(
    db: impl PgExecutor<'_>,
    scope: &Scope,
    model: &str,
    dims: usize,
    embedding: &[f32],
    k: i64,
) -> sqlx::Result<Vec<Hit>> {
    // The model and dimension are spliced as literals: the partial expression
    // index only matches a query that repeats its exact predicate and expression.
    let model = model.replace('\'', "''");
    let vector = pgvector::Vector::from(embedding.to_vec());
    let mut q = QueryBuilder::new(format!(
        "SELECT c.id AS chunk_id, c.document_id, d.title, d.collection, c.content, c.heading_path,
                c.start_offset, c.end_offset, c.token_count, d.aggregate, d.token_count AS document_tokens,
                (1 - (e.embedding::vector({dims}) <=> "
    ));
    q.push_bind(vector.clone()).push(format!(
        "::vector({dims})))::float8 AS score
         FROM chunk_embeddings e
         JOIN chunks c ON c.id = e.chunk_id
         JOIN documents d ON d.id = c.document_id
         WHERE e.model = '{model}' AND d.embedding_model = e.model AND c.generation = d.chunk_generation
           AND e.tenant_id = "
    ));
    q.push_bind(scope.tenant_id);
    push_scope(&mut q, scope);
    // `k` is a literal too: with a bound LIMIT the generic plan is a sequential
    // scan, so every execution was planned afresh (~0.4 ms); with a literal one
    // Postgres settles on the index plan and plans the statement once per connection.
    q.push(format!(" ORDER BY e.embedding::vector({dims}) <=> "))
        .push_bind(vector)
        .push(format!("::vector({dims}) LIMIT {k}"));
    q.build_query_as().fetch_all(db).await
}

/// A search within a collection or a metadata filter reads, per word, at most
/// this many matching chunks inside the scope (GIN on `tsv`): the postings are
/// per tenant, and their top entries may all lie outside a narrow scope.
pub const SCOPED_TERM_CANDIDATES: i64 = 2_000;

/// At most this many distinct words of a query are searched for: a pasted
/// paragraph must not turn into a hundred index scans.
pub const MAX_QUERY_TERMS: usize = 16;

/// The query's distinct words as the index holds them: Postgres's own parser
/// and stemmer make the terms, as they made the index.
fn push_query_terms(q: &mut QueryBuilder<Postgres>, query: &str) {
    q.push("SELECT lexeme FROM unnest(tsvector_to_array(to_tsvector('english', ")
        .push_bind(query.to_string())
        .push(format!("))) AS lexeme ORDER BY lexeme LIMIT {MAX_QUERY_TERMS}"));
}

/// Best chunks for a question, ranked by BM25: a chunk matching *some* of the
/// query's words scores the sum over those words of their inverse document
/// frequency (rare words count more; English stop words, dropped by
/// `to_tsvector`, nothing) times the word's impact in the chunk (its
/// occurrences, saturated, longer chunks damped; a word of the chunk's title or
/// headings counts as two more). Impacts and frequencies are kept by the
/// database as chunks are written (migration 0007).
///
/// Across the whole tenant each word is one index-only range scan of its
/// `term_postings` best postings, so the cost is bounded by the words of the
/// query, not by the rows that match. The best candidates by those partial sums
/// are then scored exactly over every query word, so a chunk strong in a rare
/// word keeps the credit of the common word it also contains.
///
/// `term_postings` (`KEYWORD_TERM_POSTINGS`) is how many postings a word brings:
/// a word in fewer chunks than that is read completely, so rare words, the ones
/// that decide a ranking, are exact; a commoner word brings the chunks where it
/// weighs most.
pub async fn keyword(
    conn: &mut PgConnection,
    scope: &Scope,
    query: &str,
    k: i64,
    term_postings: i64,
) -> sqlx::Result<Vec<Hit>> {
    let unscoped = scope.collection.is_none() && scope.metadata_any.is_empty();
    // A scoped search needs the words before it is built (one branch each);
    // otherwise they are made inside the one statement, a round trip fewer.
    let scoped_terms = if unscoped {
        Vec::new()
    } else {
        let mut words = QueryBuilder::new("");
        push_query_terms(&mut words, query);
        let terms: Vec<String> = words.build_query_scalar().fetch_all(&mut *conn).await?;
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        terms
    };
    let mut q = QueryBuilder::new("WITH terms AS (");
    push_query_terms(&mut q, query);
    // `complete`: the word is in no more chunks than a search reads postings
    // of, so its postings are all read and a chunk missing from them lacks it.
    q.push(
        "), idf AS (
             SELECT f.lexeme, ln(1 + (greatest(n.chunks, f.chunks) - f.chunks + 0.5) / (f.chunks + 0.5)) AS idf,
                    f.chunks <= ",
    );
    q.push_bind(term_postings).push(
        " AS complete
             FROM keyword_frequencies f JOIN keyword_frequencies n ON n.tenant_id = f.tenant_id AND n.lexeme = ''
             WHERE f.chunks > 0 AND f.tenant_id = ",
    );
    q.push_bind(scope.tenant_id).push(" AND f.lexeme = ANY(ARRAY(SELECT lexeme FROM terms))), ");
    if unscoped {
        // Index-only scans of `chunk_terms_rank_idx`, one per word, in rank
        // order; postings of chunks their document does not show yet are
        // dropped before scoring. Those are exactly the chunks of open
        // generations (an attempt's committed slices; its last slice commits
        // with its publication), so the few candidates are checked against
        // that small set rather than joined to their chunks and documents
        // (which cost 1.5-2.5 ms at 100k chunks).
        //
        // The postings read already hold the exact share of every complete
        // word, so only the other words are looked up per candidate, and the
        // candidates are materialised: inlined, the planner could compute them
        // again for each word of the query. (pgbench, the 68 questions of
        // `make eval`, same rows: 2.3 ms against 2.7 on the Rust book's 2,746
        // chunks, 3.3-3.5 against 3.5-3.7 at 100k.)
        q.push(
            "candidates AS MATERIALIZED (
                 SELECT best.chunk_id, best.exact FROM (
                     SELECT p.chunk_id, coalesce(sum(idf.idf * p.impact) FILTER (WHERE idf.complete), 0) AS exact
                     FROM idf CROSS JOIN LATERAL (
                         SELECT t.chunk_id, t.impact FROM chunk_terms t
                         WHERE t.lexeme = idf.lexeme AND t.tenant_id = ",
        );
        q.push_bind(scope.tenant_id).push(" ORDER BY t.impact DESC, t.chunk_id LIMIT ").push_bind(term_postings);
        q.push(") p GROUP BY p.chunk_id ORDER BY sum(idf.idf * p.impact) DESC, p.chunk_id LIMIT ");
        q.push_bind(rescored(k));
        q.push(
            ") best WHERE best.chunk_id NOT IN (
                 SELECT u.id FROM chunk_generations_open o
                 JOIN chunks u ON u.document_id = o.document_id AND u.generation = o.generation
             )
             ), scored AS (
                 SELECT c.chunk_id, c.exact + coalesce(sum(idf.idf * t.impact), 0) AS score
                 FROM candidates c
                 LEFT JOIN chunk_terms t ON t.chunk_id = c.chunk_id
                      AND t.lexeme = ANY(ARRAY(SELECT lexeme FROM idf WHERE NOT complete))
                 LEFT JOIN idf ON idf.lexeme = t.lexeme
                 GROUP BY c.chunk_id, c.exact ORDER BY score DESC, c.chunk_id LIMIT ",
        );
        q.push_bind(k);
    } else {
        q.push("candidates AS (");
        for (i, term) in scoped_terms.iter().enumerate() {
            if i > 0 {
                q.push(" UNION ");
            }
            // One branch per word, its lexeme a bound value: the planner sees each
            // match as an index condition of its own.
            q.push("(SELECT c.id AS chunk_id FROM chunks c JOIN documents d ON d.id = c.document_id");
            q.push(" WHERE c.tsv @@ keyword_lexeme(").push_bind(term.clone());
            q.push(") AND c.generation = d.chunk_generation AND c.tenant_id = ");
            q.push_bind(scope.tenant_id);
            push_scope(&mut q, scope);
            q.push(" LIMIT ").push_bind(SCOPED_TERM_CANDIDATES).push(")");
        }
        q.push(
            "), scored AS (
                 SELECT t.chunk_id, sum(idf.idf * t.impact) AS score
                 FROM candidates c JOIN chunk_terms t ON t.chunk_id = c.chunk_id
                      AND t.lexeme = ANY(ARRAY(SELECT lexeme FROM terms))
                 JOIN idf ON idf.lexeme = t.lexeme
             GROUP BY t.chunk_id ORDER BY score DESC, t.chunk_id LIMIT ",
        );
        q.push_bind(k);
    }
    q.push(
        ")
         SELECT c.id AS chunk_id, c.document_id, d.title, d.collection, c.content, c.heading_path,
                c.start_offset, c.end_offset, c.token_count, d.aggregate, d.token_count AS document_tokens,
                s.score::float8 AS score
         FROM scored s JOIN chunks c ON c.id = s.chunk_id JOIN documents d ON d.id = c.document_id
         ORDER BY s.score DESC, c.id",
    );
    q.build_query_as().fetch_all(&mut *conn).await
}

/// Chunks inside the scope, of documents that are not aggregates, holding any
/// of the shingle samples (GIN on `chunks.shingles`): where else the passages
/// sampled occur. At most `limit` rows; scored 0.
pub async fn holding_any(
    db: impl PgExecutor<'_>,
    scope: &Scope,
    samples: &[i64],
    limit: i64,
) -> sqlx::Result<Vec<Hit>> {
    let mut q = QueryBuilder::new(
        "SELECT c.id AS chunk_id, c.document_id, d.title, d.collection, c.content, c.heading_path,
                c.start_offset, c.end_offset, c.token_count, d.aggregate, d.token_count AS document_tokens,
                0::float8 AS score
         FROM chunks c JOIN documents d ON d.id = c.document_id AND c.generation = d.chunk_generation
         WHERE NOT d.aggregate AND c.shingles && ",
    );
    q.push_bind(samples.to_vec()).push("::int8[] AND c.tenant_id = ").push_bind(scope.tenant_id);
    push_scope(&mut q, scope);
    q.push(" LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(db).await
}

/// How many candidates, best by their partial sums, are scored over every word.
fn rescored(k: i64) -> i64 {
    (k * 4).max(100)
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

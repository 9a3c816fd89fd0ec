//! Search over real pgvector and Postgres full-text search.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn search(app: &TestApp, body: Value) -> Vec<Value> {
    let response = app.post("/v1/search").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.json::<Value>().await.unwrap()["results"].as_array().unwrap().clone()
}

async fn index(app: &TestApp, docs: &[(&str, &str, Value)]) -> Vec<String> {
    app.index_all(
        docs.iter().map(|(title, text, metadata)| json!({"text": text, "title": title, "metadata": metadata})),
    )
    .await
}

/// Mean reciprocal rank of the expected title over the queries.
async fn mrr(app: &TestApp, mode: &str, labelled: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for (query, expected) in labelled {
        let results = search(app, json!({"query": query, "k": 5, "mode": mode})).await;
        if let Some(rank) = results.iter().position(|r| r["title"] == *expected) {
            total += 1.0 / (rank as f64 + 1.0);
        }
    }
    total / labelled.len() as f64
}

/// On a small labelled set, hybrid retrieval ranks the right document better
/// than vector or keyword search alone: each misses queries the other catches.
#[tokio::test]
async fn hybrid_search_beats_either_mode_alone() {
    let app = spawn_app().await;
    let corpus = [
        ("colour", "Calibrating monitor colour profiles keeps photographs consistent across screens."),
        ("borrow", "The borrow checker enforces that references never outlive the data they point to."),
        ("cargo", "Cargo downloads dependencies, compiles packages and runs the test suite."),
        ("tokio", "Tokio is an asynchronous runtime: it schedules tasks on a small pool of threads."),
        ("serde", "Serde serializes and deserializes Rust data structures efficiently and generically."),
        ("gardening", "Tomatoes need full sun, deep watering and support stakes as they grow tall."),
        ("decoy-runtime", "Runtime runtime runtime: a page that repeats one word about schedules, threads and pools."),
        ("decoy-monitor", "Monitor stands, monitor arms and monitor cables for every desk setup."),
    ];
    let docs: Vec<(&str, &str, Value)> = corpus.iter().map(|(t, x)| (*t, *x, json!({}))).collect();
    index(&app, &docs).await;
    let labelled = [
        // Misspelled: full-text search finds nothing; character trigrams still match.
        ("calibratng colur profiels", "colour"),
        ("borow checkr referenses", "borrow"),
        // Stemming: full-text search matches inflections that hashed words miss.
        ("downloading dependency compiling", "cargo"),
        ("serializing structure", "serde"),
        // Plain queries both modes should get.
        ("asynchronous runtime scheduling tasks", "tokio"),
        ("tomatoes watering", "gardening"),
    ];
    let vector = mrr(&app, "vector", &labelled).await;
    let keyword = mrr(&app, "keyword", &labelled).await;
    let hybrid = mrr(&app, "hybrid", &labelled).await;
    eprintln!("MRR vector {vector:.3}, keyword {keyword:.3}, hybrid {hybrid:.3}");
    assert!(hybrid > vector, "hybrid {hybrid} vs vector {vector}");
    assert!(hybrid > keyword, "hybrid {hybrid} vs keyword {keyword}");
}

/// Collection and metadata filters (equality and `in`) restrict results inside the query.
#[tokio::test]
async fn filters_restrict_results() {
    let app = spawn_app().await;
    let docs = [
        ("en-guide", "Ownership rules explained for beginners.", json!({"lang": "en", "tier": "free"})),
        ("de-guide", "Ownership rules explained, German edition.", json!({"lang": "de", "tier": "pro"})),
        ("fr-guide", "Ownership rules explained, French edition.", json!({"lang": "fr", "tier": "team"})),
    ];
    index(&app, &docs).await;
    let titles = |results: Vec<Value>| {
        let mut t: Vec<String> = results.iter().map(|r| r["title"].as_str().unwrap().to_string()).collect();
        t.sort();
        t
    };
    for mode in ["vector", "keyword", "hybrid"] {
        let en = search(&app, json!({"query": "ownership rules", "mode": mode, "filter": {"lang": "en"}})).await;
        assert_eq!(titles(en), ["en-guide"], "{mode}");
        let paid = search(
            &app,
            json!({"query": "ownership rules", "mode": mode, "filter": {"tier": {"in": ["pro", "team"]}}}),
        )
        .await;
        assert_eq!(titles(paid), ["de-guide", "fr-guide"], "{mode}");
        let none = search(&app, json!({"query": "ownership rules", "mode": mode, "collection": "elsewhere"})).await;
        assert!(none.is_empty(), "{mode}");
    }
    let bad = app.post("/v1/search").json(&json!({"query": "x", "filter": {"n": {"gt": 1}}})).send().await.unwrap();
    assert_eq!(bad.status(), 422);
    let bad_k = app.post("/v1/search").json(&json!({"query": "x", "k": 0})).send().await.unwrap();
    assert_eq!(bad_k.status(), 422);
}

/// Another tenant's chunks never show up, whatever the mode.
#[tokio::test]
async fn search_never_crosses_tenants() {
    let app = spawn_app().await;
    index(&app, &[("secret", "The launch code is hidden in the quarterly plan.", json!({}))]).await;
    let other = app.new_tenant("globex").await;
    for mode in ["vector", "keyword", "hybrid"] {
        let response = app
            .client
            .post(app.url("/v1/search"))
            .bearer_auth(&other)
            .json(&json!({"query": "launch code quarterly plan", "mode": mode}))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["results"].as_array().unwrap().len(), 0, "{mode}: {body}");
    }
}

/// A tenant holding 1% of the vectors still gets k results from the HNSW index
/// (iterative scans), and the plan really uses the index.
#[tokio::test]
async fn a_small_tenant_gets_k_results_through_the_hnsw_index() {
    let app = spawn_app().await;
    let big = stolid::store::keys::ensure_tenant(&app.state.db, "big").await.unwrap();
    let db = &app.state.db;
    // 4,950 chunks for the big tenant and 50 for ours (1%), random unit-ish vectors.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO documents (id, tenant_id, title, content_type, s3_key, content_hash, size_bytes, status, embedding_model)
         VALUES ('00000000-0000-0000-0000-00000000000b', '{big}', 'big', 'text/plain', 'k', 'hb', 1, 'indexed', 'local-hash-384'),
                ('00000000-0000-0000-0000-00000000000a', '{small}', 'small', 'text/plain', 'k', 'ha', 1, 'indexed', 'local-hash-384');
         INSERT INTO chunks (id, tenant_id, document_id, ordinal, content, content_hash, token_count, start_offset, end_offset)
         SELECT gen_random_uuid(), CASE WHEN i <= 50 THEN '{small}'::uuid ELSE '{big}'::uuid END,
                CASE WHEN i <= 50 THEN '00000000-0000-0000-0000-00000000000a'::uuid ELSE '00000000-0000-0000-0000-00000000000b'::uuid END,
                i, 'chunk ' || i, md5(i::text), 2, 0, 1
         FROM generate_series(1, 5000) AS i;
         INSERT INTO chunk_embeddings (chunk_id, tenant_id, model, embedding)
         SELECT c.id, c.tenant_id, 'local-hash-384',
                (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE c.ordinal IS NOT NULL)::vector
         FROM chunks c;
         ANALYZE chunks; ANALYZE chunk_embeddings; ANALYZE documents;",
        small = app.tenant_id
    )))
    .execute(db)
    .await
    .unwrap();
    let results = search(&app, json!({"query": "chunk", "k": 10, "mode": "vector"})).await;
    assert_eq!(results.len(), 10, "the selective tenant filter must not starve the result");
    assert!(results.iter().all(|r| r["title"] == "small"));

    let index = stolid::store::embeddings::index_name("local-hash-384", 384);
    let vector = pgvector::Vector::from(stolid::llm::local::embed("chunk", 384));
    let plan_for = |tenant: uuid::Uuid, force_index: bool| {
        let vector = vector.clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order").execute(&mut *tx).await.unwrap();
            if force_index {
                sqlx::query("SET LOCAL enable_sort = off").execute(&mut *tx).await.unwrap();
            }
            let sql = "FROM chunk_embeddings e JOIN chunks c ON c.id = e.chunk_id JOIN documents d ON d.id = c.document_id
                 WHERE e.model = 'local-hash-384' AND d.embedding_model = e.model AND e.tenant_id = $2 AND d.tenant_id = $2
                 ORDER BY e.embedding::vector(384) <=> $1::vector(384) LIMIT 10";
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN SELECT c.id {sql}")))
                .bind(vector.clone())
                .bind(tenant)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            let rows: Vec<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT c.id {sql}")))
                .bind(vector)
                .bind(tenant)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            (plan.join("\n"), rows.len())
        }
    };
    // The big tenant's search is served by the HNSW index.
    let (plan, rows) = plan_for(big, false).await;
    assert!(plan.contains(&index), "plan does not use {index}:\n{plan}");
    assert_eq!(rows, 10);
    // Even when the index scan is what runs for the 1% tenant, iterative scanning
    // keeps going until 10 rows pass the filter.
    let (plan, rows) = plan_for(app.tenant_id, true).await;
    assert!(plan.contains(&index), "plan does not use {index}:\n{plan}");
    assert_eq!(rows, 10, "an HNSW scan followed by the filter starved the result");
}

//! Search over real pgvector and Postgres full-text search.

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, base_env, spawn_app, spawn_app_with};

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

/// A question rarely contains every word of its answer: keyword search ranks
/// chunks that match some of the words, rare words above common ones, and a
/// question word found nowhere does not empty the result (it did when every
/// word was required).
#[tokio::test]
async fn keyword_search_ranks_partial_matches_by_how_rare_their_words_are() {
    let app = spawn_app().await;
    let mut docs: Vec<(String, String)> = (0..6)
        .map(|i| (format!("common-{i}"), format!("Rust programs compile to fast native code, part {i}.")))
        .collect();
    docs.push(("answer".into(), "In Rust, the question mark operator propagates an Err to the caller.".into()));
    docs.push(("aside".into(), "Many a question about lifetimes is asked by newcomers.".into()));
    let docs: Vec<(&str, &str, Value)> = docs.iter().map(|(t, x)| (t.as_str(), x.as_str(), json!({}))).collect();
    index(&app, &docs).await;

    let titles =
        |results: &[Value]| results.iter().map(|r| r["title"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let results =
        search(&app, json!({"query": "how does rust's question mark propagate errors upwards?", "mode": "keyword"}))
            .await;
    let ranked = titles(&results);
    assert_eq!(ranked[0], "answer", "{ranked:?}");
    let aside = ranked.iter().position(|t| t == "aside").expect("one rare word matched is still a match");
    let common = ranked.iter().position(|t| t.starts_with("common")).expect("a common word matched is still a match");
    assert!(aside < common, "a rare word outweighs a word every other chunk has: {ranked:?}");
    // Stop words alone match nothing.
    assert!(search(&app, json!({"query": "what is the", "mode": "keyword"})).await.is_empty());
}

/// A chunk is found by the title and headings it sits under, though its own
/// text never names them; what comes back is the chunk's own text.
#[tokio::test]
async fn a_chunk_is_found_by_its_headings_and_returned_as_itself() {
    let app = spawn_app_with(Options {
        env: [("CHUNK_MAX_TOKENS", "12".to_string()), ("CHUNK_OVERLAP_TOKENS", "0".to_string())].into(),
        ..Default::default()
    })
    .await;
    let text = "# Error handling\n\nErrors are values.\n\n## Propagation with the question mark\n\nIt returns early from the function.\n\n## Panics\n\nAn unrecoverable failure stops the thread.\n";
    app.index_all([json!({"text": text, "title": "errors.md", "content_type": "text/markdown"})]).await;
    for mode in ["keyword", "vector", "hybrid"] {
        let results = search(&app, json!({"query": "question mark propagation", "mode": mode, "k": 10})).await;
        let contents: Vec<&str> = results.iter().map(|r| r["content"].as_str().unwrap()).collect();
        let body = contents.iter().position(|c| *c == "It returns early from the function.");
        let other_section = contents.iter().position(|c| c.contains("unrecoverable"));
        assert!(body.is_some(), "{mode}: {contents:?}");
        assert!(other_section.is_none_or(|o| o > body.unwrap()), "{mode}: {contents:?}");
        let hit = &results[body.unwrap()];
        assert_eq!(hit["heading_path"], json!(["Error handling", "Propagation with the question mark"]));
    }
}

/// With the model `make infra` fetches, the local provider embeds meaning, not
/// words: a question sharing no word with its passage finds it, and `/readyz`
/// says which embeddings run (the suite's other tests run on hashed vectors, and
/// `/readyz` says that too).
#[tokio::test]
async fn a_paraphrase_sharing_no_word_with_its_passage_finds_it_with_the_local_model() {
    let dir = base_env()
        .get("LOCAL_EMBEDDING_MODEL_DIR")
        .expect("LOCAL_EMBEDDING_MODEL_DIR is not in .env: run `make infra`, which fetches the model")
        .clone();
    let hashed = spawn_app().await;
    let readyz = hashed.get_json("/readyz").await;
    assert!(
        readyz["model"]["hashed_embeddings"].as_str().is_some_and(|r| r.contains("LOCAL_EMBEDDING_MODEL_DIR")),
        "{readyz}"
    );
    hashed.stop().await.unwrap();

    let app = spawn_app_with(Options { env: [("LOCAL_EMBEDDING_MODEL_DIR", dir)].into(), ..Default::default() }).await;
    let readyz = app.get_json("/readyz").await;
    assert_eq!(readyz["model"]["embedding_model"], "all-MiniLM-L6-v2", "{readyz}");
    assert!(readyz["model"].get("hashed_embeddings").is_none(), "{readyz}");
    let docs = [
        ("vacation", "Staff receive twenty-five days of paid leave annually.", json!({})),
        ("backups", "Database snapshots are copied to a second region every night.", json!({})),
        ("coffee", "The espresso machine on floor three is descaled on Fridays.", json!({})),
        ("parking", "Bicycles may be locked in the courtyard racks.", json!({})),
    ];
    index(&app, &docs).await;
    for (question, expected) in [
        ("How much time off do employees get each year?", "vacation"),
        ("Where can I leave my bike?", "parking"),
        ("Is our data replicated somewhere safe?", "backups"),
    ] {
        let results = search(&app, json!({"query": question, "mode": "vector", "k": 4})).await;
        assert_eq!(results[0]["title"], expected, "{question}: {results:?}");
        assert!(
            results[0]["score"].as_f64().unwrap() > results[1]["score"].as_f64().unwrap() + 0.1,
            "{question}: {results:?}"
        );
    }
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
    let vector = pgvector::Vector::from(stolid::llm::providers::local::embed("chunk", 384));
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

/// Rows of the keyword postings and frequencies that differ from what the
/// chunks say they should be (migration 0007 keeps them by trigger).
async fn keyword_index_drift(app: &TestApp) -> (i64, i64) {
    let postings = sqlx::query_scalar(
        "WITH derived AS (
             SELECT c.id AS chunk_id, p.lexeme, c.tenant_id, p.impact
             FROM chunks c CROSS JOIN LATERAL keyword_postings(c.tsv, c.token_count) AS p
         ), stored AS (SELECT chunk_id, lexeme, tenant_id, impact FROM chunk_terms)
         SELECT count(*) FROM ((TABLE derived EXCEPT ALL TABLE stored) UNION ALL (TABLE stored EXCEPT ALL TABLE derived)) x",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    let frequencies = sqlx::query_scalar(
        "WITH derived AS (
             SELECT tenant_id, lexeme, count(*) AS chunks FROM chunk_terms GROUP BY tenant_id, lexeme
             UNION ALL SELECT tenant_id, '', count(*) FROM chunks GROUP BY tenant_id
         ), stored AS (SELECT tenant_id, lexeme, chunks FROM keyword_frequencies WHERE chunks <> 0)
         SELECT count(*) FROM ((TABLE derived EXCEPT TABLE stored) UNION ALL (TABLE stored EXCEPT TABLE derived)) x",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    (postings, frequencies)
}

/// Keyword search reads postings and word frequencies the database keeps beside
/// the chunks; indexing in parallel, re-indexing and deleting (two tenants at
/// once) leave them exactly what the chunks say.
#[tokio::test]
async fn keyword_postings_and_frequencies_follow_every_write() {
    let app = spawn_app().await;
    let texts: Vec<String> = (0..12)
        .map(|i| {
            format!("# Part {i}\n\nThe borrow checker checks borrows, part {i}. Lifetimes {i} end where values drop.")
        })
        .collect();
    let ids = index(&app, &texts.iter().map(|t| ("doc", t.as_str(), json!({}))).collect::<Vec<_>>()).await;
    let other = app.new_tenant("globex").await;
    let body = json!({"text": "Lifetimes of borrowed values, for another tenant.", "title": "theirs"});
    let response = app.client.post(app.url("/v1/documents")).bearer_auth(&other).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    app.drain_queue().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM chunk_terms").fetch_one(&app.state.db).await.unwrap();
    assert!(stored > 12 * 5, "{stored} postings");
    assert_eq!(keyword_index_drift(&app).await, (0, 0), "after indexing");

    for id in &ids[..3] {
        let response = app.post(&format!("/v1/documents/{id}/reindex")).send().await.unwrap();
        assert_eq!(response.status(), 202);
    }
    for id in &ids[3..6] {
        let response = app.client.delete(app.url(&format!("/v1/documents/{id}"))).bearer_auth(&app.api_key).send();
        assert_eq!(response.await.unwrap().status(), 204);
    }
    app.drain_queue().await;
    assert_eq!(keyword_index_drift(&app).await, (0, 0), "after re-indexing and deleting");
    let chunks: i64 = sqlx::query_scalar("SELECT chunks FROM keyword_frequencies WHERE tenant_id = $1 AND lexeme = ''")
        .bind(app.tenant_id)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(chunks, 9, "the corpus size counts the nine documents left");
    let results = search(&app, json!({"query": "borrow checker lifetimes", "mode": "keyword", "k": 20})).await;
    assert_eq!(results.len(), 9, "{results:?}");

    // Chunks are replaced, never edited: an edit would leave the postings stale.
    let edit = sqlx::query("UPDATE chunks SET content = 'changed'").execute(&app.state.db).await;
    assert!(edit.unwrap_err().to_string().contains("replaced, not updated"));
}

/// Short documents sharing words (question, operator, errors, callers,
/// Result) in different mixes: each word is in several chunks, so rankings
/// and partial reads of the postings have something to get wrong.
const ERROR_HANDLING_DOCS: [(&str, &str); 6] = [
    ("answer", "In Rust, the question mark operator propagates an Err to the caller."),
    ("aside", "Many a question about lifetimes is asked by newcomers; the answer is in the book."),
    ("errors", "Errors in Rust are values: Result carries an Err or an Ok, and callers decide."),
    ("panics", "A panic unwinds the stack; errors that callers can handle belong in a Result."),
    ("operators", "Operators such as + and * are traits; the question mark operator is one too."),
    ("callers", "Callers of a function that returns Result handle the error, or pass it to their own callers."),
];

/// A search inside a collection finds candidates another way (the whole
/// tenant's best postings may all lie outside a narrow scope) but must rank
/// them exactly as the unscoped search does.
#[tokio::test]
async fn a_scoped_keyword_search_ranks_as_the_whole_tenant_does() {
    let app = spawn_app().await;
    index(&app, &ERROR_HANDLING_DOCS.iter().map(|(t, x)| (*t, *x, json!({}))).collect::<Vec<_>>()).await;
    let ranked = |results: Vec<Value>| -> Vec<(String, String)> {
        results
            .iter()
            .map(|r| (r["title"].as_str().unwrap().to_string(), format!("{:.9}", r["score"].as_f64().unwrap())))
            .collect()
    };
    for query in ["question mark operator", "how do callers handle errors in rust?", "lifetimes panic"] {
        let whole = ranked(search(&app, json!({"query": query, "mode": "keyword"})).await);
        let scoped = ranked(search(&app, json!({"query": query, "mode": "keyword", "collection": "default"})).await);
        assert!(!whole.is_empty(), "{query}");
        assert_eq!(whole, scoped, "{query}");
    }
}

/// Keyword search reads only a word's best postings (`KEYWORD_TERM_POSTINGS`)
/// and looks up the rest of a candidate's words one by one: whatever that
/// bound, a chunk it returns scores exactly what reading every posting gives it.
#[tokio::test]
async fn keyword_scores_are_exact_however_few_postings_each_word_brings() {
    let app = spawn_app().await;
    index(&app, &ERROR_HANDLING_DOCS.iter().map(|(t, x)| (*t, *x, json!({}))).collect::<Vec<_>>()).await;
    let scope = stolid::store::search::Scope { tenant_id: app.tenant_id, ..Default::default() };
    let keyword = |query: &'static str, k: i64, term_postings: i64| {
        let (db, scope) = (app.state.db.clone(), scope.clone());
        async move {
            let mut conn = db.acquire().await.unwrap();
            let hits = stolid::store::search::keyword(&mut conn, &scope, query, k, term_postings).await.unwrap();
            hits.into_iter().map(|h| (h.chunk_id, h.score)).collect::<Vec<_>>()
        }
    };
    for query in ["question mark operator", "how do callers handle errors in rust?", "result err callers"] {
        let exact: std::collections::HashMap<_, _> = keyword(query, 100, 1_000).await.into_iter().collect();
        // One posting per word: every word found in two chunks or more is read only in part.
        let bounded = keyword(query, 10, 1).await;
        assert!(!bounded.is_empty(), "{query}");
        for (chunk, score) in bounded {
            let full = exact[&chunk];
            assert!((score - full).abs() < 1e-9, "{query}: {score} against {full} with every posting read");
        }
    }
}

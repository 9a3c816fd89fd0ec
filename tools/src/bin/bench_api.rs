//! `make bench-api`: what the synchronous path costs beyond the model, on real
//! text, at concurrency, up to a million chunks.
//!
//! The server is the release binary in its own process, on the openai
//! provider pointed at the fake model server (a fixed latency per call,
//! `--latency-ms`, default 50), with its query-embedding cache off so that every
//! request makes the same model calls.
//!
//! The corpus is the toolchain's documentation (the book, the reference, Rust by
//! Example, the Cargo, rustc and unstable books, the error index and std),
//! extracted and chunked by stolid's own code and written straight to Postgres
//! with the fake server's embeddings (indexing speed is `make bench-ingest`'s
//! subject), then copied page by page to each scale of `--chunks` (default
//! `100000,1000000`). Copies have embeddings up to `--vector-chunks` (default
//! 100000); above it only keyword search is measured, since embedding a million
//! chunks and building their HNSW graph would take this machine most of an hour.
//! The questions are the labelled set of `make eval` (written as users ask).
//!
//! Prints, per scale, search p50/p99 over HTTP against the same work done
//! directly in SQL (each mode, one at a time), then over HTTP at concurrency 8,
//! 32 and 64; on the Rust book alone (its own tenant), chat and suggest overhead
//! at concurrency 1, 8, 32 and 64: latency minus the model time, which is the
//! time the fake server spent answering the phase's model calls (by its own
//! clock), shared out per request; and the server's peak memory.
//!
//! Options: --chunks 100000,1000000 (or `none`: chat and suggest only)  --vector-chunks 100000  --requests 200  --latency-ms 50
//! --concurrency 1,8,32,64 (of chat and suggest)  --keep (leave the database behind, to inspect its plans)
//! --env K=V,K2=V2 (added to the server's environment)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;
use stolid::domain::retrieval::{duplicates, hybrid_depth, score_fusion};
use stolid::ingest::chunk::{ChunkSettings, chunk, embedding_text};
use stolid::ingest::extract::{Format, extract};
use stolid::llm::providers::local;
use stolid::store::chunks::Chunk;
use stolid::store::search::{self, Scope};
use stolid_testkit::bench;
use stolid_testkit::fake_openai::FakeOpenAi;
use stolid_testkit::infra::create_infra_for;
use stolid_testkit::process::Proc;
use uuid::Uuid;

const MODEL: &str = "text-embedding-3-small";
const DIMS: usize = 384;
/// The books of the toolchain's HTML documentation the corpus is made of.
const BOOKS: [&str; 8] =
    ["book", "reference", "rust-by-example", "cargo", "rustc", "unstable-book", "error_codes", "std"];
/// What `/v1/search` asks for, and what the SQL side does the same work for.
const K: usize = 10;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `total` calls of `call` with `concurrency` in flight; returns sorted latencies (ms) and requests/s.
async fn measure<F, Fut>(total: usize, concurrency: usize, call: F) -> (Vec<f64>, f64)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    let mut latencies: Vec<f64> = futures::stream::iter(0..total)
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                fut.await;
                t.elapsed().as_secs_f64() * 1000.0
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (latencies, rate)
}

/// A page of the corpus, chunked.
struct Page {
    collection: String,
    /// Where it was read from (file names repeat across std's modules).
    path: String,
    title: String,
    chunks: Vec<Chunk>,
}

/// Every HTML page of `books` under the toolchain's docs, extracted and chunked
/// as the worker would, on all cores.
fn read_pages(books: &[&str]) -> anyhow::Result<Vec<Page>> {
    let root = bench::rust_docs();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for book in books {
        files.extend(bench::corpus(&root.join(book), usize::MAX)?.into_iter().map(|f| (book.to_string(), f)));
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pages = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(files.len().div_ceil(workers))
            .map(|share| {
                scope.spawn(move || share.iter().filter_map(|(book, path)| read_page(book, path)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a reader thread")).collect::<Vec<Page>>()
    });
    Ok(pages)
}

fn read_page(collection: &str, path: &Path) -> Option<Page> {
    let bytes = std::fs::read(path).ok()?;
    let extracted = extract(Format::Html, &bytes, 10 * 1024 * 1024).ok()?;
    let title = path.file_name()?.to_string_lossy().into_owned();
    let chunks = chunk(&extracted.text, extracted.markdown, ChunkSettings::default(), &title);
    let path = path.display().to_string();
    (!chunks.is_empty()).then(|| Page { collection: collection.to_string(), path, title, chunks })
}

/// Writes `pages` as indexed documents of `tenant`, with the embeddings the fake
/// server would have returned for them; returns each document's id and chunk count.
async fn load(db: &PgPool, tenant: Uuid, pages: &[&Page]) -> anyhow::Result<Vec<(Uuid, usize)>> {
    let mut loaded = Vec::with_capacity(pages.len());
    for (i, page) in pages.iter().enumerate() {
        let id = Uuid::now_v7();
        let tokens: i32 = page.chunks.iter().map(|c| c.token_count).sum();
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO documents (id, tenant_id, collection, title, content_type, s3_key, content_hash, size_bytes,
                                    status, chunk_count, token_count, embedding_model)
             VALUES ($1, $2, $3, $4, 'text/html', 'bench', $5, 0, 'indexed', $6, $7, $8)",
        )
        .bind(id)
        .bind(tenant)
        .bind(&page.collection)
        .bind(&page.title)
        .bind(&page.path)
        .bind(page.chunks.len() as i32)
        .bind(tokens)
        .bind(MODEL)
        .execute(&mut *tx)
        .await?;
        let embeddings = page
            .chunks
            .iter()
            .map(|c| pgvector::Vector::from(local::embed(&embedding_text(&c.context, &c.content), DIMS)))
            .collect();
        stolid::store::chunks::replace(&mut tx, tenant, id, MODEL, &page.chunks, embeddings).await?;
        tx.commit().await?;
        loaded.push((id, page.chunks.len()));
        if i % 500 == 499 {
            eprintln!("bench-api:   {} of {} pages", i + 1, pages.len());
        }
    }
    Ok(loaded)
}

/// Copies documents of `originals` (cycling through them, copy `round`, `round
/// + 1`, ...) until `tenant` has at least `target` chunks; with their
/// embeddings when `with_vectors`. Returns the chunk count reached.
async fn grow(
    db: &PgPool,
    originals: &[(Uuid, usize)],
    mut have: usize,
    target: usize,
    with_vectors: bool,
    round: &mut usize,
) -> anyhow::Result<usize> {
    while have < target {
        *round += 1;
        let mut sources = Vec::new();
        for &(id, chunks) in originals {
            if have >= target {
                break;
            }
            sources.push(id);
            have += chunks;
        }
        let copies: Vec<Uuid> = sources.iter().map(|_| Uuid::now_v7()).collect();
        let copy = format!(" (copy {round})");
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO documents (id, tenant_id, collection, title, content_type, s3_key, content_hash, size_bytes,
                                    status, chunk_count, token_count, embedding_model)
             SELECT m.copy, d.tenant_id, d.collection, d.title || $3, d.content_type, d.s3_key, d.content_hash || $3,
                    d.size_bytes, d.status, d.chunk_count, d.token_count, d.embedding_model
             FROM UNNEST($1::uuid[], $2::uuid[]) AS m(source, copy) JOIN documents d ON d.id = m.source",
        )
        .bind(&sources)
        .bind(&copies)
        .bind(&copy)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO chunks (id, tenant_id, document_id, ordinal, content, content_hash, token_count,
                                 heading_path, start_offset, end_offset, context, shingles)
             SELECT gen_random_uuid(), c.tenant_id, m.copy, c.ordinal, c.content, c.content_hash, c.token_count,
                    c.heading_path, c.start_offset, c.end_offset, c.context, c.shingles
             FROM UNNEST($1::uuid[], $2::uuid[]) AS m(source, copy) JOIN chunks c ON c.document_id = m.source",
        )
        .bind(&sources)
        .bind(&copies)
        .execute(&mut *tx)
        .await?;
        if with_vectors {
            sqlx::query(
                "INSERT INTO chunk_embeddings (chunk_id, tenant_id, model, embedding)
                 SELECT n.id, n.tenant_id, e.model, e.embedding
                 FROM UNNEST($1::uuid[], $2::uuid[]) AS m(source, copy)
                 JOIN chunks s ON s.document_id = m.source
                 JOIN chunk_embeddings e ON e.chunk_id = s.id
                 JOIN chunks n ON n.document_id = m.copy AND n.ordinal = s.ordinal",
            )
            .bind(&sources)
            .bind(&copies)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        eprintln!("bench-api:   {have} chunks");
    }
    Ok(have)
}

/// The indexes bulk writes would maintain row by row (full text, HNSW, the
/// keyword postings' rank order): name and definition, to drop them before a
/// bulk write and build them after.
async fn bulk_indexes(db: &PgPool) -> anyhow::Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT indexname, indexdef FROM pg_indexes
         WHERE (tablename IN ('chunks', 'chunk_embeddings') AND (indexdef LIKE '%USING gin%' OR indexdef LIKE '%USING hnsw%'))
            OR indexname = 'chunk_terms_rank_idx'",
    )
    .fetch_all(db)
    .await?)
}

async fn drop_indexes<'a>(db: &PgPool, indexes: impl IntoIterator<Item = &'a (String, String)>) -> anyhow::Result<()> {
    for (name, _) in indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {name}"))).execute(db).await?;
    }
    Ok(())
}

/// Builds those of `indexes` that do not exist, then refreshes the planner's
/// statistics and the postings' visibility map (what autovacuum does after a
/// burst of inserts; keyword search's index-only scans need it).
async fn build_indexes(db: &PgPool, indexes: &[(String, String)]) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = db.acquire().await?;
    sqlx::raw_sql("SET maintenance_work_mem = '2GB'").execute(&mut *conn).await?;
    for (_, definition) in indexes {
        let definition = definition.replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1);
        sqlx::raw_sql(sqlx::AssertSqlSafe(definition)).execute(&mut *conn).await?;
    }
    sqlx::raw_sql("ANALYZE documents; ANALYZE chunks; ANALYZE chunk_embeddings;").execute(&mut *conn).await?;
    // A statement of its own: VACUUM cannot run inside the implicit transaction of several.
    sqlx::raw_sql("VACUUM (ANALYZE) chunk_terms").execute(&mut *conn).await?;
    eprintln!("bench-api:   indexes built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The same retrieval `/v1/search` does for `mode`, straight in SQL (the query
/// embedded in process, as the fake server would embed it): the lists twice as
/// deep as `k`, duplicates folded, read again deeper when folding left fewer
/// than `k` (`retrieval::deeper`), aggregate hits sent to their specific page. Returns
/// the time spent folding and sending (the lists' reading excluded) and
/// whether the deeper read was needed.
async fn search_in_sql(db: &PgPool, scope: &Scope, mode: &str, query: &str, term_postings: i64) -> (f64, bool) {
    search_in_sql_folding(db, scope, mode, query, term_postings, true).await
}

/// [`search_in_sql`], or with `fold` false the retrieval as it was before
/// duplicates were folded (lists `k` deep, nothing folded): the baseline.
async fn search_in_sql_folding(
    db: &PgPool,
    scope: &Scope,
    mode: &str,
    query: &str,
    term_postings: i64,
    fold: bool,
) -> (f64, bool) {
    let vector = |depth: usize| async move {
        let embedding = local::embed(query, DIMS);
        search::vector(db, scope, MODEL, DIMS, &embedding, depth as i64).await.expect("vector")
    };
    let keyword = |depth: usize| async move {
        let mut conn = db.acquire().await.expect("a connection");
        search::keyword(&mut conn, scope, query, depth as i64, term_postings).await.expect("keyword")
    };
    let (mut folding, mut deeper) = (Duration::ZERO, false);
    let mut hits = Vec::new();
    let mut depth = if fold { 2 * K } else { K };
    for read in 1..=3 {
        let (lists, exhausted) = match mode {
            "keyword" => {
                let k = keyword(depth).await;
                let exhausted = k.len() < depth;
                (k, exhausted)
            }
            "vector" => {
                let v = vector(depth).await;
                let exhausted = v.len() < depth;
                (v, exhausted)
            }
            _ => {
                let depth = hybrid_depth(depth);
                let (v, k) = (vector(depth).await, keyword(depth).await);
                let exhausted = v.len() < depth && k.len() < depth;
                (score_fusion(v, k, usize::MAX), exhausted)
            }
        };
        if !fold {
            return (0.0, false);
        }
        let started = Instant::now();
        hits = lists;
        duplicates::demote(&mut hits, 0.5);
        hits = duplicates::collapse(hits);
        folding += started.elapsed();
        if hits.len() >= K || exhausted || read == 3 || depth >= 8 * K {
            break;
        }
        deeper = true;
        depth = stolid::domain::retrieval::deeper(depth, K, hits.len(), 8 * K);
    }
    hits.truncate(K);
    let started = Instant::now();
    drop(duplicates::cite_specific_pages(db, scope, hits).await.expect("citing"));
    folding += started.elapsed();
    (folding.as_secs_f64() * 1000.0, deeper)
}

/// The server's peak resident memory, from `/proc`.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = bench::options();
    let number = |name: &str, default: usize| options.get(name).map_or(default, |v| v.parse().expect(name));
    // `--chunks none` measures chat and suggest only.
    let scales: Vec<usize> = if options.get("chunks").is_some_and(|c| c == "none") {
        Vec::new()
    } else {
        bench::list(&options, "chunks", "100000,1000000")
    };
    let vector_chunks = number("vector-chunks", 100_000);
    let requests = number("requests", 200);
    let model_latency = Duration::from_millis(number("latency-ms", 50) as u64);
    let ef_search = 100;
    let term_postings = number("term-postings", 200) as i64;
    let concurrencies: Vec<usize> = bench::list(&options, "concurrency", "1,8,32,64");

    let questions: Vec<String> = std::fs::read_to_string(stolid_testkit::repo_root().join("eval/rust-docs.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|q| q["question"].as_str().map(str::to_string))
        .collect();

    let fake = FakeOpenAi::start().await;
    let infra = create_infra_for("bench").await;
    let mut env = infra.process_env();
    env.extend([
        ("OPENAI_API_KEY", "sk-bench".into()),
        ("OPENAI_BASE_URL", fake.base_url()),
        ("EMBEDDING_MODEL", MODEL.into()),
        ("EMBEDDING_DIMENSIONS", DIMS.to_string()),
        ("HNSW_EF_SEARCH", ef_search.to_string()),
        ("KEYWORD_TERM_POSTINGS", term_postings.to_string()),
        ("WORKER_POLLERS", "0".into()),
        ("DATABASE_MAX_CONNECTIONS", "32".into()),
        // Every request makes the same model calls, so the model's share is known.
        ("QUERY_EMBEDDING_CACHE", "0".into()),
        // The service's overhead is measured here, not the provider's cap.
        ("EMBED_REQUESTS_PER_MINUTE", "10000000".into()),
        ("EMBED_TOKENS_PER_MINUTE", "1000000000".into()),
    ]);
    let extra = bench::extra_env(&options);
    env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let log = stolid_testkit::repo_root().join(".local/bench-api.log");
    std::fs::create_dir_all(log.parent().expect("a parent"))?;
    // This run's log alone, to read the per-request timings from.
    let _ = std::fs::remove_file(&log);
    let mut server = Proc::start(&env, &log);
    // The server's HNSW settings, so the SQL baseline runs the same search.
    let session = stolid::store::search_session(ef_search);
    let db = stolid::store::connect(&infra.database_url, 16, Duration::from_secs(30), &session).await?;
    let docs = stolid::store::keys::ensure_tenant(&db, "docs").await?;
    let docs_key = stolid::store::keys::create_key(&db, docs).await?.key;
    let book = stolid::store::keys::ensure_tenant(&db, "book").await?;
    let book_key = stolid::store::keys::create_key(&db, book).await?.key;

    let started = Instant::now();
    eprintln!("bench-api: reading {} ...", BOOKS.join(", "));
    let pages = read_pages(&BOOKS)?;
    let base_chunks: usize = pages.iter().map(|p| p.chunks.len()).sum();
    eprintln!(
        "bench-api: {} pages, {base_chunks} chunks ({:.0} s); loading",
        pages.len(),
        started.elapsed().as_secs_f64()
    );
    let indexes = bulk_indexes(&db).await?;
    drop_indexes(&db, &indexes).await?;
    let book_pages: Vec<&Page> = pages.iter().filter(|p| p.collection == "book").collect();
    let book_chunks: usize = book_pages.iter().map(|p| p.chunks.len()).sum();
    load(&db, book, &book_pages).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(128).build()?;
    let errors = &AtomicUsize::new(0);
    let post = |key: &str, path: &str, body: serde_json::Value| {
        let request = client.post(format!("{}{path}", server.base)).bearer_auth(key).json(&body);
        async move {
            let response = request.send().await.expect("request");
            if !response.status().is_success() {
                // Counted and shown beside the figures, not fatal: an overloaded server answers 503.
                let first = errors.fetch_add(1, Ordering::Relaxed) == 0;
                if first {
                    eprintln!("bench-api: {} {}", response.status(), response.text().await.unwrap_or_default());
                }
                return;
            }
            response.bytes().await.expect("body");
        }
    };
    let failed = || match errors.swap(0, Ordering::Relaxed) {
        0 => String::new(),
        n => format!("  [{n} failed]"),
    };

    build_indexes(&db, &indexes).await?;
    println!(
        "--- chat and suggest on the Rust book ({book_chunks} chunks): latency minus the model's time, {} ms a call (p50 / p99 ms) ---",
        model_latency.as_millis()
    );
    fake.set_latency(model_latency);
    for (endpoint, body) in [
        ("/v1/chat", (|q: &str| json!({"message": q})) as fn(&str) -> serde_json::Value),
        ("/v1/suggest", |q: &str| json!({"text": q})),
    ] {
        for &concurrency in &concurrencies {
            let before = fake.stats();
            let total = requests.max(4 * concurrency);
            let (lat, rate) =
                measure(total, concurrency, |i| post(&book_key, endpoint, body(&questions[i % questions.len()]))).await;
            let after = fake.stats();
            let model_ms = (after.serving_micros - before.serving_micros) as f64 / 1000.0 / total as f64;
            let calls = |a: u64, b: u64| (a - b) as f64 / total as f64;
            println!(
                "{endpoint:<11} c{concurrency:<3} overhead {:>6.2} / {:>6.2}   (model {model_ms:.1} ms a request: {:.1} embedding + {:.1} chat calls; {rate:.1}/s){}",
                percentile(&lat, 0.5) - model_ms,
                percentile(&lat, 0.99) - model_ms,
                calls(after.embedding_requests, before.embedding_requests),
                calls(after.chat_requests, before.chat_requests),
                failed(),
            );
        }
    }

    // The book's tenant is measured alone: chunks of other tenants share its full-text index.
    let originals = if scales.is_empty() {
        Vec::new()
    } else {
        eprintln!("bench-api: loading the other books");
        load(&db, docs, &pages.iter().collect::<Vec<_>>()).await?
    };
    drop(pages);

    fake.set_latency(Duration::ZERO);
    let (mut have, mut round) = (base_chunks, 0);
    if !scales.is_empty() {
        println!(
            "--- search on real text: HTTP vs the same SQL at concurrency 1, then HTTP at 8 / 32 / 64 (p50 / p99 ms) ---"
        );
    }
    for &scale in &scales {
        let with_vectors = scale <= vector_chunks;
        drop_indexes(&db, indexes.iter().filter(|(_, definition)| with_vectors || !definition.contains("hnsw")))
            .await?;
        eprintln!("bench-api: growing to {scale} chunks");
        have = grow(&db, &originals, have, scale, with_vectors, &mut round).await?;
        build_indexes(&db, &indexes).await?;
        let scope = Scope { tenant_id: docs, ..Default::default() };
        let (samples, row_bytes, gin_bytes): (f64, f64, f64) = sqlx::query_as(
            "SELECT avg(cardinality(shingles))::float8, avg(pg_column_size(shingles))::float8,
                    pg_relation_size('chunks_shingles_idx')::float8 / count(*)
             FROM chunks",
        )
        .fetch_one(&db)
        .await?;
        println!(
            "{have:>9} chunks  shingle samples: {samples:.1} a chunk, {row_bytes:.0} bytes in its row, {gin_bytes:.0} bytes of GIN index"
        );
        let modes: &[&str] = if with_vectors { &["keyword", "vector", "hybrid"] } else { &["keyword"] };
        for mode in modes {
            let search = |i: usize| {
                post(&docs_key, "/v1/search", json!({"query": questions[i % questions.len()], "k": K, "mode": mode}))
            };
            measure(questions.len(), 4, search).await; // warm-up
            failed();
            let (http, _) = measure(requests, 1, search).await;
            let folding = std::sync::Mutex::new(Vec::new());
            let (sql, _) = measure(requests, 1, |i| {
                let folding = &folding;
                let search = search_in_sql(&db, &scope, mode, &questions[i % questions.len()], term_postings);
                async move {
                    let result = search.await;
                    folding.lock().expect("not poisoned").push(result);
                }
            })
            .await;
            let (before, _) = measure(requests, 1, |i| {
                let search =
                    search_in_sql_folding(&db, &scope, mode, &questions[i % questions.len()], term_postings, false);
                async move {
                    search.await;
                }
            })
            .await;
            let folding = folding.into_inner().expect("not poisoned");
            let deeper = folding.iter().filter(|(_, deeper)| *deeper).count();
            let mut folding: Vec<f64> = folding.into_iter().map(|(ms, _)| ms).collect();
            folding.sort_by(f64::total_cmp);
            let mut line = format!(
                "{have:>9} chunks  {mode:<8} HTTP {:>6.2} / {:>6.2}   SQL {:>6.2} / {:>6.2}   HTTP - SQL at p50 {:>5.2}  |",
                percentile(&http, 0.5),
                percentile(&http, 0.99),
                percentile(&sql, 0.5),
                percentile(&sql, 0.99),
                percentile(&http, 0.5) - percentile(&sql, 0.5)
            );
            line += &format!(
                "  SQL without folding {:.2} / {:.2}, folding itself {:.2} / {:.2} (read deeper for {deeper} of {})  |",
                percentile(&before, 0.5),
                percentile(&before, 0.99),
                percentile(&folding, 0.5),
                percentile(&folding, 0.99),
                folding.len()
            );
            for concurrency in [8, 32, 64] {
                let (lat, rate) = measure(requests.max(2 * concurrency), concurrency, search).await;
                line += &format!(
                    "  c{concurrency} {:.1} / {:.1} ({rate:.0}/s)",
                    percentile(&lat, 0.5),
                    percentile(&lat, 0.99)
                );
            }
            println!("{line}{}", failed());
        }
        if !with_vectors {
            println!("{have:>9} chunks  vector and hybrid not measured above --vector-chunks {vector_chunks}");
        }
    }

    println!("server peak memory: {:.0} MB", peak_rss_mb(server.child.id()));
    println!("(total {:.0} s)", started.elapsed().as_secs_f64());
    server.terminate(Duration::from_secs(10));
    db.close().await;
    if options.contains_key("keep") {
        println!("kept for inspection: {}", infra.database_url);
    } else {
        infra.remove().await?;
    }
    Ok(())
}

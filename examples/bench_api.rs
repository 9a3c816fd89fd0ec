//! `make bench-api`: the synchronous API's own overhead, measured against the
//! fake model server with a fixed latency, on a synthetic corpus of
//! `--chunks` chunks (default 100,000) for one tenant:
//! - chat latency minus the model's (two model calls per turn: the query
//!   embedding and the completion), p50/p99, at several concurrency levels;
//! - search over HTTP against the same query run directly in SQL, p50/p99, for
//!   `keyword` and `vector` mode (vector includes the embedding call to the fake
//!   server, which has no latency for this part);
//! - requests/s at several concurrency levels, and the process's peak memory
//!   (client and server share the process, so this is an upper bound).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use stolid::app::ProcessRole;
use stolid::testkit::fake_openai::FakeOpenAi;
use stolid::testkit::infra::{create_infra, start_app};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect(name))
}

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

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let chunks = arg("chunks", 100_000);
    let model_latency = Duration::from_millis(arg("latency-ms", 50));
    let requests = arg("requests", 200) as usize;

    let fake = FakeOpenAi::start().await;
    let infra = create_infra().await;
    let env = HashMap::from([
        ("OPENAI_API_KEY", "sk-bench".to_string()),
        ("OPENAI_BASE_URL", fake.base_url()),
        ("EMBEDDING_DIMENSIONS", "384".to_string()),
        ("WORKER_POLLERS", "0".to_string()),
        ("DATABASE_MAX_CONNECTIONS", "32".to_string()),
        ("LOG_LEVEL", "warn".to_string()),
        // The embedding limiter would pace query embeddings at the default 3,000/min;
        // here we measure the service's overhead, not the provider's cap.
        ("EMBED_REQUESTS_PER_MINUTE", "10000000".to_string()),
        ("EMBED_TOKENS_PER_MINUTE", "1000000000".to_string()),
    ]);
    let app = start_app(infra, env, |_| {}, ProcessRole::Api, "bench").await?;
    let (base, state, key, tenant, shutdown, running) =
        (app.address, app.state, app.api_key, app.tenant_id, app.shutdown, app.stopped);

    eprintln!(
        "bench-api: loading {chunks} synthetic chunks (random 384-d vectors, 60 words each from a 20,000-word vocabulary)..."
    );
    let setup = Instant::now();
    // Bulk-load without the HNSW index and build it once afterwards: inserting
    // 100k vectors one by one into an existing HNSW graph takes far longer.
    let index = stolid::store::embeddings::index_name("text-embedding-3-small", 384);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}"))).execute(&state.db).await?;
    sqlx::query(
        "INSERT INTO documents (id, tenant_id, title, content_type, s3_key, content_hash, size_bytes, status, embedding_model)
         SELECT gen_random_uuid(), $1, 'doc ' || d, 'text/plain', 'k', md5(d::text), 1, 'indexed', 'text-embedding-3-small'
         FROM generate_series(1, 1000) AS d",
    )
    .bind(tenant)
    .execute(&state.db)
    .await?;
    sqlx::query(
        "INSERT INTO chunks (id, tenant_id, document_id, ordinal, content, content_hash, token_count, start_offset, end_offset)
         SELECT gen_random_uuid(), $1, d.id, i,
                array_to_string(ARRAY(SELECT 'w' || floor(random() * 20000)::int FROM generate_series(1, 60) WHERE i IS NOT NULL), ' '),
                md5(i::text), 60, 0, 1
         FROM generate_series(1, $2) AS i
         JOIN LATERAL (SELECT id FROM documents WHERE tenant_id = $1 ORDER BY id OFFSET (i % 1000) LIMIT 1) d ON true",
    )
    .bind(tenant)
    .bind(chunks as i32)
    .execute(&state.db)
    .await?;
    sqlx::query(
        "INSERT INTO chunk_embeddings (chunk_id, tenant_id, model, embedding)
         SELECT c.id, c.tenant_id, 'text-embedding-3-small',
                (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE c.ordinal IS NOT NULL)::vector
         FROM chunks c WHERE c.tenant_id = $1",
    )
    .bind(tenant)
    .execute(&state.db)
    .await?;
    stolid::store::embeddings::ensure_index(&state.db, "text-embedding-3-small", 384).await?;
    sqlx::raw_sql("ANALYZE documents; ANALYZE chunks; ANALYZE chunk_embeddings;").execute(&state.db).await?;
    eprintln!("bench-api: corpus ready in {:.0} s", setup.elapsed().as_secs_f64());

    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let post = |path: &str, body: serde_json::Value| {
        let request = client.post(format!("{base}{path}")).bearer_auth(&key).json(&body);
        async move {
            let response = request.send().await.expect("request");
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.expect("body");
        }
    };
    let queries = [
        "ownership lifetime",
        "async runtime task",
        "cargo crate registry",
        "error result panic",
        "search embed chunk",
    ];

    println!("--- search over HTTP vs the same query in SQL ({chunks} chunks, p50 / p99 ms) ---");
    fake.set_latency(Duration::ZERO);
    for mode in ["keyword", "vector"] {
        let (http, _) =
            measure(requests, 1, |i| post("/v1/search", json!({"query": queries[i % 5], "k": 10, "mode": mode}))).await;
        let scope = stolid::store::search::Scope { tenant_id: tenant, ..Default::default() };
        let embedding = stolid::llm::local::embed(queries[0], 384);
        let (sql, _) = measure(requests, 1, |i| {
            let (db, scope, embedding) = (state.db.clone(), scope.clone(), embedding.clone());
            async move {
                let mut tx = db.begin().await.unwrap();
                if mode == "keyword" {
                    stolid::store::search::keyword(&mut tx, &scope, queries[i % 5], 10).await.unwrap();
                } else {
                    stolid::store::search::vector(&mut tx, &scope, "text-embedding-3-small", 384, &embedding, 10, 100)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            }
        })
        .await;
        println!(
            "{mode:<8} HTTP {:>6.2} / {:>6.2}   SQL {:>6.2} / {:>6.2}   HTTP - SQL at p50 {:>5.2}",
            percentile(&http, 0.5),
            percentile(&http, 0.99),
            percentile(&sql, 0.5),
            percentile(&sql, 0.99),
            percentile(&http, 0.5) - percentile(&sql, 0.5)
        );
    }

    println!("--- requests/s (keyword search) ---");
    for concurrency in [1, 4, 16] {
        let (lat, rate) =
            measure(requests, concurrency, |i| post("/v1/search", json!({"query": queries[i % 5], "mode": "keyword"})))
                .await;
        println!(
            "concurrency {concurrency:>2}: {rate:>7.1} req/s, p50 {:.2} ms, p99 {:.2} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }

    println!("--- chat: latency minus the model's {} ms x 2 calls (p50 / p99 ms) ---", model_latency.as_millis());
    fake.set_latency(model_latency);
    let model_ms = 2.0 * model_latency.as_secs_f64() * 1000.0;
    for concurrency in [1, 4, 16] {
        // One word per question, so every turn retrieves passages and makes both model calls.
        let (lat, rate) = measure(requests / 2, concurrency, |i| {
            let word = queries[i % 5].split(' ').next().unwrap_or("w1");
            post("/v1/chat", json!({"message": word}))
        })
        .await;
        println!(
            "concurrency {concurrency:>2}: overhead {:>6.2} / {:>6.2}   ({rate:.1} chats/s)",
            percentile(&lat, 0.5) - model_ms,
            percentile(&lat, 0.99) - model_ms
        );
    }
    println!("peak memory (client + server in one process): {:.0} MB", peak_rss_mb());
    shutdown.cancel();
    running.await??;
    Ok(())
}

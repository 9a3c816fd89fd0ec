//! `make bench-ingest`: index a real corpus through the whole pipeline (HTTP
//! upload, S3, SQS, workers, the shared limiter, the fake OpenAI server over
//! HTTP, Postgres) with an embedding cap, and print what it achieved:
//! documents/s, chunks/s, embedding requests/s against the cap, the busiest
//! window against the cap, 429s; then the same chunks written by the pipeline's
//! write path against a raw `COPY` of the same rows.
//!
//! The corpus defaults to the Rust book's HTML under the toolchain
//! (`rustc --print sysroot`/share/doc/rust/html/book). Options:
//!   --corpus DIR  --docs N  --cap N (requests per window)  --window-secs S
//!   --provider-cap N (the fake server's own cap; default: same as --cap)
//!   --latency-ms N (fake model latency)

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use stolid::app::ProcessRole;
use stolid::config::RateCap;
use stolid_testkit::bench;
use stolid_testkit::fake_openai::FakeOpenAi;
use stolid_testkit::infra::{create_infra_for, start_app};

struct Args {
    corpus: PathBuf,
    docs: usize,
    cap: u32,
    window: Duration,
    provider_cap: Option<u32>,
    latency: Duration,
}

fn args() -> Args {
    let map = bench::options();
    let num = |k: &str, d: u64| map.get(k).map_or(d, |v| v.parse().expect(k));
    Args {
        corpus: map.get("corpus").map(PathBuf::from).unwrap_or_else(bench::rust_book),
        docs: num("docs", 400) as usize,
        cap: num("cap", 40) as u32,
        window: Duration::from_secs(num("window-secs", 2)),
        provider_cap: map.get("provider-cap").map(|v| v.parse().expect("provider-cap")),
        latency: Duration::from_millis(num("latency-ms", 30)),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let files = bench::corpus(&args.corpus, args.docs)?;
    let corpus_bytes: u64 = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum();

    let fake = FakeOpenAi::start().await;
    fake.set_latency(args.latency);
    fake.set_rate_cap(Some(RateCap { limit: args.provider_cap.unwrap_or(args.cap), window: args.window }));
    let infra = create_infra_for("bench").await;
    let env = HashMap::from([
        ("OPENAI_API_KEY", "sk-bench".to_string()),
        ("OPENAI_BASE_URL", fake.base_url()),
        ("EMBEDDING_DIMENSIONS", "384".to_string()),
        ("WORKER_WAIT_TIME_SECS", "1".to_string()),
        ("WORKER_CONCURRENCY", "16".to_string()),
        ("EMBED_MAX_IN_FLIGHT", "8".to_string()),
        // Small batches, so the request cap (not the token cap) is what binds.
        ("EMBED_MAX_BATCH_INPUTS", "16".to_string()),
    ]);
    let cap = RateCap { limit: args.cap, window: args.window };
    let app =
        start_app(infra, env, |config| config.llm.embedding_limits.requests = cap, ProcessRole::All, "bench").await?;
    let (base, state, key, shutdown, running) = (app.address, app.state, app.api_key, app.shutdown, app.stopped);

    eprintln!(
        "bench-ingest: {} documents ({:.1} MB) from {}; cap {} requests / {:?}; fake latency {:?}",
        files.len(),
        corpus_bytes as f64 / 1e6,
        args.corpus.display(),
        args.cap,
        args.window,
        args.latency
    );
    let started = Instant::now();
    let client = reqwest::Client::new();
    let uploads = futures::stream::iter(files.iter().cloned().map(|path| {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        async move {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let bytes = tokio::fs::read(&path).await.unwrap();
            let part = reqwest::multipart::Part::bytes(bytes).file_name(name).mime_str("text/html").unwrap();
            let form = reqwest::multipart::Form::new().part("file", part);
            let response =
                client.post(format!("{base}/v1/documents")).bearer_auth(key).multipart(form).send().await.unwrap();
            assert!(response.status().is_success(), "upload failed: {}", response.status());
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>();
    uploads.await;
    let uploaded = started.elapsed();
    let (docs, chunks) = loop {
        let (pending, docs, chunks): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('queued', 'processing')), count(*), coalesce(sum(chunk_count), 0)::int8 FROM documents",
        )
        .fetch_one(&state.db)
        .await?;
        if pending == 0 {
            break (docs, chunks);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM documents WHERE status = 'failed'").fetch_one(&state.db).await?;

    let stats = fake.stats();
    let arrivals: Vec<Instant> =
        fake.embedding_arrivals().into_iter().filter(|(_, s)| *s == 200).map(|(t, _)| t).collect();
    let cap_rate = args.cap as f64 / args.window.as_secs_f64();
    // Steady state: drop the first window (the burst) and measure the rest.
    let steady = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if last.duration_since(*first) > args.window * 2 => {
            let from = *first + args.window;
            let n = arrivals.iter().filter(|t| **t >= from).count() as f64;
            n / last.duration_since(from).as_secs_f64()
        }
        _ => f64::NAN,
    };
    println!("--- indexing ({} docs, {failed} failed) ---", docs);
    println!("elapsed                 {elapsed:.2} s (uploads done after {:.2} s)", uploaded.as_secs_f64());
    println!("documents/s             {:.1}", docs as f64 / elapsed);
    println!(
        "chunks/s                {:.1}   ({chunks} chunks, {} embedded inputs)",
        chunks as f64 / elapsed,
        stats.embedded_inputs
    );
    println!("embedding requests      {} ok, {} answered 429", stats.embedding_requests, stats.rate_limited);
    println!(
        "steady request rate     {steady:.2}/s vs cap {cap_rate:.2}/s = {:.1}% of the cap",
        100.0 * steady / cap_rate
    );
    println!(
        "busiest window          {} requests in {:?} (cap {})",
        fake.max_embedding_requests_in(args.window),
        args.window,
        args.cap
    );
    println!("max in flight           {}", stats.max_in_flight);

    // Write path vs raw COPY of the same rows.
    shutdown.cancel();
    running.await??;
    write_path_vs_copy(&state.db, state.gateway.embedding_model()).await?;
    Ok(())
}

async fn write_path_vs_copy(db: &sqlx::PgPool, model: &str) -> anyhow::Result<()> {
    use stolid::ingest::chunk::Chunk;
    // The chunk's columns by name (the ingest type is no row type).
    #[derive(sqlx::FromRow)]
    struct Row {
        tenant_id: uuid::Uuid,
        document_id: uuid::Uuid,
        ordinal: i32,
        content: String,
        context: String,
        content_hash: String,
        token_count: i32,
        heading_path: Vec<String>,
        start_offset: i32,
        end_offset: i32,
        shingles: Vec<i64>,
        embedding: pgvector::Vector,
    }
    impl Row {
        fn chunk(&self) -> Chunk {
            Chunk {
                ordinal: self.ordinal,
                content: self.content.clone(),
                context: self.context.clone(),
                content_hash: self.content_hash.clone(),
                token_count: self.token_count,
                heading_path: self.heading_path.clone(),
                start_offset: self.start_offset,
                end_offset: self.end_offset,
                shingles: self.shingles.clone(),
            }
        }
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.tenant_id, c.document_id, c.ordinal, c.content, c.context, c.content_hash, c.token_count, c.heading_path,
                c.start_offset, c.end_offset, c.shingles, e.embedding
         FROM chunks c JOIN chunk_embeddings e ON e.chunk_id = c.id AND e.model = $1 ORDER BY c.document_id, c.ordinal",
    )
    .bind(model)
    .fetch_all(db)
    .await?;
    let mut by_doc: Vec<(uuid::Uuid, uuid::Uuid, Vec<Chunk>, Vec<pgvector::Vector>)> = Vec::new();
    for row in &rows {
        if by_doc.last().is_none_or(|(_, d, _, _)| *d != row.document_id) {
            by_doc.push((row.tenant_id, row.document_id, Vec::new(), Vec::new()));
        }
        let entry = by_doc.last_mut().unwrap();
        entry.2.push(row.chunk());
        entry.3.push(row.embedding.clone());
    }
    let n = rows.len() as f64;

    // The pipeline's path: per document, one transaction replacing its chunks.
    let started = Instant::now();
    for (tenant, doc, chunks, vectors) in &by_doc {
        let mut tx = db.begin().await?;
        stolid::store::chunks::replace(&mut tx, *tenant, *doc, model, chunks, vectors.clone()).await?;
        tx.commit().await?;
    }
    let pipeline = started.elapsed().as_secs_f64();

    // The physical reference: COPY the same rows into tables shaped (and indexed) like ours.
    let mut conn = db.acquire().await?;
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS chunks_copy, chunk_embeddings_copy;
         CREATE TABLE chunks_copy (LIKE chunks INCLUDING ALL);
         CREATE TABLE chunk_embeddings_copy (LIKE chunk_embeddings INCLUDING ALL);",
    )
    .execute(&mut *conn)
    .await?;
    let escape = |s: &str| s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r");
    let mut chunk_text = String::new();
    let mut embedding_text = String::new();
    for row in &rows {
        let (tenant, doc, chunk, embedding) = (row.tenant_id, row.document_id, row.chunk(), &row.embedding);
        let id = uuid::Uuid::now_v7();
        let headings = format!(
            "{{{}}}",
            chunk
                .heading_path
                .iter()
                .map(|h| format!("\"{}\"", h.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(",")
        );
        chunk_text.push_str(&format!(
            "{id}\t{tenant}\t{doc}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            chunk.ordinal,
            escape(&chunk.content),
            chunk.content_hash,
            chunk.token_count,
            escape(&headings),
            chunk.start_offset,
            chunk.end_offset,
            escape(&chunk.context)
        ));
        let vector: Vec<String> = embedding.as_slice().iter().map(|x| x.to_string()).collect();
        embedding_text.push_str(&format!("{id}\t{tenant}\t{model}\t[{}]\n", vector.join(",")));
    }
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY chunks_copy (id, tenant_id, document_id, ordinal, content, content_hash, token_count, heading_path, start_offset, end_offset, context) FROM STDIN")
        .await?;
    copy.send(chunk_text.as_bytes()).await?;
    copy.finish().await?;
    let mut copy =
        conn.copy_in_raw("COPY chunk_embeddings_copy (chunk_id, tenant_id, model, embedding) FROM STDIN").await?;
    copy.send(embedding_text.as_bytes()).await?;
    copy.finish().await?;
    let raw = started.elapsed().as_secs_f64();
    println!("--- write path ({} chunks with embeddings, {} documents) ---", rows.len(), by_doc.len());
    println!("pipeline (UNNEST, per-document transaction)  {:.0} rows/s", n / pipeline);
    println!("raw COPY (one stream per table)              {:.0} rows/s", n / raw);
    println!("pipeline / COPY                              {:.2}", raw / pipeline);
    Ok(())
}

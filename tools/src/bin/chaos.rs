//! `make chaos`: replays faults against the release `stolid` binary, each on
//! its own database, bucket and queue, and prints one row per scenario:
//! documents, indexed, failed (with reasons), stuck, duplicated, 5xx answers
//! that were not a genuine outage's 503, and seconds to recover.
//!
//! Faults are injected on loopback only: the fake OpenAI server (429 and 500
//! storms), and TCP proxies in front of Postgres and the S3/SQS emulator that
//! refuse or hang on command (Postgres itself keeps running for the other
//! tests on this machine; to stolid an unreachable server and a stopped one
//! look the same). Exits 1 when any scenario loses, strands or duplicates a
//! document or answers a 5xx other than 503.
//!
//! Options: --docs N (documents per scenario, default 150), --outage-secs S
//! (default 10), --only NAME (run the scenarios whose name contains NAME),
//! --schemathesis PATH (the `st` binary; the scenario is skipped without it),
//! --examples N (schemathesis examples per operation, default 25).

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use stolid_testkit::fake_openai::{FakeOpenAi, Fault};
use stolid_testkit::infra::{Infra, base_env, create_infra_for};
use stolid_testkit::process;
use stolid_testkit::proxy::{FaultProxy, ProxyMode, upstream_of, via};

struct Args {
    docs: usize,
    outage: Duration,
    only: Option<String>,
    schemathesis: Option<String>,
    examples: u32,
}

fn args() -> Args {
    let map = stolid_testkit::bench::options();
    Args {
        docs: map.get("docs").map_or(150, |v| v.parse().expect("--docs")),
        outage: Duration::from_secs(map.get("outage-secs").map_or(10, |v| v.parse().expect("--outage-secs"))),
        only: map.get("only").cloned(),
        // Absolute, since schemathesis runs in .local/chaos (its cache goes there).
        schemathesis: map
            .get("schemathesis")
            .and_then(|p| std::fs::canonicalize(p).ok())
            .map(|p| p.to_string_lossy().into_owned()),
        examples: map.get("examples").map_or(25, |v| v.parse().expect("--examples")),
    }
}

/// One scenario's outcome, as printed.
#[derive(Default)]
struct Row {
    scenario: String,
    docs: i64,
    indexed: i64,
    failed: i64,
    stuck: i64,
    duplicated: i64,
    /// 5xx answers other than a genuine outage's 503.
    server_errors: u64,
    /// 503s seen while a dependency was down (expected).
    unavailable: u64,
    recover_secs: Option<f64>,
    reasons: Vec<String>,
    note: String,
    /// A check of the scenario's own failed (e.g. schemathesis found a violation).
    broken: bool,
}

impl Row {
    fn bad(&self) -> bool {
        self.broken
            || self.stuck > 0
            || self.duplicated > 0
            || self.server_errors > 0
            || self.docs != self.indexed + self.failed
    }
}

/// A private stack: database, bucket, queue, a fake model server, and proxies
/// in front of Postgres and S3/SQS.
struct Stack {
    infra: Infra,
    fake: FakeOpenAi,
    pg: FaultProxy,
    aws: FaultProxy,
    db: sqlx::PgPool,
    key: Option<String>,
    /// Where the processes' logs go: `.local/chaos/<name>.log`.
    log: std::path::PathBuf,
}

impl Stack {
    async fn new(name: &str) -> Self {
        let infra = create_infra_for("chaos").await;
        let fake = FakeOpenAi::start().await;
        let pg = FaultProxy::start(upstream_of(&infra.database_url).await).await;
        let aws = FaultProxy::start(upstream_of(&base_env()["AWS_ENDPOINT_URL"]).await).await;
        let db = sqlx::PgPool::connect(&infra.database_url).await.expect("connecting to the scenario database");
        let dir = stolid_testkit::repo_root().join(".local/chaos");
        std::fs::create_dir_all(&dir).expect("creating .local/chaos");
        let log = dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        Self { infra, fake, pg, aws, db, key: None, log }
    }

    /// Starts the release binary on this stack, with `extra` settings.
    async fn start(&mut self, extra: &[(&str, &str)]) -> Proc {
        let env = base_env();
        let mut settings: Vec<(&str, String)> = vec![
            ("DATABASE_URL", via(&self.infra.database_url, self.pg.addr())),
            ("S3_BUCKET", self.infra.bucket.clone()),
            ("SQS_QUEUE_URL", self.infra.queue_url.clone()),
            ("AWS_ENDPOINT_URL", via(&env["AWS_ENDPOINT_URL"], self.aws.addr())),
            ("OPENAI_API_KEY", "sk-fake".into()),
            ("OPENAI_BASE_URL", self.fake.base_url()),
            ("EMBEDDING_DIMENSIONS", "384".into()),
            ("LLM_TIMEOUT_SECS", "10".into()),
            ("AWS_TIMEOUT_SECS", "2".into()),
            ("WORKER_WAIT_TIME_SECS", "1".into()),
            ("WORKER_VISIBILITY_TIMEOUT_SECS", "10".into()),
            ("EMBED_REQUESTS_PER_MINUTE", "60000".into()),
            ("SHUTDOWN_TIMEOUT_SECS", "5".into()),
        ];
        settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let process = process::Proc::start(&settings, &self.log);
        if self.key.is_none() {
            let tenant = stolid::store::keys::ensure_tenant(&self.db, "chaos").await.expect("tenant");
            self.key = Some(stolid::store::keys::create_key(&self.db, tenant).await.expect("key").key);
        }
        Proc { base: process.base.clone(), process, key: self.key.clone().unwrap_or_default() }
    }

    /// Waits until no document is `queued` or `processing`, or `limit` passes.
    async fn settle(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            let open: i64 =
                sqlx::query_scalar("SELECT count(*) FROM documents WHERE status IN ('queued', 'processing')")
                    .fetch_one(&self.db)
                    .await
                    .unwrap_or(1);
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        started.elapsed()
    }

    /// Fills in the document counts of `row` from the database.
    async fn count(&self, row: &mut Row) {
        let statuses: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM documents GROUP BY status").fetch_all(&self.db).await.unwrap();
        for (status, count) in statuses {
            row.docs += count;
            match status.as_str() {
                "indexed" => row.indexed = count,
                "failed" => row.failed = count,
                _ => row.stuck += count,
            }
        }
        // A document whose stored chunks disagree with its count was written twice (or half).
        row.duplicated = sqlx::query_scalar(
            "SELECT count(*) FROM documents d
             WHERE d.status = 'indexed' AND d.chunk_count <> (SELECT count(*) FROM chunks c WHERE c.document_id = d.id)",
        )
        .fetch_one(&self.db)
        .await
        .unwrap();
        row.reasons = sqlx::query_scalar(
            "SELECT left(error, 70) || ' (' || count(*) || ')' FROM documents WHERE status = 'failed' GROUP BY left(error, 70)",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
    }
}

/// A process of the stack and the key to call it with.
struct Proc {
    process: process::Proc,
    base: String,
    key: String,
}

impl Proc {
    fn terminate(&mut self, bound: Duration) -> f64 {
        self.process.terminate(bound)
    }

    fn kill9(&mut self) {
        self.process.kill9();
    }
}

/// Counts HTTP answers: 5xx other than 503 are failures; 503 is an outage's honest answer.
#[derive(Default, Clone)]
struct Tally {
    server_errors: Arc<AtomicU64>,
    unavailable: Arc<AtomicU64>,
}

impl Tally {
    fn see(&self, status: reqwest::StatusCode) {
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
        } else if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn into_row(self, row: &mut Row) {
        row.server_errors += self.server_errors.load(Ordering::Relaxed);
        row.unavailable += self.unavailable.load(Ordering::Relaxed);
    }
}

fn text_for(i: usize) -> String {
    let words = ["ownership", "borrowing", "lifetimes", "traits", "closures", "iterators", "modules", "errors"];
    let mut text = format!("# Note {i}\n\n");
    for j in 0..60 {
        text.push_str(words[(i * 7 + j * 3) % words.len()]);
        text.push_str(if j % 9 == 8 { ". " } else { " " });
    }
    text
}

/// Uploads `count` distinct documents, `concurrency` at a time, counting answers.
async fn upload_many(proc: &Proc, client: &reqwest::Client, from: usize, count: usize, tally: &Tally) -> usize {
    use futures::StreamExt;
    let accepted = AtomicU64::new(0);
    futures::stream::iter(from..from + count)
        .for_each_concurrent(8, |i| {
            let (accepted, tally) = (&accepted, tally.clone());
            async move {
                let body = json!({"text": text_for(i), "title": format!("note {i}")});
                if let Ok(response) =
                    client.post(format!("{}/v1/documents", proc.base)).bearer_auth(&proc.key).json(&body).send().await
                {
                    tally.see(response.status());
                    if response.status().is_success() {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    accepted.load(Ordering::Relaxed) as usize
}

/// Probes the API every 100 ms while `fault` lasts, then until it answers 200
/// again; returns the seconds from the end of the fault to that first 200.
async fn probe_through(proc: &Proc, client: &reqwest::Client, fault: Duration, tally: &Tally) -> Option<f64> {
    let started = Instant::now();
    let mut healed_at = None;
    while started.elapsed() < fault + Duration::from_secs(60) {
        let during = started.elapsed() < fault;
        for request in [
            client.get(format!("{}/v1/documents?limit=5", proc.base)),
            client.post(format!("{}/v1/search", proc.base)).json(&json!({"query": "ownership", "mode": "keyword"})),
        ] {
            if let Ok(response) = request.bearer_auth(&proc.key).timeout(Duration::from_secs(30)).send().await {
                tally.see(response.status());
                if !during && response.status().is_success() && healed_at.is_none() {
                    healed_at = Some(started.elapsed().saturating_sub(fault).as_secs_f64());
                }
            }
        }
        if healed_at.is_some() {
            return healed_at;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn kill_mid_indexing(args: &Args, client: &reqwest::Client) -> Row {
    let mut row = Row { scenario: "kill -9 mid-indexing".into(), ..Default::default() };
    let mut stack = Stack::new("kill").await;
    stack.fake.set_latency(Duration::from_millis(40));
    let tally = Tally::default();
    let mut first = stack.start(&[]).await;
    upload_many(&first, client, 0, args.docs, &tally).await;
    // Kill once about a third is indexed, with the rest in flight or queued.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let indexed: i64 = sqlx::query_scalar("SELECT count(*) FROM documents WHERE status = 'indexed'")
            .fetch_one(&stack.db)
            .await
            .unwrap();
        if indexed as usize >= args.docs / 3 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    let restarted = Instant::now();
    let _second = stack.start(&[]).await;
    stack.settle(Duration::from_secs(180)).await;
    row.recover_secs = Some(restarted.elapsed().as_secs_f64());
    row.note = "killed at 1/3 indexed; a new process finishes (visibility 10 s)".into();
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row
}

async fn provider_storm(args: &Args, client: &reqwest::Client) -> Row {
    let mut row = Row { scenario: "provider 429 + 500 storm".into(), ..Default::default() };
    let mut stack = Stack::new("storm").await;
    stack.fake.set_latency(Duration::from_millis(20));
    let faults = (0..60).flat_map(|_| [Fault::RateLimited { retry_after_secs: 0.2 }, Fault::ServerError]);
    stack.fake.push_faults(faults);
    let tally = Tally::default();
    let proc = stack.start(&[]).await;
    let started = Instant::now();
    upload_many(&proc, client, 0, args.docs, &tally).await;
    stack.settle(Duration::from_secs(180)).await;
    row.recover_secs = Some(started.elapsed().as_secs_f64());
    let stats = stack.fake.stats();
    row.note = format!("120 faults injected; provider saw {} embedding requests", stats.embedding_requests);
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row
}

#[derive(Clone, Copy)]
enum Target {
    Postgres,
    Aws(ProxyMode),
}

async fn outage(args: &Args, client: &reqwest::Client, target: Target) -> Row {
    let name = match target {
        Target::Postgres => "Postgres unreachable",
        Target::Aws(ProxyMode::Hang) => "S3/SQS hanging",
        Target::Aws(_) => "S3/SQS refusing",
    };
    let mut row = Row { scenario: format!("{name} {} s", args.outage.as_secs()), ..Default::default() };
    let mut stack = Stack::new(&name.to_lowercase().replace(['/', ' '], "-")).await;
    stack.fake.set_latency(Duration::from_millis(20));
    let tally = Tally::default();
    let proc = stack.start(&[]).await;
    upload_many(&proc, client, 0, args.docs / 2, &tally).await;
    let proxy = match target {
        Target::Postgres => &stack.pg,
        Target::Aws(_) => &stack.aws,
    };
    proxy.set_mode(match target {
        Target::Postgres => ProxyMode::Refuse,
        Target::Aws(mode) => mode,
    });
    let outage = args.outage;
    let restore = async {
        tokio::time::sleep(outage).await;
        proxy.set_mode(ProxyMode::Pass);
    };
    // Uploads during the outage must be refused cleanly (503) or succeed, never half-done.
    let during = upload_many(&proc, client, args.docs / 2, args.docs / 2, &tally);
    let (_, recovered, _) = tokio::join!(restore, probe_through(&proc, client, outage, &tally), during);
    row.recover_secs = recovered;
    stack.settle(Duration::from_secs(180)).await;
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    // Originals in S3 without a row would be orphans (the sweeper's job, hourly).
    let keys = list_keys(&stack).await;
    row.note = format!("{} originals in S3 for {} documents", keys, row.docs);
    row
}

async fn list_keys(stack: &Stack) -> usize {
    let config = aws_sdk_s3::config::Builder::from(&stack.infra.sdk).force_path_style(true).build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let listed = client.list_objects_v2().bucket(&stack.infra.bucket).send().await;
    listed.map(|l| l.key_count().unwrap_or(0) as usize).unwrap_or(0)
}

async fn sigterm_under_chat(client: &reqwest::Client) -> Row {
    let mut row = Row { scenario: "SIGTERM under chat load".into(), ..Default::default() };
    let mut stack = Stack::new("sigterm-chat").await;
    let tally = Tally::default();
    // Long enough for every chat in flight to finish: the point is that they do, without errors.
    let mut proc = stack.start(&[("SHUTDOWN_TIMEOUT_SECS", "20")]).await;
    upload_many(&proc, client, 0, 20, &tally).await;
    stack.settle(Duration::from_secs(60)).await;
    stack.fake.set_latency(Duration::from_millis(800));
    let completed = AtomicU64::new(0);
    let cut_off = AtomicU64::new(0);
    let chats: Vec<_> = (0..30)
        .map(|i| {
            let request = client
                .post(format!("{}/v1/chat", proc.base))
                .bearer_auth(&proc.key)
                .json(&json!({"message": format!("What about ownership {i}?")}));
            let (tally, completed, cut_off) = (tally.clone(), &completed, &cut_off);
            async move {
                match request.send().await {
                    Ok(response) => {
                        tally.see(response.status());
                        if response.status().is_success() {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        cut_off.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .collect();
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let exit = proc.terminate(Duration::from_secs(40));
        row.recover_secs = Some(exit);
    };
    tokio::join!(futures::future::join_all(chats), stop);
    row.note = format!(
        "30 chats in flight: {} completed, {} cut off; exit {:.1} s after SIGTERM (stop timeout 20 s)",
        completed.load(Ordering::Relaxed),
        cut_off.load(Ordering::Relaxed),
        row.recover_secs.unwrap_or(f64::NAN)
    );
    row.recover_secs = None;
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row
}

async fn sigterm_during_extraction(client: &reqwest::Client) -> Row {
    let mut row = Row { scenario: "SIGTERM during long extraction".into(), ..Default::default() };
    let mut stack = Stack::new("sigterm-extraction").await;
    let tally = Tally::default();
    let mut proc = stack.start(&[]).await;
    let text = "abcdefghij0123456789".repeat(400_000);
    let response = client
        .post(format!("{}/v1/documents", proc.base))
        .bearer_auth(&proc.key)
        .json(&json!({"text": text, "title": "8 MB without whitespace"}))
        .send()
        .await
        .expect("upload");
    tally.see(response.status());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let processing: i64 = sqlx::query_scalar("SELECT count(*) FROM documents WHERE status = 'processing'")
            .fetch_one(&stack.db)
            .await
            .unwrap();
        if processing > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exit = proc.terminate(Duration::from_secs(60));
    let status: String = sqlx::query_scalar("SELECT status FROM documents").fetch_one(&stack.db).await.unwrap();
    let restarted = Instant::now();
    let _again = stack.start(&[]).await;
    stack.settle(Duration::from_secs(180)).await;
    row.recover_secs = Some(restarted.elapsed().as_secs_f64());
    row.note = format!("exit {exit:.1} s after SIGTERM (stop timeout 5 s), left `{status}`; a new process indexes it");
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row
}

async fn poison(client: &reqwest::Client) -> Row {
    let mut row = Row { scenario: "poison files".into(), ..Default::default() };
    let mut stack = Stack::new("poison").await;
    let tally = Tally::default();
    let proc = stack.start(&[]).await;
    let noise = stolid_testkit::noise(2_000_000, 0x2545_f491_4f6c_dd1du64);
    let files: Vec<(&str, &str, Vec<u8>)> = vec![
        ("nul.txt", "text/plain", b"Text with a NUL\0 inside it, which Postgres cannot store.".to_vec()),
        ("noise.html", "text/html", noise),
        ("line.txt", "text/plain", "x".repeat(20 * 1024 * 1024).into_bytes()),
        ("deep.html", "text/html", format!("{}deep{}", "<div>".repeat(100_000), "</div>".repeat(100_000)).into_bytes()),
        ("corrupt.pdf", "application/pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage".to_vec()),
        ("empty.txt", "text/plain", Vec::new()),
    ];
    let mut refused_at_upload = Vec::new();
    let started = Instant::now();
    for (name, mime, bytes) in files {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name).mime_str(mime).expect("mime");
        let form = reqwest::multipart::Form::new().part("file", part);
        let response = client
            .post(format!("{}/v1/documents", proc.base))
            .bearer_auth(&proc.key)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        tally.see(response.status());
        if response.status().is_client_error() {
            refused_at_upload.push(format!("{name}: {}", response.status().as_u16()));
        }
    }
    stack.settle(Duration::from_secs(300)).await;
    row.recover_secs = Some(started.elapsed().as_secs_f64());
    row.note = format!("refused at upload: {}", refused_at_upload.join(", "));
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row
}

/// Streaming chats open at SIGTERM end with an error event, not a cut
/// transfer, and every chat call the model server served is in `model_calls`
/// (the billing record) before the process exits inside its stop timeout.
async fn sigterm_under_streams(client: &reqwest::Client) -> Row {
    let mut row = Row { scenario: "SIGTERM under chat streams".into(), ..Default::default() };
    let mut stack = Stack::new("sigterm-streams").await;
    let tally = Tally::default();
    let mut proc = stack.start(&[("SHUTDOWN_TIMEOUT_SECS", "10")]).await;
    upload_many(&proc, client, 0, 10, &tally).await;
    stack.settle(Duration::from_secs(60)).await;
    // One word a second: an answer of a dozen words or more is still streaming
    // at half the stop timeout (5 s after SIGTERM), when stolid ends its streams.
    // At 300 ms the fake's answers (about 14 words over these notes) finished
    // on their own 2 s after SIGTERM, and the scenario tested nothing.
    stack.fake.set_stream_gap(Duration::from_secs(1));
    let streams: Vec<_> = (0..6)
        .map(|i| {
            let request = client.post(format!("{}/v1/chat", proc.base)).bearer_auth(&proc.key).json(&json!({
                "message": format!("Tell me everything about ownership and borrowing, note {i}."),
                "stream": true,
            }));
            tokio::spawn(async move {
                let response = request.send().await.map_err(|e| e.to_string())?;
                response.text().await.map_err(|e| e.to_string())
            })
        })
        .collect();
    let waiting = Instant::now();
    while stack.fake.stats().chat_requests < 6 && waiting.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // well into the answers
    let exit = tokio::task::spawn_blocking(move || proc.terminate(Duration::from_secs(30))).await.expect("terminate");
    // Ended: the error event stolid sends when it stops a stream. Completed: the
    // answer's own `done` before the shutdown reached it (then this run did not
    // test what it is for, and says so). Cut: neither, a broken transfer.
    let (mut ended, mut completed, mut cut) = (0, 0, 0);
    for stream in streams {
        match stream.await.expect("stream task") {
            Ok(body) => match body.lines().rfind(|l| l.starts_with("event:")) {
                Some("event: error") => ended += 1,
                Some("event: done") => completed += 1,
                _ => cut += 1,
            },
            Err(_) => cut += 1,
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM model_calls WHERE operation = 'chat'")
        .fetch_one(&stack.db)
        .await
        .unwrap_or(-1);
    let served = stack.fake.stats().chat_requests as i64;
    row.note = format!(
        "6 streams: {ended} ended with an error event, {completed} completed before the shutdown reached them, \
         {cut} cut; chat calls served {served}, stored {stored}; exit {exit:.1} s after SIGTERM (stop timeout 10 s)"
    );
    row.broken = cut > 0 || completed > 0 || stored != served || exit > 10.0;
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row
}

/// A queue far deeper than the fleet's cap can drain within one job's
/// deadline: jobs wait in line for minutes with JOB_TIMEOUT_SECS at 10, and
/// none of them fails.
async fn cap_backlog(client: &reqwest::Client) -> Row {
    let mut row = Row { scenario: "queue deeper than the cap".into(), ..Default::default() };
    let mut stack = Stack::new("cap-backlog").await;
    let tally = Tally::default();
    let proc = stack
        .start(&[
            ("EMBED_REQUESTS_PER_MINUTE", "120"),
            ("EMBED_MAX_BATCH_INPUTS", "4"),
            ("CHUNK_MAX_TOKENS", "60"),
            ("CHUNK_OVERLAP_TOKENS", "0"),
            ("JOB_TIMEOUT_SECS", "10"),
        ])
        .await;
    let started = Instant::now();
    let docs = 32;
    for i in 0..docs {
        let text: String = (0..17).map(|p| text_for(i * 17 + p).replace("# Note", "Part") + "\n\n").collect();
        let response = client
            .post(format!("{}/v1/documents", proc.base))
            .bearer_auth(&proc.key)
            .json(&json!({"text": text, "title": format!("long note {i}")}))
            .send()
            .await
            .expect("upload");
        tally.see(response.status());
    }
    stack.settle(Duration::from_secs(600)).await;
    row.recover_secs = Some(started.elapsed().as_secs_f64());
    let longest_wait: f64 =
        sqlx::query_scalar("SELECT coalesce(max(wait_ms), 0) FROM model_calls WHERE operation = 'embed'")
            .fetch_one(&stack.db)
            .await
            .unwrap_or(0.0);
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row.note = format!(
        "{docs} documents of 17 chunks at 120 requests/min, 4 inputs each; longest wait for the cap {:.0} s \
         (JOB_TIMEOUT_SECS 10)",
        longest_wait / 1000.0
    );
    row.broken = row.failed > 0;
    row
}

/// The database up but refusing new sessions (connections disallowed: FATAL
/// 55000 at connect, as in a failover or a full `max_connections`): 503s only,
/// and back at once when it accepts them again.
async fn connect_refusals(args: &Args, client: &reqwest::Client) -> Row {
    use sqlx::Connection;
    let mut row =
        Row { scenario: format!("Postgres refusing sessions {} s", args.outage.as_secs()), ..Default::default() };
    let mut stack = Stack::new("postgres-refusing").await;
    let tally = Tally::default();
    let proc = stack.start(&[]).await;
    upload_many(&proc, client, 0, args.docs / 2, &tally).await;
    let (base, name) = stack.infra.database_url.rsplit_once('/').expect("a database URL");
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres")).await.expect("admin connection");
    let alter = |setting: &str| sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {setting}"));
    sqlx::raw_sql(alter("false")).execute(&mut admin).await.expect("closing the database");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&mut admin)
        .await
        .expect("ending its sessions");
    let outage = args.outage;
    let reopen = async {
        tokio::time::sleep(outage).await;
        sqlx::raw_sql(alter("true")).execute(&mut admin).await.expect("reopening the database");
    };
    let during = upload_many(&proc, client, args.docs / 2, args.docs / 2, &tally);
    let (_, recovered, _) = tokio::join!(reopen, probe_through(&proc, client, outage, &tally), during);
    row.recover_secs = recovered;
    stack.settle(Duration::from_secs(180)).await;
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row.note = "ALTER DATABASE ... ALLOW_CONNECTIONS false and its sessions ended".into();
    row
}

/// Requests built to hold the database or the process: a search filter with
/// 10,000 `in` values and a multipart upload of 10,000 tiny files. Both are
/// refused up front (422) and create nothing.
async fn hostile_requests(client: &reqwest::Client) -> Row {
    let mut row = Row { scenario: "hostile filter and 10k-part upload".into(), ..Default::default() };
    let mut stack = Stack::new("hostile").await;
    let tally = Tally::default();
    let proc = stack.start(&[]).await;
    upload_many(&proc, client, 0, 20, &tally).await;
    stack.settle(Duration::from_secs(60)).await;
    let values: Vec<String> = (0..10_000).map(|i| format!("value-{i}")).collect();
    let started = Instant::now();
    let search = client
        .post(format!("{}/v1/search", proc.base))
        .bearer_auth(&proc.key)
        .json(&json!({"query": "wombat", "filter": {"t": {"in": values}}}))
        .send()
        .await
        .expect("search");
    let search_status = search.status();
    let search_ms = started.elapsed().as_secs_f64() * 1000.0;
    tally.see(search_status);
    let mut form = reqwest::multipart::Form::new();
    for i in 0..10_000 {
        let part = reqwest::multipart::Part::bytes(format!("tiny {i}").into_bytes())
            .file_name(format!("f{i}.txt"))
            .mime_str("text/plain")
            .expect("mime");
        form = form.part("file", part);
    }
    let started = Instant::now();
    let upload = client.post(format!("{}/v1/documents", proc.base)).bearer_auth(&proc.key).multipart(form).send().await;
    let upload_status = upload.map(|r| r.status());
    let upload_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(status) = upload_status {
        tally.see(status);
    }
    stack.settle(Duration::from_secs(60)).await;
    tally.into_row(&mut row);
    stack.count(&mut row).await;
    row.note = format!(
        "search with 10,000 `in` values: {} in {search_ms:.0} ms; 10,000-file upload: {} in {upload_ms:.0} ms; \
         {} documents (20 before)",
        search_status.as_u16(),
        upload_status.as_ref().map_or_else(|e| e.to_string(), |s| s.as_u16().to_string()),
        row.docs
    );
    row.broken = search_status != reqwest::StatusCode::UNPROCESSABLE_ENTITY
        || upload_status.ok() != Some(reqwest::StatusCode::UNPROCESSABLE_ENTITY)
        || row.docs != 20;
    row
}

async fn schemathesis(args: &Args, st: &str) -> Row {
    let mut row = Row { scenario: "schemathesis over /openapi.json".into(), ..Default::default() };
    let mut stack = Stack::new("schemathesis-app").await;
    let proc = stack.start(&[]).await;
    let started = Instant::now();
    let output = Command::new(st)
        .args(["run", &format!("{}/openapi.json", proc.base)])
        // Every check but `positive_data_acceptance`: some rules span fields
        // ("exactly one of `text` and `s3_uri`", "`ids`, a `collection` or
        // `all`"), and cursors are opaque, so a schema-valid request can still
        // be rightly refused with 4xx (documented per operation).
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", &args.examples.to_string()])
        .args(["--header", &format!("Authorization: Bearer {}", proc.key)])
        .args(["--request-timeout", "30"])
        .env("NO_COLOR", "1")
        // Its cache goes beside the log, not into the checkout.
        .current_dir(stolid_testkit::repo_root().join(".local/chaos"))
        .output()
        .expect("running schemathesis");
    row.recover_secs = Some(started.elapsed().as_secs_f64());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = stolid_testkit::repo_root().join(".local/chaos/schemathesis.log");
    let _ = std::fs::File::create(log).and_then(|mut f| f.write_all(&output.stdout));
    let summary: Vec<&str> =
        stdout.lines().filter(|l| l.contains("passed") || l.contains("failed") || l.contains("error")).collect();
    let server_errors = stdout.lines().filter(|l| l.contains("Server error")).count() as u64;
    row.server_errors = server_errors;
    row.note = format!(
        "exit {}; {} (full output: .local/chaos/schemathesis.log)",
        output.status.code().unwrap_or(-1),
        summary.last().map_or("no summary", |s| s.trim())
    );
    row.broken = !output.status.success();
    stack.settle(Duration::from_secs(120)).await;
    stack.count(&mut row).await;
    row
}

#[tokio::main]
async fn main() {
    let args = args();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("http client");
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| name.contains(only));
    let mut rows = Vec::new();
    macro_rules! scenario {
        ($name:expr, $run:expr) => {
            if wanted($name) {
                eprintln!("[chaos] {} ...", $name);
                let row = $run.await;
                eprintln!("[chaos] {} done", $name);
                rows.push(row);
            }
        };
    }
    scenario!("kill", kill_mid_indexing(&args, &client));
    scenario!("storm", provider_storm(&args, &client));
    scenario!("postgres", outage(&args, &client, Target::Postgres));
    scenario!("s3-refuse", outage(&args, &client, Target::Aws(ProxyMode::Refuse)));
    scenario!("s3-hang", outage(&args, &client, Target::Aws(ProxyMode::Hang)));
    scenario!("sigterm-chat", sigterm_under_chat(&client));
    scenario!("sigterm-extraction", sigterm_during_extraction(&client));
    scenario!("poison", poison(&client));
    scenario!("sigterm-streams", sigterm_under_streams(&client));
    scenario!("cap-backlog", cap_backlog(&client));
    scenario!("postgres-refusing", connect_refusals(&args, &client));
    scenario!("hostile", hostile_requests(&client));
    match &args.schemathesis {
        Some(st) => scenario!("schemathesis", schemathesis(&args, st)),
        None => eprintln!("[chaos] schemathesis skipped: no --schemathesis binary"),
    }

    println!();
    println!(
        "{:<34} {:>5} {:>7} {:>6} {:>5} {:>5} {:>5} {:>5} {:>8}",
        "scenario", "docs", "indexed", "failed", "stuck", "dup", "5xx", "503", "recover"
    );
    for row in &rows {
        let recover = row.recover_secs.map_or("-".to_string(), |s| format!("{s:.1}s"));
        println!(
            "{:<34} {:>5} {:>7} {:>6} {:>5} {:>5} {:>5} {:>5} {:>8}{}",
            row.scenario,
            row.docs,
            row.indexed,
            row.failed,
            row.stuck,
            row.duplicated,
            row.server_errors,
            row.unavailable,
            recover,
            if row.bad() { "  <-- FAILED" } else { "" }
        );
        if !row.note.is_empty() {
            println!("    {}", row.note);
        }
        for reason in &row.reasons {
            println!("    failed: {reason}");
        }
    }
    let bad = rows.iter().filter(|r| r.bad()).count();
    println!("\n{} scenarios, {} with lost, stuck or duplicated documents or non-503 5xx", rows.len(), bad);
    if bad > 0 {
        std::process::exit(1);
    }
}

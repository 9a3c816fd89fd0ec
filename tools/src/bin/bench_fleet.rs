//! `make bench-fleet`: the whole pipeline (HTTP upload, S3, SQS, workers, the
//! fleet's embedding cap, Postgres) run by N `stolid serve` processes started at
//! the same moment, each configured with the same cap, against a fake provider
//! that enforces per-minute caps as one-second buckets (as OpenAI does) and
//! counts from its own side.
//!
//! Per scenario it prints: requests, inputs per request, 429s, tokens, the
//! busiest 1 s and 60 s windows against the cap, wall time, wall time over the
//! ideal (the larger of tokens / token rate and the fewest possible requests /
//! request rate), and stolid's CPU seconds per 100 documents (the processes'
//! own, from /proc).
//!
//! Options: --corpus DIR (default: the Rust book's HTML under the toolchain)
//!   --docs N (default: all)  --procs 1,3  --scenarios requests,tokens,none (also: tier)
//!   --latency-ms N (fake model latency, default 50)
//! `STOLID_BIN=path` runs another build of stolid (a baseline: an older
//! commit's binary takes the same settings).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use stolid_testkit::bench;
use stolid_testkit::fake_openai::{Arrival, BucketCaps, FakeOpenAi};
use stolid_testkit::infra::create_infra_for;
use stolid_testkit::process::Proc;

/// The provider's per-request limits (OpenAI's).
const PROVIDER_MAX_TOKENS_PER_REQUEST: u64 = 300_000;

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u32>,
    /// The provider's inputs-per-request limit in this scenario.
    max_inputs: u32,
}

const SCENARIOS: [Scenario; 4] = [
    // A provider with a small per-request input limit: requests are what bind.
    Scenario { name: "requests", requests_per_minute: Some(120), tokens_per_minute: None, max_inputs: 32 },
    Scenario { name: "tokens", requests_per_minute: None, tokens_per_minute: Some(200_000), max_inputs: 2048 },
    Scenario { name: "none", requests_per_minute: None, tokens_per_minute: None, max_inputs: 2048 },
    // Both caps of a paid tier, as the issue first measured stolid (600 requests and 1M tokens a minute).
    Scenario { name: "tier", requests_per_minute: Some(600), tokens_per_minute: Some(1_000_000), max_inputs: 2048 },
];

struct Args {
    corpus: PathBuf,
    docs: usize,
    procs: Vec<usize>,
    scenarios: Vec<Scenario>,
    latency: Duration,
}

fn args() -> Args {
    let map = bench::options();
    Args {
        corpus: map.get("corpus").map(PathBuf::from).unwrap_or_else(bench::rust_book),
        docs: map.get("docs").map_or(usize::MAX, |v| v.parse().expect("--docs N")),
        procs: bench::list(&map, "procs", "1,3"),
        scenarios: bench::list::<String>(&map, "scenarios", "requests,tokens,none")
            .iter()
            .map(|name| *SCENARIOS.iter().find(|s| s.name == name).expect("scenarios: requests, tokens, none, tier"))
            .collect(),
        latency: Duration::from_millis(map.get("latency-ms").map_or(50, |v| v.parse().expect("--latency-ms N"))),
    }
}

struct Outcome {
    scenario: Scenario,
    procs: usize,
    started: usize,
    docs: i64,
    failed: i64,
    wall: f64,
    cpu: f64,
    log: Vec<Arrival>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let files = bench::corpus(&args.corpus, args.docs)?;
    let corpus: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (f.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(f).unwrap()))
        .collect();
    let bytes: usize = corpus.iter().map(|(_, b)| b.len()).sum();
    eprintln!(
        "bench-fleet: {} documents ({:.1} MB) from {}; fake model latency {:?}",
        corpus.len(),
        bytes as f64 / 1e6,
        args.corpus.display(),
        args.latency
    );
    println!(
        "{:<9} {:>5} {:>5} {:>9} {:>8} {:>7} {:>5} {:>9} {:>13} {:>13} {:>7} {:>7} {:>6} {:>10}",
        "scenario",
        "procs",
        "up",
        "docs",
        "requests",
        "in/req",
        "429s",
        "tokens",
        "busiest 1 s",
        "busiest 60 s",
        "wall s",
        "ideal s",
        "ratio",
        "cpu/100doc"
    );
    for scenario in &args.scenarios {
        for &procs in &args.procs {
            eprintln!("[bench-fleet] scenario {} with {procs} process(es)...", scenario.name);
            let o = run(*scenario, procs, &corpus, args.latency).await?;
            let f = Figures::of(&o);
            println!(
                "{:<9} {:>5} {:>5} {:>9} {:>8} {:>7.1} {:>5} {:>9} {:>13} {:>13} {:>7.1} {:>7.1} {:>6} {:>10.2}",
                o.scenario.name,
                o.procs,
                format!("{}/{}", o.started, o.procs),
                format!("{}/{}", o.docs - o.failed, o.docs),
                f.requests,
                f.inputs as f64 / f.requests.max(1) as f64,
                f.throttled,
                f.tokens,
                f.busiest(1),
                f.busiest(60),
                o.wall,
                f.ideal,
                f.ratio(o.wall),
                o.cpu * 100.0 / o.docs.max(1) as f64,
            );
        }
    }
    Ok(())
}

/// One scenario on a private database, bucket and queue.
async fn run(
    scenario: Scenario,
    procs: usize,
    corpus: &[(String, Vec<u8>)],
    latency: Duration,
) -> anyhow::Result<Outcome> {
    let infra = create_infra_for("bench").await;
    let fake = FakeOpenAi::start().await;
    fake.set_latency(latency);
    fake.set_bucket_caps(BucketCaps {
        requests_per_minute: scenario.requests_per_minute,
        tokens_per_minute: scenario.tokens_per_minute,
    });
    let mut env = infra.process_env();
    env.extend([
        ("OPENAI_API_KEY", "sk-bench".into()),
        ("OPENAI_BASE_URL", fake.base_url()),
        ("WORKER_WAIT_TIME_SECS", "1".into()),
        ("EMBED_MAX_BATCH_INPUTS", scenario.max_inputs.to_string()),
        // "No cap" is a cap the provider never reaches.
        ("EMBED_REQUESTS_PER_MINUTE", scenario.requests_per_minute.unwrap_or(1_000_000).to_string()),
        ("EMBED_TOKENS_PER_MINUTE", scenario.tokens_per_minute.unwrap_or(100_000_000).to_string()),
    ]);
    let dir = stolid_testkit::repo_root().join(".local/bench-fleet");
    std::fs::create_dir_all(&dir)?;
    // Every process at the same moment, as an ECS service with this desired count.
    let starts: Vec<_> = (0..procs)
        .map(|i| {
            let env = env.clone();
            let log = dir.join(format!("{}-{procs}-{i}.log", scenario.name));
            let _ = std::fs::remove_file(&log);
            std::thread::spawn(move || std::panic::catch_unwind(|| Proc::start(&env, &log)).ok())
        })
        .collect();
    let processes: Vec<Proc> = starts.into_iter().filter_map(|s| s.join().ok().flatten()).collect();
    let started = processes.len();
    anyhow::ensure!(started > 0, "no process came up");
    let db = sqlx::PgPool::connect(&infra.database_url).await?;
    let tenant = stolid::store::keys::ensure_tenant(&db, "bench").await?;
    let key = stolid::store::keys::create_key(&db, tenant).await?.key;

    let clock = Instant::now();
    let client = reqwest::Client::new();
    let bases: Vec<String> = processes.iter().map(|p| p.base.clone()).collect();
    // Round-robin, as a load balancer would.
    futures::stream::iter(corpus.iter().enumerate())
        .map(|(i, (name, bytes))| {
            let (client, base, key) = (client.clone(), bases[i % bases.len()].clone(), key.clone());
            async move {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name(name.clone())
                    .mime_str("text/html")
                    .unwrap();
                let form = reqwest::multipart::Form::new().part("file", part);
                let response =
                    client.post(format!("{base}/v1/documents")).bearer_auth(key).multipart(form).send().await;
                assert!(response.is_ok_and(|r| r.status().is_success()), "an upload failed");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let (docs, failed) = loop {
        let (open, docs, failed): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('queued', 'processing')), count(*),
                    count(*) FILTER (WHERE status = 'failed') FROM documents",
        )
        .fetch_one(&db)
        .await?;
        if open == 0 {
            break (docs, failed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = clock.elapsed().as_secs_f64();
    let cpu = processes.iter().map(Proc::cpu_seconds).sum();
    for mut process in processes {
        process.terminate(Duration::from_secs(10));
    }
    db.close().await;
    infra.remove().await?;
    let log = fake.embedding_log();
    write_arrivals(&dir.join(format!("{}-{procs}-arrivals.csv", scenario.name)), clock, &log)?;
    Ok(Outcome { scenario, procs, started, docs, failed, wall, cpu, log })
}

/// The provider's side of the run, one request a line, for looking at where
/// the wall time went (gaps, partial requests).
fn write_arrivals(path: &std::path::Path, clock: Instant, log: &[Arrival]) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut csv = String::from("seconds,status,inputs,tokens\n");
    for a in log {
        let at = a.at.checked_duration_since(clock).unwrap_or_default().as_secs_f64();
        let _ = writeln!(csv, "{at:.3},{},{},{}", a.status, a.inputs, a.tokens);
    }
    std::fs::write(path, csv)
}

struct Figures {
    served: Vec<Arrival>,
    requests: u64,
    inputs: u64,
    tokens: u64,
    throttled: u64,
    ideal: f64,
    scenario: Scenario,
}

impl Figures {
    fn of(o: &Outcome) -> Self {
        let served: Vec<Arrival> = o.log.iter().copied().filter(|a| a.status == 200).collect();
        let requests = served.len() as u64;
        let inputs: u64 = served.iter().map(|a| a.inputs as u64).sum();
        let tokens: u64 = served.iter().map(|a| a.tokens as u64).sum();
        let throttled = o.log.iter().filter(|a| a.status == 429).count() as u64;
        let fewest =
            (inputs.div_ceil(o.scenario.max_inputs as u64)).max(tokens.div_ceil(PROVIDER_MAX_TOKENS_PER_REQUEST));
        let by_tokens = o.scenario.tokens_per_minute.map_or(0.0, |t| tokens as f64 / (t as f64 / 60.0));
        let by_requests = o.scenario.requests_per_minute.map_or(0.0, |r| fewest as f64 / (r as f64 / 60.0));
        Self { served, requests, inputs, tokens, throttled, ideal: by_tokens.max(by_requests), scenario: o.scenario }
    }

    /// Wall time over the ideal; without a cap there is no ideal.
    fn ratio(&self, wall: f64) -> String {
        if self.ideal > 0.0 { format!("{:.2}", wall / self.ideal) } else { "-".to_string() }
    }

    /// The busiest window of `secs` seconds: "requests/cap" and "tokens/cap" where capped.
    fn busiest(&self, secs: u64) -> String {
        let window = Duration::from_secs(secs);
        let (requests, tokens) = busiest_window(&self.served, window);
        let share = |per_minute: u32| per_minute as f64 * secs as f64 / 60.0;
        match (self.scenario.requests_per_minute, self.scenario.tokens_per_minute) {
            (Some(r), Some(t)) => format!("{requests}/{:.0} {tokens}/{:.0}", share(r), share(t)),
            (Some(r), _) => format!("{requests}/{:.0}", share(r)),
            (_, Some(t)) => format!("{tokens}/{:.0}", share(t)),
            _ => format!("{requests} req"),
        }
    }
}

/// The most requests and the most tokens served in any window of `window`.
fn busiest_window(served: &[Arrival], window: Duration) -> (u64, u64) {
    let (mut best_requests, mut best_tokens) = (0, 0);
    let (mut start, mut tokens) = (0, 0u64);
    for end in 0..served.len() {
        tokens += served[end].tokens as u64;
        while served[end].at.duration_since(served[start].at) >= window {
            tokens -= served[start].tokens as u64;
            start += 1;
        }
        best_requests = best_requests.max((end - start + 1) as u64);
        best_tokens = best_tokens.max(tokens);
    }
    (best_requests, best_tokens)
}

//! The real `stolid` binary as a process: configuration errors, JSON logs with
//! request ids, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stolid::store::documents::DocumentStatus;

use crate::helpers::{Infra, base_env, create_infra, wait_for_status};

/// A command with a clean environment, run from an empty folder so no `.env` is picked up.
fn stolid() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stolid"));
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    command.current_dir(std::env::temp_dir());
    command
}

/// A missing or malformed setting stops the process at start with one line naming it.
#[test]
fn invalid_configuration_fails_at_start_naming_the_variable() {
    let output = stolid().arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let output = stolid()
        .arg("serve")
        .envs([("DATABASE_URL", "postgres://x/y"), ("S3_BUCKET", "b"), ("SQS_QUEUE_URL", "q")])
        .env("EMBED_REQUESTS_PER_MINUTE", "lots")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("EMBED_REQUESTS_PER_MINUTE=\"lots\" is invalid"), "{stderr}");
}

struct Server {
    child: Child,
    port: u16,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Waits for a log line satisfying `pred`, returning every line seen so far.
    fn wait_for(&self, seen: &mut Vec<String>, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                seen.push(line.clone());
                let json: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                if pred(&json) {
                    return json;
                }
            }
        }
        panic!("log line never appeared; saw:\n{}", seen.join("\n"));
    }
}

async fn start_server(seen: &mut Vec<String>, extra_env: &[(&str, &str)]) -> (Server, Infra) {
    let infra = create_infra().await;
    let env = base_env();
    let mut command = stolid();
    command
        .arg("serve")
        .env("DATABASE_URL", &infra.database_url)
        .env("S3_BUCKET", &infra.bucket)
        .env("SQS_QUEUE_URL", &infra.queue_url)
        .env("WORKER_WAIT_TIME_SECS", "1")
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .envs(extra_env.iter().copied());
    for key in ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        if let Some(value) = env.get(key) {
            command.env(key, value);
        }
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut server = Server { child, port: 0, lines };
    let listening = server.wait_for(seen, |j| j["message"] == "listening");
    server.port = listening["port"].as_u64().unwrap() as u16;
    (server, infra)
}

/// Uploads `text` through the server's API; the new document's id.
async fn upload_text(port: u16, key: &str, text: &str, title: &str) -> uuid::Uuid {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/documents"))
        .bearer_auth(key)
        .json(&serde_json::json!({"text": text, "title": title}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    body["documents"][0]["id"].as_str().unwrap().parse().unwrap()
}

impl Server {
    /// Sends SIGTERM and waits for the process to exit (for at most `bound`).
    fn terminate(&mut self, bound: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > bound {
                let _ = self.child.kill();
                panic!("did not exit within {bound:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every stdout line is a JSON object; the lines of a request carry its request id.
/// SIGTERM drains and exits 0.
#[tokio::test]
async fn logs_are_json_with_request_ids_and_sigterm_shuts_down_cleanly() {
    let mut seen = Vec::new();
    let (mut server, _infra) = start_server(&mut seen, &[]).await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://127.0.0.1:{}/readyz", server.port))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let line = server.wait_for(&mut seen, |j| j["span"]["request_id"] == "trace-me-42");
    for field in ["timestamp", "level", "message", "target"] {
        assert!(line.get(field).is_some(), "{field} missing in {line}");
    }
    assert_eq!(line["status"], 200);
    assert_eq!(line["span"]["path"], "/readyz");

    let status = server.terminate(Duration::from_secs(10));
    server.wait_for(&mut seen, |j| j["message"] == "stopped");
    assert!(status.success(), "{status:?}");
    for line in server.lines.try_iter() {
        seen.push(line);
    }
    for line in &seen {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|j| j.is_object()),
            "not a JSON object: {line}"
        );
    }
}

/// SIGTERM while a worker is deep in CPU-bound extraction on a blocking thread
/// (which cannot be cancelled): the process still exits within its stop
/// timeout, and the released document says `queued`, not `processing`.
#[tokio::test]
async fn sigterm_during_a_long_extraction_exits_within_the_stop_timeout() {
    let mut seen = Vec::new();
    let (mut server, infra) = start_server(&mut seen, &[("SHUTDOWN_TIMEOUT_SECS", "2")]).await;
    let db = sqlx::PgPool::connect(&infra.database_url).await.unwrap();
    let tenant = stolid::store::keys::ensure_tenant(&db, "acme").await.unwrap();
    let key = stolid::store::keys::create_key(&db, tenant).await.unwrap().key;
    // Whitespace-free text chunks slowest: several MB take far longer than the
    // stop timeout on any machine (`make bench-chunk`: about 0.5 MB/s, release).
    let text = "abcdefghij0123456789".repeat(400_000);
    let id = upload_text(server.port, &key, &text, "long").await;
    wait_for_status(&db, tenant, id, DocumentStatus::Processing).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // into the extraction
    // The stop timeout is 2 s; the bound only guards against a hang (before the
    // fix the process ran on until the extraction ended).
    let status = server.terminate(Duration::from_secs(8));
    assert!(status.success(), "{status:?}");
    let doc = stolid::store::documents::get(&db, tenant, id).await.unwrap().unwrap();
    assert_eq!(doc.status, DocumentStatus::Queued, "{doc:?}");
    assert!(doc.error.as_deref().unwrap_or("").contains("shutdown"), "{doc:?}");
}

/// The operations guide's Logs Insights queries, run (by `testkit::insights`) over the
/// log of a real run: chats in two conversations, a throttled embedding and a
/// call refused by a budget. Each answers what it says, from the same figures
/// Postgres holds; and every EMF line is valid EMF.
#[tokio::test]
async fn the_operations_guides_logs_insights_queries_answer_from_a_real_runs_log() {
    use stolid_testkit::fake_openai::{FakeOpenAi, Fault};
    use stolid_testkit::{emf, insights};

    let fake = FakeOpenAi::start().await;
    let base_url = fake.base_url();
    let env = [
        ("OPENAI_API_KEY", "sk-fake"),
        ("OPENAI_BASE_URL", base_url.as_str()),
        ("EMBEDDING_DIMENSIONS", "384"),
        ("RERANK_CANDIDATES", "0"),
    ];
    let mut seen = Vec::new();
    let (mut server, infra) = start_server(&mut seen, &env).await;
    let db = sqlx::PgPool::connect(&infra.database_url).await.unwrap();
    let tenant = stolid::store::keys::ensure_tenant(&db, "acme").await.unwrap();
    let key = stolid::store::keys::create_key(&db, tenant).await.unwrap().key;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", server.port);
    let post = |path: &str, body: serde_json::Value, request_id: &str| {
        client.post(url(path)).bearer_auth(&key).header("x-request-id", request_id).json(&body).send()
    };

    let body = serde_json::json!({"text": "Ownership moves values. Borrowing lends them.", "title": "own"});
    let uploaded: serde_json::Value = post("/v1/documents", body, "upload").await.unwrap().json().await.unwrap();
    let id: uuid::Uuid = uploaded["documents"][0]["id"].as_str().unwrap().parse().unwrap();
    wait_for_status(&db, tenant, id, DocumentStatus::Indexed).await;
    let first: serde_json::Value = post("/v1/chat", serde_json::json!({"message": "How do values move?"}), "asked-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = first["conversation_id"].as_str().unwrap();
    let follow_up = serde_json::json!({"message": "And borrowing?", "conversation_id": conversation});
    assert_eq!(post("/v1/chat", follow_up, "asked-2").await.unwrap().status(), 200);
    let other = serde_json::json!({"message": "What lends values?"});
    assert_eq!(post("/v1/chat", other, "asked-3").await.unwrap().status(), 200);
    fake.push_faults([Fault::RateLimited { retry_after_secs: 0.05 }]);
    let search = serde_json::json!({"query": "throttled once", "mode": "vector"});
    assert_eq!(post("/v1/search", search, "throttled").await.unwrap().status(), 200);
    let limits =
        stolid::llm::accounting::budget_rows::LimitChanges { tokens_per_day: Some(Some(1)), ..Default::default() };
    stolid::llm::accounting::budget_rows::set_limits(&db, tenant, &limits).await.unwrap();
    let refused = post("/v1/chat", serde_json::json!({"message": "Over budget?"}), "refused").await.unwrap();
    assert_eq!(refused.status(), 429);

    assert!(server.terminate(Duration::from_secs(10)).success());
    seen.extend(server.lines.try_iter());
    let lines: Vec<serde_json::Value> = seen.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    for line in lines.iter().filter(|l| l.get("_aws").is_some()) {
        emf::check(line).unwrap_or_else(|err| panic!("{err}: {line}"));
    }

    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let queries = insights::documented_queries(&guide);
    assert!(queries.len() >= 6, "{queries:?}");
    for (title, query) in queries {
        let query = query.replace("REQUEST-ID", "asked-1");
        let rows = insights::run(&query, &lines).unwrap_or_else(|err| panic!("{title}: {err}"));
        let number = |row: &serde_json::Map<String, serde_json::Value>, field: &str| {
            row.get(field).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("{title}: no {field} in {row:?}"))
        };
        if title.starts_with("P95 cost per conversation") {
            let most: f64 = sqlx::query_scalar(
                "SELECT max(cost) FROM (SELECT sum(cost_usd) AS cost FROM model_calls
                 WHERE conversation_id IS NOT NULL GROUP BY conversation_id) c",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            assert_eq!(number(&rows[0], "conversations"), 2.0, "{title}: {rows:?}");
            assert!((number(&rows[0], "max") - most).abs() < 1e-12 && most > 0.0, "{title}: {rows:?} vs {most}");
            assert!(number(&rows[0], "p95") <= most, "{title}: {rows:?}");
        } else if title.starts_with("Tokens, cost and latency") {
            let counts: Vec<(String, i64)> =
                sqlx::query_as("SELECT model, count(*) FROM model_calls GROUP BY model").fetch_all(&db).await.unwrap();
            assert_eq!(rows.len(), counts.len(), "{title}: {rows:?}");
            for (model, calls) in counts {
                let row = rows.iter().find(|r| r["model"] == model.as_str()).expect("a row per model");
                assert_eq!(number(row, "calls"), calls as f64, "{title}: {model}");
            }
        } else if title.starts_with("Throttling") {
            let throttled: Vec<_> = rows.iter().filter(|r| r["outcome"] == "rate_limited").collect();
            assert_eq!(throttled.len(), 1, "{title}: {rows:?}");
            assert_eq!(number(throttled[0], "count(*)"), 1.0);
        } else if title.starts_with("Everything one request did") {
            assert!(rows.iter().any(|r| r.get("span").is_some()), "{title}: the HTTP line");
            assert!(rows.iter().any(|r| r["event"] == "model_call"), "{title}: its model calls");
            assert!(rows.iter().any(|r| r["event"] == "request_timing"), "{title}: its timing");
            let times: Vec<&str> = rows.iter().map(|r| r["timestamp"].as_str().unwrap()).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{title}: in time order");
        } else if title.starts_with("Where chat's time goes") {
            let requests = |first: bool| {
                let row = rows.iter().find(|r| r["first_message"] == first).expect("both kinds of message");
                number(row, "requests")
            };
            assert_eq!((requests(true), requests(false)), (2.0, 1.0), "{title}: {rows:?}");
        } else if title.starts_with("Calls refused by budgets") {
            assert_eq!(rows.len(), 1, "{title}: {rows:?}");
            assert_eq!((rows[0]["period"].as_str(), number(&rows[0], "refused")), (Some("day"), 1.0));
        } else {
            panic!("a new documented query, {title:?}: say here what it must answer");
        }
    }
}

/// SIGTERM while chats stream from a slow model: every stream ends with an
/// `error` event (`unavailable`: the server is shutting down) instead of a cut
/// transfer, every chat call the model served is stored in `model_calls` (the
/// calls cut short too: billing records are data), and the process exits
/// within SHUTDOWN_TIMEOUT_SECS.
#[tokio::test]
async fn sigterm_ends_open_chat_streams_cleanly_and_stores_every_model_call() {
    let fake = stolid_testkit::fake_openai::FakeOpenAi::start().await;
    fake.set_stream_gap(Duration::from_millis(300));
    streams_end_cleanly_at_sigterm(fake, "chat", None, |i| {
        serde_json::json!({
            "message": format!("What happens to a value when its owner goes out of scope? ({i})"),
            "stream": true,
        })
    })
    .await;
}

/// The same for agent streams, whose model calls are slow to answer (they do not stream).
#[tokio::test]
async fn sigterm_ends_open_agent_streams_cleanly_and_stores_every_model_call() {
    let fake = stolid_testkit::fake_openai::FakeOpenAi::start().await;
    streams_end_cleanly_at_sigterm(
        fake,
        "agent",
        Some(Duration::from_secs(2)),
        |i| serde_json::json!({"message": format!("Find what the documents say about owners ({i})"), "stream": true}),
    )
    .await;
}

/// Six streams of `/v1/{endpoint}` open against a slow model, then SIGTERM
/// with SHUTDOWN_TIMEOUT_SECS=4: see the two tests above. `latency`: how long
/// the model takes to answer once the document is indexed.
async fn streams_end_cleanly_at_sigterm(
    fake: stolid_testkit::fake_openai::FakeOpenAi,
    endpoint: &str,
    latency: Option<Duration>,
    body: impl Fn(usize) -> serde_json::Value,
) {
    let base_url = fake.base_url();
    let mut seen = Vec::new();
    let env = [
        ("SHUTDOWN_TIMEOUT_SECS", "4"),
        ("OPENAI_API_KEY", "sk-fake"),
        ("OPENAI_BASE_URL", base_url.as_str()),
        ("EMBEDDING_DIMENSIONS", "384"),
    ];
    let (mut server, infra) = start_server(&mut seen, &env).await;
    let db = sqlx::PgPool::connect(&infra.database_url).await.unwrap();
    let tenant = stolid::store::keys::ensure_tenant(&db, "acme").await.unwrap();
    let key = stolid::store::keys::create_key(&db, tenant).await.unwrap().key;
    let api = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();
    let text = "Each value in Rust has an owner. There can only be one owner at a time. \
                When the owner goes out of scope, the value will be dropped. ";
    let id = upload_text(server.port, &key, &text.repeat(6), "ownership").await;
    wait_for_status(&db, tenant, id, DocumentStatus::Indexed).await;
    if let Some(latency) = latency {
        fake.set_latency(latency);
    }

    let streams: Vec<_> = (0..6)
        .map(|i| {
            let request = client.post(format!("{api}/v1/{endpoint}")).bearer_auth(&key).json(&body(i));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.text().await
            })
        })
        .collect();
    let streaming = Instant::now();
    while fake.stats().chat_requests < 6 {
        assert!(streaming.elapsed() < Duration::from_secs(20), "the streams never reached the model");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // well into the answers

    let sent = Instant::now();
    let (server, status) = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(10));
        (server, status)
    })
    .await
    .unwrap();
    let exited_after = sent.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(exited_after < Duration::from_secs(4), "exited {exited_after:?} after SIGTERM; the stop timeout is 4 s");
    for stream in streams {
        let body = stream.await.unwrap().expect("the stream ended cleanly, not cut short");
        let last_event = body.lines().rfind(|line| line.starts_with("event:"));
        assert_eq!(last_event, Some("event: error"), "{body}");
        assert!(body.contains("shutting down") && body.contains("\"unavailable\""), "{body}");
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM model_calls WHERE operation = 'chat'").fetch_one(&db).await.unwrap();
    let served = fake.stats().chat_requests;
    if latency.is_none() {
        assert_eq!(stored as u64, served, "every chat call is stored");
    } else {
        // The fake counts a call once its latency has passed; a call cut while
        // the fake still waited is stored (as cancelled) but not counted there.
        assert!(stored as u64 >= served, "every chat call is stored: {stored} stored, {served} served");
        assert!(served > 0);
    }
    drop(server);
}

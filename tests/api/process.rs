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
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://127.0.0.1:{}/v1/documents", server.port))
        .bearer_auth(&key)
        .json(&serde_json::json!({"text": text, "title": "long"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let id: uuid::Uuid = body["documents"][0]["id"].as_str().unwrap().parse().unwrap();
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

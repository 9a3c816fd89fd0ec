//! The ops signals against a controlled run: a fake model with a known
//! latency, chats that start conversations and chats that follow up.

use std::time::Duration;

use serde_json::{Value, json};
use stolid_testkit::fake_openai::Fault;

use crate::helpers::{Options, TestApp, spawn_app_with_fake};

const LATENCY: Duration = Duration::from_millis(60);

async fn signals(app: &TestApp) -> Value {
    let response = app.get("/v1/ops/signals").send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn chat(app: &TestApp, message: &str, conversation: Option<&str>) -> String {
    let body = json!({"message": message, "conversation_id": conversation, "rerank": false});
    let reply: Value = app.post("/v1/chat").json(&body).send().await.unwrap().json().await.unwrap();
    reply["conversation_id"].as_str().unwrap_or_else(|| panic!("{reply}")).to_string()
}

/// First messages and follow-ups are told apart, each chat's model time is
/// what the fake spent (two calls of 60 ms for a first message: the query
/// embedding and the answer; three for a follow-up, which is rewritten first),
/// the model dominates the response and vector search does not, and a 429
/// from the provider turns the embedding verdict to `act`.
#[tokio::test]
async fn signals_match_a_run_with_a_model_of_known_latency() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    app.index_all([json!({"title": "ownership", "text": "Ownership moves values. Borrowing lends them for a while."})])
        .await;
    fake.set_latency(LATENCY);
    for i in 0..6 {
        let conversation = chat(&app, &format!("How does ownership move values? ({i})"), None).await;
        chat(&app, "And how does borrowing work?", Some(&conversation)).await;
    }
    let s = signals(&app).await;
    assert_eq!(s["scope"], "tenant");
    assert_eq!(s["window_secs"], 3600);
    let cold = &s["cold_start"];
    assert_eq!((cold["first_message"]["count"].as_i64(), cold["later_messages"]["count"].as_i64()), (Some(6), Some(6)));
    assert_eq!(cold["verdict"], "ok", "follow-ups are the slower ones here: {cold}");

    let timings: Vec<(bool, f64, f64)> =
        sqlx::query_as("SELECT first_message, model_ms, total_ms FROM request_timings WHERE endpoint = 'chat'")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    let floor = LATENCY.as_secs_f64() * 1000.0;
    for (first, model_ms, total_ms) in &timings {
        let calls = if *first { 2.0 } else { 3.0 };
        assert!(*model_ms >= calls * floor, "{calls} model calls take at least {}: {model_ms}", calls * floor);
        assert!(*model_ms <= *total_ms, "{model_ms} > {total_ms}");
    }
    let chat_shares = s["retrieval"]["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == "chat").unwrap();
    assert_eq!(chat_shares["requests"], 12);
    assert!(chat_shares["model"]["p50"].as_f64().unwrap() > 0.5, "{chat_shares}");
    assert!(chat_shares["vector"]["p95"].as_f64().unwrap() < 0.3, "{chat_shares}");
    assert_eq!(s["retrieval"]["verdict"], "ok", "{}", s["retrieval"]);

    let embedding = &s["embedding"];
    assert_eq!(embedding["rate_limited"], 0);
    assert!(embedding["throughput"]["tokens_per_minute"].as_f64().unwrap() > 0.0, "{embedding}");
    assert!(embedding["limiter_wait_ms"]["p95"].is_number(), "{embedding}");

    // One 429 from the provider, retried after the pause.
    fake.set_latency(Duration::ZERO);
    fake.push_faults([Fault::RateLimited { retry_after_secs: 0.05 }]);
    app.index_all([json!({"title": "throttled", "text": "A document embedded after one 429."})]).await;
    let embedding = signals(&app).await["embedding"].clone();
    assert_eq!(embedding["rate_limited"], 1, "{embedding}");
    assert_eq!(embedding["verdict"], "act", "{embedding}");
    assert!(embedding["reason"].as_str().unwrap().contains("1 answered 429"), "{embedding}");
}

/// `stolid signals` reads the whole deployment: every tenant's traffic.
#[tokio::test]
async fn the_signals_cli_reports_the_whole_deployment() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    app.index_all([json!({"title": "cli", "text": "Signals for operators."})]).await;
    chat(&app, "What are signals for?", None).await;
    let other = app.new_tenant("other").await;
    let body = json!({"text": "Hello", "n": 2});
    let response = app.client.post(app.url("/v1/suggest")).bearer_auth(&other).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.state.gateway.recorder().flush().await;

    let env = app.infra.process_env();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stolid")).envs(env).args(["signals", "--json"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let s: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["scope"], "deployment");
    let endpoints: Vec<&str> =
        s["retrieval"]["endpoints"].as_array().unwrap().iter().map(|e| e["endpoint"].as_str().unwrap()).collect();
    assert_eq!(endpoints, ["chat", "suggest"], "both tenants' requests: {s}");

    let env = app.infra.process_env();
    let text = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stolid")).envs(env).args(["signals"]).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("1. cold start: ok") && text.contains("3. embedding throughput"), "{text}");
}

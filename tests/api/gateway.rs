//! The model gateway against the fake OpenAI server over real HTTP: accounting,
//! the shared limiter, and what happens when the provider pushes back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stolid::config::RateCap;
use stolid::llm::{CallContext, ChatMessage, ChatRequest, LlmError};
use stolid_testkit::fake_openai::Fault;

use crate::helpers::{Options, TestApp, spawn_app_with_fake};

fn ctx(app: &TestApp, request_id: &str) -> CallContext {
    CallContext {
        tenant_id: Some(app.tenant_id),
        request_id: Some(request_id.into()),
        conversation_id: None,
        endpoint: "test",
        budgeted: false,
        meter: None,
        cap_wait: None,
    }
}

#[derive(sqlx::FromRow, Debug)]
struct CallRow {
    request_id: Option<String>,
    tenant_id: Option<uuid::Uuid>,
    provider: String,
    model: String,
    operation: String,
    input_tokens: i32,
    output_tokens: i32,
    latency_ms: f64,
    cost_usd: f64,
    outcome: String,
}

async fn calls(app: &TestApp) -> Vec<CallRow> {
    app.state.gateway.recorder().flush().await;
    sqlx::query_as("SELECT request_id, tenant_id, provider, model, operation, input_tokens, output_tokens, latency_ms, cost_usd, outcome FROM model_calls ORDER BY created_at")
        .fetch_all(&app.state.db)
        .await
        .unwrap()
}

/// Every call lands in `model_calls` with the provider's token counts, a latency,
/// the cost from the price table, and who it was for.
#[tokio::test]
async fn every_model_call_is_recorded_with_tokens_latency_and_cost() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    fake.set_latency(Duration::from_millis(20));
    let gateway = &app.state.gateway;
    let texts: Vec<String> = vec!["ownership and borrowing".into(), "cargo builds crates".into()];
    let embedded = gateway.embed(&ctx(&app, "req-embed"), &texts).await.unwrap();
    assert_eq!(embedded.vectors.len(), 2);
    let chat = ChatRequest {
        messages: vec![ChatMessage::system("[1] Cargo builds crates."), ChatMessage::user("What builds crates?")],
        ..Default::default()
    };
    let answer = gateway.chat(&ctx(&app, "req-chat"), &chat).await.unwrap();
    assert!(answer.content.contains("[1]"), "{}", answer.content);

    let rows = calls(&app).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let stats = fake.stats();
    let embed = &rows[0];
    assert_eq!((embed.operation.as_str(), embed.outcome.as_str()), ("embed", "ok"));
    assert_eq!(embed.request_id.as_deref(), Some("req-embed"));
    assert_eq!(embed.tenant_id, Some(app.tenant_id));
    assert_eq!(embed.provider, "openai");
    assert_eq!(embed.model, "text-embedding-3-small");
    assert_eq!(embed.input_tokens as u64, stats.embedded_tokens);
    assert!((embed.cost_usd - embed.input_tokens as f64 * 0.02 / 1e6).abs() < 1e-12);
    assert!(embed.latency_ms >= 20.0, "{}", embed.latency_ms);

    let chat = &rows[1];
    assert_eq!(chat.operation, "chat");
    assert_eq!(chat.model, "gpt-4o-mini");
    assert_eq!(chat.input_tokens as u32, answer.usage.input_tokens);
    assert_eq!(chat.output_tokens as u32, answer.usage.output_tokens);
    assert!(chat.input_tokens > 0 && chat.output_tokens > 0);
    let expected = (chat.input_tokens as f64 * 0.15 + chat.output_tokens as f64 * 0.60) / 1e6;
    assert!((chat.cost_usd - expected).abs() < 1e-12);
    assert!((answer.usage.cost_usd - expected).abs() < 1e-12);
}

/// Inputs are batched by count (and tokens): 5 inputs with at most 2 per request make 3 requests.
#[tokio::test]
async fn embedding_inputs_are_batched_under_the_per_request_limits() {
    let env = HashMap::from([("EMBED_MAX_BATCH_INPUTS", "2".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    let texts: Vec<String> = (0..5).map(|i| format!("text number {i}")).collect();
    let embedded = app.state.gateway.embed(&ctx(&app, "r"), &texts).await.unwrap();
    assert_eq!(embedded.vectors.len(), 5);
    assert_eq!(embedded.requests, 3);
    assert_eq!(fake.stats().embedding_requests, 3);
    // Order is preserved across batches.
    let alone = app.state.gateway.embed(&ctx(&app, "r"), &texts[4..]).await.unwrap();
    assert_eq!(alone.vectors[0], embedded.vectors[4]);
}

/// An input over the per-input token limit is refused before any request is sent.
#[tokio::test]
async fn an_input_over_the_token_limit_is_refused_not_truncated() {
    let env = HashMap::from([("EMBED_MAX_INPUT_TOKENS", "10".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    let long = "word ".repeat(50);
    let err = app.state.gateway.embed(&ctx(&app, "r"), &["short".into(), long]).await.unwrap_err();
    assert!(matches!(err, LlmError::InputTooLong { index: 1, .. }), "{err:?}");
    assert_eq!(fake.stats().embedding_requests, 0);
}

const MODEL: &str = "text-embedding-3-small";

/// A query embedded recently is answered from the cache: no second call, the
/// same vector. The model and dimensions are part of the key, and
/// `QUERY_EMBEDDING_CACHE=0` turns the cache off.
#[tokio::test]
async fn a_repeated_query_is_embedded_once() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    let gateway = &app.state.gateway;
    let first = gateway.embed_query(&ctx(&app, "r"), MODEL, 384, "how do I borrow?").await.unwrap();
    let again = gateway.embed_query(&ctx(&app, "r"), MODEL, 384, "how do I borrow?").await.unwrap();
    assert_eq!(first, again);
    assert_eq!(fake.stats().embedding_requests, 1);
    gateway.embed_query(&ctx(&app, "r"), MODEL, 256, "how do I borrow?").await.unwrap();
    gateway.embed_query(&ctx(&app, "r"), "text-embedding-3-large", 384, "how do I borrow?").await.unwrap();
    gateway.embed_query(&ctx(&app, "r"), MODEL, 384, "how do I move?").await.unwrap();
    assert_eq!(fake.stats().embedding_requests, 4);

    let env = HashMap::from([("QUERY_EMBEDDING_CACHE", "0".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    for _ in 0..2 {
        app.state.gateway.embed_query(&ctx(&app, "r"), MODEL, 384, "how do I borrow?").await.unwrap();
    }
    assert_eq!(fake.stats().embedding_requests, 2);
}

/// With a cap large enough for query credits, a query embedding after the
/// first leaves on the credit its predecessor reserved, without waiting for a
/// reservation; a small cap holds none.
#[tokio::test]
async fn a_query_embedding_leaves_on_a_credit_reserved_ahead() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    let gateway = &app.state.gateway;
    gateway.embed_query(&ctx(&app, "r"), MODEL, 384, "first question").await.unwrap();
    assert_eq!(gateway.limiter().status().query_credit_hits, 0, "the first one reserves");
    wait_for(|| gateway.limiter().status().query_credit_ready).await;
    gateway.embed_query(&ctx(&app, "r"), MODEL, 384, "second question").await.unwrap();
    assert_eq!(gateway.limiter().status().query_credit_hits, 1);
    wait_for(|| gateway.limiter().status().query_credit_ready).await;
    assert_eq!(fake.stats().embedding_requests, 2);

    let options = Options {
        tweak: Some(Box::new(|config| config.llm.embedding_limits.requests = RateCap::per_minute(600))),
        ..Default::default()
    };
    let (app, _fake) = spawn_app_with_fake(options).await;
    let gateway = &app.state.gateway;
    for question in ["first question", "second question"] {
        gateway.embed_query(&ctx(&app, "r"), MODEL, 384, question).await.unwrap();
    }
    let status = gateway.limiter().status();
    assert!(!status.query_credit_ready && status.query_credit_hits == 0, "{status:?}");
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Many concurrent queries share one limiter: the provider never sees more than
/// the cap in a window, nor more than `max_in_flight` calls at once. Queries that
/// find every slot taken ride together in one request, each getting its own vector.
#[tokio::test]
async fn concurrent_callers_never_exceed_the_shared_caps() {
    let window = Duration::from_secs(1);
    let options = Options {
        env: HashMap::from([("EMBED_MAX_IN_FLIGHT", "3".to_string())]),
        tweak: Some(Box::new(move |config| {
            config.llm.embedding_limits.requests = RateCap { limit: 20, window };
        })),
        ..Default::default()
    };
    let (app, fake) = spawn_app_with_fake(options).await;
    fake.set_latency(Duration::from_millis(30));
    let callers: Vec<_> = (0..50)
        .map(|i| {
            let gateway = app.state.gateway.clone();
            let ctx = ctx(&app, "r");
            tokio::spawn(async move {
                let text = format!("caller {i}");
                let vector = gateway.embed_query(&ctx, MODEL, 384, &text).await;
                (text, vector)
            })
        })
        .collect();
    for caller in callers {
        let (text, vector) = caller.await.unwrap();
        assert_eq!(vector.unwrap(), stolid::llm::providers::local::embed(&text, 384), "{text} got its own vector");
    }
    let stats = fake.stats();
    assert_eq!(stats.embedded_inputs, 50);
    assert!(stats.embedding_requests < 50, "waiting queries shared requests: {}", stats.embedding_requests);
    assert!(stats.max_in_flight <= 3, "{} in flight", stats.max_in_flight);
    // Measured at the server, so allow for a few ms of loopback jitter at the window's edges.
    let busiest = fake.max_embedding_requests_in(window - Duration::from_millis(25));
    assert!(busiest <= 20, "{busiest} requests within one window");
    let rows = calls(&app).await;
    assert_eq!(rows.len(), 50, "one usage row per caller");
}

/// One 429 pauses every caller (queries here, so each is its own request) for its Retry-After (no retry storm), slows the
/// shared limiter, and every call still succeeds.
#[tokio::test]
async fn a_429_pauses_all_callers_and_slows_the_shared_limiter() {
    // A slot for every caller, so none rides in another's request.
    let env = HashMap::from([("EMBED_MAX_IN_FLIGHT", "8".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.set_latency(Duration::from_millis(10));
    fake.push_faults([Fault::RateLimited { retry_after_secs: 0.6 }]);
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let gateway = app.state.gateway.clone();
            let ctx = ctx(&app, "r");
            tokio::spawn(async move { gateway.embed_query(&ctx, MODEL, 384, &format!("caller {i}")).await })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap().expect("every call succeeds after the pause");
    }
    let arrivals = fake.embedding_arrivals();
    let throttled: Vec<Instant> = arrivals.iter().filter(|(_, s)| *s == 429).map(|(t, _)| *t).collect();
    assert_eq!(throttled.len(), 1);
    assert_eq!(arrivals.len(), 9, "8 calls and exactly one retry");
    // Nothing reached the provider during the pause, except requests already on the wire.
    let during_pause = arrivals
        .iter()
        .filter(|(t, s)| {
            *s == 200 && *t > throttled[0] + Duration::from_millis(50) && *t < throttled[0] + Duration::from_millis(600)
        })
        .count();
    assert_eq!(during_pause, 0, "{arrivals:?}");
    let status = app.state.gateway.limiter().status();
    assert_eq!(status.throttled_total, 1);
    assert_eq!(status.slowdown, 2, "the whole limiter slowed down");
    let rows = calls(&app).await;
    assert_eq!(rows.iter().filter(|r| r.outcome == "rate_limited").count(), 1);
    assert_eq!(rows.iter().filter(|r| r.outcome == "ok").count(), 8);
}

/// `insufficient_quota` is not a rate limit: no retries, a clear error, and `/readyz` says so.
#[tokio::test]
async fn an_exhausted_quota_fails_fast_and_shows_in_readyz() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    fake.push_faults([Fault::QuotaExhausted]);
    let err = app.state.gateway.embed(&ctx(&app, "r"), &["hello".into()]).await.unwrap_err();
    assert!(matches!(err, LlmError::QuotaExhausted(_)), "{err:?}");
    assert_eq!(fake.embedding_arrivals().len(), 1, "no retries");
    let ready: serde_json::Value = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert!(ready["model"]["quota_exhausted"].as_str().unwrap().contains("quota"), "{ready}");
}

/// 5xx answers are retried with backoff, and the failed attempt is recorded as an error.
#[tokio::test]
async fn server_errors_are_retried_and_recorded() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    fake.push_faults([Fault::ServerError]);
    let embedded = app.state.gateway.embed(&ctx(&app, "r"), &["hello".into()]).await.unwrap();
    assert_eq!(embedded.requests, 2);
    let outcomes: Vec<String> = calls(&app).await.into_iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, ["error", "ok"]);
}

/// A provider that hangs is cut off by the client timeout and retried.
#[tokio::test]
async fn a_hanging_provider_times_out_and_is_retried() {
    let env = HashMap::from([("LLM_TIMEOUT_SECS", "1".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.push_faults([Fault::Hang]);
    let started = Instant::now();
    app.state.gateway.embed(&ctx(&app, "r"), &["hello".into()]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    let statuses: Vec<u16> = fake.embedding_arrivals().into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, [0, 200], "the hung request never got an answer; the retry did");
}

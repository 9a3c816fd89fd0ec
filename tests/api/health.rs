use std::collections::HashMap;

use crate::helpers::{Options, spawn_app, spawn_app_with};

/// Liveness needs nothing but the process.
#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["status"], "ok");
}

/// Readiness checks Postgres, S3 and SQS for real.
#[tokio::test]
async fn readyz_reports_every_dependency_ok() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    for dependency in ["postgres", "s3", "sqs"] {
        assert_eq!(body["checks"][dependency], "ok", "{body}");
    }
    assert_eq!(body["model"]["provider"], "local");
}

/// With the S3/SQS endpoint down, readiness is 503 and names what failed, while
/// the database is still reported healthy.
#[tokio::test]
async fn readyz_names_the_dependency_that_is_down() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = HashMap::from([("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed_port}"))]);
    let app = spawn_app_with(Options { env, ..Default::default() }).await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert!(body["checks"]["s3"].as_str().unwrap().starts_with("error"), "{body}");
    assert!(body["checks"]["sqs"].as_str().unwrap().starts_with("error"), "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(body["error"]["message"].as_str().unwrap().contains("s3"), "{body}");
}

/// A bucket that does not exist is as unready as an endpoint that is down.
#[tokio::test]
async fn readyz_fails_when_the_bucket_is_missing() {
    let app = spawn_app().await;
    // Same infrastructure, but a state whose bucket does not exist.
    let mut state = app.state.clone();
    state.blobs = stolid::infra::blob::Blobs::new(
        &app.infra.sdk,
        true,
        "no-such-bucket-for-stolid",
        std::time::Duration::from_secs(5),
    );
    let router = stolid::api::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let response = app.client.get(format!("{address}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["checks"]["s3"].as_str().unwrap().starts_with("error"), "{body}");
    assert_eq!(body["checks"]["sqs"], "ok");
}

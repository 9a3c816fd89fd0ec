//! The agent's tool loop against the fake model server (function calling over
//! HTTP) and on the local provider.

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, recorded_usage, spawn_app, spawn_app_with_fake, sse_events};

async fn index(app: &TestApp, docs: &[(&str, &str, &str)]) {
    app.index_all(
        docs.iter().map(|(title, collection, text)| json!({"text": text, "title": title, "collection": collection})),
    )
    .await;
}

const DOCS: [(&str, &str, &str); 2] = [
    ("handbook", "hr", "Employees get twenty five vacation days per year. Vacation requests go to the team lead."),
    ("secret-plan", "board", "The board plans twenty five vacation days for executives and a merger next year."),
];

/// The model searches, then answers from the results with citations; the trace
/// shows the tool call, and every step is a recorded call under one request id.
#[tokio::test]
async fn the_agent_searches_then_answers_with_citations_and_a_trace() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    index(&app, &DOCS).await;
    let response = app
        .post("/v1/agent")
        .header("x-request-id", "agent-req-1")
        .json(&json!({"message": "How many vacation days do employees get?", "collection": "hr"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["stop_reason"], "answered", "{reply}");
    assert_eq!(reply["steps"], 2);
    assert_eq!(reply["trace"][0]["tool"], "search_documents");
    assert!(reply["answer"].as_str().unwrap().contains("[1]"), "{reply}");
    let citations = reply["citations"].as_array().unwrap();
    assert!(!citations.is_empty());
    assert!(citations.iter().all(|c| c["title"] == "handbook"), "tools stay inside the collection: {reply}");
    assert_eq!(fake.stats().chat_requests, 2);
    app.state.gateway.recorder().flush().await;
    let steps: i64 =
        sqlx::query_scalar("SELECT count(*) FROM model_calls WHERE request_id = 'agent-req-1' AND operation = 'chat'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(steps, 2, "each step is a model call recorded under the request id");
    // `usage` is the whole run: both steps and the search tool's embedding (and rerank).
    let (input, output, cost) = recorded_usage(&app, "agent-req-1").await;
    assert_eq!(reply["usage"]["input_tokens"].as_i64().unwrap(), input, "{reply}");
    assert_eq!(reply["usage"]["output_tokens"].as_i64().unwrap(), output, "{reply}");
    assert!((reply["usage"]["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12, "{reply}");
    let in_conversation: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM model_calls WHERE request_id = 'agent-req-1' AND conversation_id = $1::uuid",
    )
    .bind(reply["conversation_id"].as_str().unwrap())
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM model_calls WHERE request_id = 'agent-req-1'")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert!(
        all > 2 && in_conversation == all,
        "the tools' calls count for the conversation too: {in_conversation} of {all}"
    );
}

/// The loop is bounded: with one step allowed, a model that still wants a tool
/// is cut off, and the tool it asked for is shown in the trace but not run.
#[tokio::test]
async fn the_agent_stops_at_max_steps() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    index(&app, &DOCS).await;
    let reply: Value = app.post_json("/v1/agent", &json!({"message": "vacation days?", "max_steps": 1})).await;
    assert_eq!(reply["stop_reason"], "max_steps", "{reply}");
    assert_eq!(reply["steps"], 1);
    assert_eq!(reply["trace"][0]["result"], "not run: no step left", "{reply}");
    assert_eq!(fake.stats().chat_requests, 1, "the tool it still wanted is not run: its search would be wasted");
    let too_many = app.post("/v1/agent").json(&json!({"message": "x", "max_steps": 50})).send().await.unwrap();
    assert_eq!(too_many.status(), 422);
}

/// Tool calls run inside the caller's tenant and filter: another tenant's agent
/// finds nothing, and a metadata filter holds for every tool call.
#[tokio::test]
async fn agent_tools_never_widen_the_callers_scope() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    index(&app, &DOCS).await;
    let other = app.new_tenant("globex").await;
    let theirs: Value = app.post_json_as(&other, "/v1/agent", &json!({"message": "How many vacation days?"})).await;
    assert_eq!(theirs["citations"].as_array().unwrap().len(), 0, "{theirs}");
    assert_eq!(theirs["trace"][0]["result"], "0 passages");
    let board_only: Value =
        app.post_json("/v1/agent", &json!({"message": "How many vacation days?", "collection": "board"})).await;
    assert!(board_only["citations"].as_array().unwrap().iter().all(|c| c["title"] == "secret-plan"), "{board_only}");
}

/// The local provider runs the same loop: one search step, then an extractive answer.
#[tokio::test]
async fn the_local_provider_runs_the_agent_loop_too() {
    let app = spawn_app().await;
    index(&app, &DOCS).await;
    let reply: Value =
        app.post_json("/v1/agent", &json!({"message": "Where do vacation requests go?", "collection": "hr"})).await;
    assert_eq!(reply["stop_reason"], "answered", "{reply}");
    assert_eq!(reply["trace"].as_array().unwrap().len(), 1);
    assert!(reply["answer"].as_str().unwrap().contains("team lead"), "{reply}");
    assert!(!reply["citations"].as_array().unwrap().is_empty());
}

/// `stream: true` sends a `step` event per tool call as it happens, then `done`.
#[tokio::test]
async fn the_agent_streams_its_steps_then_the_reply() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    index(&app, &DOCS).await;
    let response = app
        .post("/v1/agent")
        .json(&json!({"message": "How many vacation days?", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["step", "done"], "{events:?}");
    assert_eq!(events[0].1["tool"], "search_documents");
    assert_eq!(events[1].1["stop_reason"], "answered");
    assert_eq!(events[1].1["trace"][0], events[0].1);
}

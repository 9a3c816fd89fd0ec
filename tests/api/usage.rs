//! Usage reports computed from known model-call records.

use serde_json::Value;
use stolid::llm::accounting::usage_rows::{ModelCall, Operation, Outcome, insert_model_calls};
use uuid::Uuid;

use crate::helpers::spawn_app;

fn call(
    tenant: Uuid,
    conversation: Option<Uuid>,
    model: &str,
    endpoint: &str,
    cost: f64,
    latency_ms: f64,
    outcome: Outcome,
) -> ModelCall {
    ModelCall {
        id: Uuid::now_v7(),
        tenant_id: Some(tenant),
        request_id: None,
        conversation_id: conversation,
        endpoint: endpoint.into(),
        provider: "openai",
        model: model.into(),
        operation: Operation::Chat,
        input_tokens: 100,
        output_tokens: 10,
        latency_ms,
        wait_ms: 0.0,
        cost_usd: cost,
        outcome,
        error: None,
        created_at: chrono::Utc::now() - chrono::Duration::minutes(5),
    }
}

/// Totals equal the sums of the recorded calls; the per-conversation cost
/// distribution (count, mean, p50, p95, max) is right on a known set; latency
/// percentiles come from successful calls; other tenants see none of it.
#[tokio::test]
async fn usage_reports_sums_and_per_conversation_percentiles() {
    let app = spawn_app().await;
    let mut calls = Vec::new();
    // 20 conversations costing 1..=20 USD, each made of two calls (40% + 60%).
    for cost in 1..=20 {
        let conversation = Some(Uuid::now_v7());
        let c = cost as f64;
        calls.push(call(app.tenant_id, conversation, "gpt-4o-mini", "chat", 0.4 * c, 10.0 * c, Outcome::Ok));
        calls.push(call(app.tenant_id, conversation, "text-embedding-3-small", "chat", 0.6 * c, 1.0, Outcome::Ok));
    }
    // Calls outside conversations, one failed.
    calls.push(call(app.tenant_id, None, "text-embedding-3-small", "worker.index", 0.5, 1.0, Outcome::Ok));
    calls.push(call(app.tenant_id, None, "gpt-4o-mini", "worker.summarize", 0.0, 99_999.0, Outcome::RateLimited));
    insert_model_calls(&app.state.db, &calls).await.unwrap();

    let report: Value = app.get_json("/v1/usage?group_by=model").await;
    let groups = report["groups"].as_array().unwrap();
    let total_calls: i64 = groups.iter().map(|g| g["calls"].as_i64().unwrap()).sum();
    let total_cost: f64 = groups.iter().map(|g| g["cost_usd"].as_f64().unwrap()).sum();
    let total_input: i64 = groups.iter().map(|g| g["input_tokens"].as_i64().unwrap()).sum();
    assert_eq!(total_calls, calls.len() as i64);
    assert!((total_cost - calls.iter().map(|c| c.cost_usd).sum::<f64>()).abs() < 1e-9);
    assert_eq!(total_input, 100 * calls.len() as i64);
    let chat_model = groups.iter().find(|g| g["key"] == "gpt-4o-mini").unwrap();
    assert_eq!(chat_model["calls"], 21);
    assert_eq!(chat_model["failed_calls"], 1);
    // Latencies 10..=200 ms over the 20 successful chat calls; the failed one is excluded.
    assert!((chat_model["latency_p50_ms"].as_f64().unwrap() - 105.0).abs() < 1e-9, "{chat_model}");
    assert!((chat_model["latency_p95_ms"].as_f64().unwrap() - 190.5).abs() < 1e-9, "{chat_model}");

    let conversations = &report["conversations"];
    assert_eq!(conversations["count"], 20);
    assert!((conversations["mean_cost_usd"].as_f64().unwrap() - 10.5).abs() < 1e-9);
    assert!((conversations["p50_cost_usd"].as_f64().unwrap() - 10.5).abs() < 1e-9);
    assert!((conversations["p95_cost_usd"].as_f64().unwrap() - 19.05).abs() < 1e-9, "{conversations}");
    assert!((conversations["max_cost_usd"].as_f64().unwrap() - 20.0).abs() < 1e-9);
    // Costs 1..=20 in 12 buckets of $1.67 from 0 to 20; the maximum counts in the last.
    let histogram = conversations["histogram"].as_array().unwrap();
    let counts: Vec<i64> = histogram.iter().map(|b| b["conversations"].as_i64().unwrap()).collect();
    assert_eq!(counts, [1, 2, 1, 2, 2, 1, 2, 2, 1, 2, 2, 2], "{conversations}");
    assert_eq!(histogram[0]["from_usd"], 0.0);
    assert!((histogram[11]["to_usd"].as_f64().unwrap() - 20.0).abs() < 1e-9);
    assert!((histogram[1]["from_usd"].as_f64().unwrap() - 20.0 / 12.0).abs() < 1e-9);

    let by_endpoint: Value = app.get_json("/v1/usage?group_by=endpoint").await;
    let keys: Vec<&str> =
        by_endpoint["groups"].as_array().unwrap().iter().map(|g| g["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["chat", "worker.index", "worker.summarize"]);
    let by_day: Value = app.get_json("/v1/usage?group_by=day").await;
    let today = chrono::Utc::now() - chrono::Duration::minutes(5);
    assert_eq!(by_day["groups"][0]["key"], today.format("%Y-%m-%d").to_string());
    let earlier: Value = app.get_json("/v1/usage?from=2020-01-01&to=2020-02-01").await;
    assert_eq!(earlier["groups"].as_array().unwrap().len(), 0);
    assert_eq!(earlier["conversations"]["count"], 0);
    assert_eq!(earlier["conversations"]["histogram"], serde_json::json!([]));

    let other = app.new_tenant("globex").await;
    let theirs: Value =
        app.client.get(app.url("/v1/usage")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["groups"].as_array().unwrap().len(), 0);
    assert_eq!(theirs["conversations"]["count"], 0);

    for bad in ["/v1/usage?group_by=week", "/v1/usage?from=yesterday", "/v1/usage?from=2030-01-01&to=2020-01-01"] {
        let response = app.get(bad).send().await.unwrap();
        assert!(response.status() == 400 || response.status() == 422, "{bad}: {}", response.status());
        assert!(response.json::<Value>().await.unwrap()["error"]["code"].is_string(), "{bad}");
    }
}

//! Suggestions: grounded in retrieved passages, each with its source document.

use serde_json::{Value, json};

use crate::helpers::{Options, spawn_app_with_fake, upload_text, wait_until_settled};

/// Every suggestion names a document that was retrieved for the text, and the
/// call is small: one model call with a short output budget.
#[tokio::test]
async fn suggestions_are_grounded_in_the_tenants_documents() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    let mut ids = Vec::new();
    for (title, text) in [
        ("cargo", "Cargo builds packages. Cargo fetches dependencies from the registry. Cargo runs tests."),
        ("tokio", "Tokio schedules asynchronous tasks. Tokio timers and Tokio channels help tasks cooperate."),
    ] {
        let doc = upload_text(&app, json!({"text": text, "title": title})).await;
        ids.push(doc["id"].as_str().unwrap().to_string());
        wait_until_settled(&app, ids.last().unwrap()).await;
    }
    let reply: Value =
        app.post_json("/v1/suggest", &json!({"text": "how does cargo fetch dependencies", "n": 2})).await;
    let suggestions = reply["suggestions"].as_array().unwrap();
    assert!(!suggestions.is_empty() && suggestions.len() <= 2, "{reply}");
    for s in suggestions {
        assert!(ids.contains(&s["document_id"].as_str().unwrap().to_string()), "{s}");
        assert!(s["text"].as_str().unwrap().ends_with('?'), "{s}");
    }
    assert_eq!(suggestions[0]["title"], "cargo");
    assert_eq!(fake.stats().chat_requests, 1);
    let sent = fake.last_chat_messages();
    assert!(sent[0]["content"].as_str().unwrap().len() < 6_000, "a small prompt");

    // Between turns: no text, the conversation's last question is the topic.
    let chat: Value = app.post_json("/v1/chat", &json!({"message": "What does Tokio schedule?"})).await;
    let between: Value = app.post_json("/v1/suggest", &json!({"conversation_id": chat["conversation_id"]})).await;
    assert_eq!(between["suggestions"][0]["title"], "tokio", "{between}");

    // Nothing relevant: no suggestions and no model call.
    let before = fake.stats().chat_requests;
    let none: Value = app.post_json("/v1/suggest", &json!({"text": "sourdough starter feeding"})).await;
    assert_eq!(none["suggestions"].as_array().unwrap().len(), 0);
    assert_eq!(fake.stats().chat_requests, before);
    let bad = app.post("/v1/suggest").json(&json!({"text": "", "n": 3})).send().await.unwrap();
    assert_eq!(bad.status(), 422);
}

//! The OpenAI-compatible facade, driven by the official `openai` Python client
//! (installed by `make infra` in `.local/venv`).

use serde_json::{Value, json};

use crate::helpers::{Options, spawn_app_with_fake, upload_text, wait_until_settled};

/// Plain and streamed completions through the official client, with citations
/// riding along in the extra field; the answer comes from the documents.
#[tokio::test]
async fn the_official_openai_client_works_against_the_facade() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    let doc =
        upload_text(&app, json!({"text": "Cargo downloads dependencies and builds packages.", "title": "cargo"})).await;
    wait_until_settled(&app, doc["id"].as_str().unwrap()).await;
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.local/venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/openai_client.py");
    let (base, key) = (format!("{}/v1", app.address), app.api_key.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args([script, &base, &key, "What does Cargo download?"])
            .output()
            .expect("run `make infra` for .local/venv")
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(result["answer"].as_str().unwrap().contains("dependencies"), "{result}");
    assert_eq!(result["finish_reason"], "stop");
    assert!(result["usage"]["prompt"].as_u64().unwrap() > 0);
    assert_eq!(result["citations"][0]["title"], "cargo", "{result}");
    assert_eq!(result["streamed"], result["answer"], "streaming gives the same answer");
    assert_eq!(result["stream_finish_reason"], "stop");
    assert_eq!(result["stream_citations"], result["citations"]);
}

/// The model name selects a collection; a request without a user message is a clear 422.
#[tokio::test]
async fn the_model_name_selects_a_collection() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    let doc =
        upload_text(&app, json!({"text": "Cargo downloads dependencies.", "title": "cargo", "collection": "tools"}))
            .await;
    wait_until_settled(&app, doc["id"].as_str().unwrap()).await;
    let ask = |model: &str| {
        app.post("/v1/chat/completions")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "What does Cargo download?"}]}))
    };
    let tools: Value = ask("tools").send().await.unwrap().json().await.unwrap();
    assert_eq!(tools["citations"][0]["title"], "cargo", "{tools}");
    let elsewhere: Value = ask("other-collection").send().await.unwrap().json().await.unwrap();
    assert_eq!(elsewhere["choices"][0]["message"]["content"], stolid::domain::chat::NOT_FOUND);
    let no_user = app
        .post("/v1/chat/completions")
        .json(&json!({"model": "stolid", "messages": [{"role": "system", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_user.status(), 422);
}

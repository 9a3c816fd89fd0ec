//! Retrieval-augmented chat against the fake model server: citations,
//! conversations, budgets, streaming and cancellation, tenant isolation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use stolid_testkit::fake_openai::Fault;

use crate::helpers::{Options, TestApp, recorded_usage, spawn_app_with_fake, sse_events};

const DOCS: [(&str, &str); 3] = [
    ("ownership", "Each value in Rust has an owner. When the owner goes out of scope, the value is dropped."),
    ("cargo", "Cargo is the Rust package manager. It downloads dependencies and builds packages."),
    ("tokio", "Tokio is an asynchronous runtime that schedules tasks on a pool of worker threads."),
];

async fn index_docs(app: &TestApp) {
    app.index_all(DOCS.iter().map(|(title, text)| json!({"text": text, "title": title}))).await;
}

async fn chat(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/chat").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

/// The answer cites retrieved chunks only, numbered as in the text; the turn is
/// kept with its citations, token usage and cost.
#[tokio::test]
async fn chat_answers_with_citations_and_keeps_the_conversation() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    index_docs(&app).await;
    let reply = chat(&app, json!({"message": "What happens when the owner goes out of scope?"})).await;
    let answer = reply["answer"].as_str().unwrap();
    assert!(answer.contains("dropped"), "{reply}");
    let citations = reply["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{reply}");
    let chunk_ids: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM chunks").fetch_all(&app.state.db).await.unwrap();
    for citation in citations {
        assert!(answer.contains(&format!("[{}]", citation["number"])), "cited number appears in the answer");
        assert!(chunk_ids.contains(&citation["chunk_id"].as_str().unwrap().to_string()), "cites a real chunk");
    }
    assert_eq!(citations[0]["title"], "ownership");
    assert!(reply["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(reply["provider"], "openai");
    assert_eq!(fake.stats().chat_requests, 1);

    let id = reply["conversation_id"].as_str().unwrap();
    let follow_up = chat(&app, json!({"message": "And what does Cargo download?", "conversation_id": id})).await;
    assert_eq!(follow_up["conversation_id"], id);
    let history = fake.last_chat_messages();
    assert!(
        history.iter().any(|m| m["content"].as_str().unwrap().contains("owner goes out of scope")),
        "history is sent"
    );

    let conversation: Value = app.get_json(&format!("/v1/conversations/{id}")).await;
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["citations"], reply["citations"]);
    assert!(messages[1]["cost_usd"].as_f64().unwrap() > 0.0);
    let list: Value = app.get_json("/v1/conversations").await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1);
    app.state.gateway.recorder().flush().await;
    let per_conversation: i64 =
        sqlx::query_scalar("SELECT count(*) FROM model_calls WHERE conversation_id = $1::uuid AND operation = 'chat'")
            .bind(id)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    // The two answers, the rewrite of the second message into a standalone
    // query, and a rerank for each turn that retrieved two passages or more.
    let reranks = fake.stats().rerank_requests as i64;
    assert_eq!(per_conversation, 3 + reranks, "model calls carry the conversation id");
    let deleted =
        app.client.delete(app.url(&format!("/v1/conversations/{id}"))).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get(&format!("/v1/conversations/{id}")).send().await.unwrap().status(), 404);
}

/// With nothing relevant in the documents, chat says so and does not call the model.
#[tokio::test]
async fn chat_says_so_when_nothing_relevant_is_found() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    index_docs(&app).await;
    let reply = chat(&app, json!({"message": "Best pizza dough hydration percentage?"})).await;
    assert_eq!(reply["answer"], stolid::domain::chat::NOT_FOUND);
    assert_eq!(reply["citations"].as_array().unwrap().len(), 0);
    assert_eq!(fake.stats().chat_requests, 0);
}

/// History beyond the budget is dropped oldest first.
#[tokio::test]
async fn history_is_trimmed_to_the_budget_oldest_first() {
    let env = HashMap::from([("CHAT_HISTORY_TOKENS", "60".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    index_docs(&app).await;
    let first =
        chat(&app, json!({"message": "Tell me about ownership and the owner of a value, please, in detail"})).await;
    let id = first["conversation_id"].as_str().unwrap().to_string();
    for question in ["What does Cargo download?", "What does Tokio schedule?", "Who owns a value?"] {
        chat(&app, json!({"message": question, "conversation_id": id})).await;
    }
    let sent = fake.last_chat_messages();
    let texts: Vec<&str> = sent.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert!(!texts.iter().any(|t| t.contains("in detail")), "the oldest turn was dropped: {texts:?}");
    assert!(texts.iter().any(|t| t.contains("What does Tokio schedule?")), "recent turns are kept: {texts:?}");
    assert_eq!(*texts.last().unwrap(), "Who owns a value?");
}

/// `stream: true` sends token deltas, then one final event with citations and usage.
#[tokio::test]
async fn streaming_chat_sends_deltas_then_the_final_event() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    index_docs(&app).await;
    let response = app
        .post("/v1/chat")
        .json(&json!({"message": "What does Cargo download?", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_events(response).await;
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    let deltas: String =
        events.iter().filter(|(e, _)| e == "delta").map(|(_, d)| d["text"].as_str().unwrap()).collect();
    assert!(events.iter().filter(|(e, _)| e == "delta").count() > 1, "several deltas");
    assert_eq!(deltas, done["answer"].as_str().unwrap(), "the deltas add up to the answer");
    assert!(!done["citations"].as_array().unwrap().is_empty());
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let id = done["conversation_id"].as_str().unwrap();
    let conversation: Value = app.get_json(&format!("/v1/conversations/{id}")).await;
    assert_eq!(conversation["messages"].as_array().unwrap().len(), 2, "the streamed turn is kept too");
}

/// A conversation is stored with its first turn: a first message that fails
/// leaves no empty conversation behind, and the next one starts cleanly.
#[tokio::test]
async fn a_failed_first_turn_leaves_no_conversation() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    index_docs(&app).await;
    fake.push_faults([Fault::QuotaExhausted]);
    let response =
        app.post("/v1/chat").json(&json!({"message": "What happens when the owner goes out of scope?"})).send().await;
    assert!(response.unwrap().status().is_server_error());
    assert_eq!(app.get_json("/v1/conversations").await["conversations"], json!([]));

    let reply = chat(&app, json!({"message": "What does Cargo download?"})).await;
    let listed = app.get_json("/v1/conversations").await;
    assert_eq!(listed["conversations"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["conversations"][0]["id"], reply["conversation_id"]);
    assert_eq!(listed["conversations"][0]["title"], "What does Cargo download?");
}

/// A client that disconnects mid-stream stops the upstream model call, and the
/// call is recorded as cancelled.
#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_model_call() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    index_docs(&app).await;
    fake.set_stream_gap(Duration::from_millis(300));
    let response = app
        .post("/v1/chat")
        .json(&json!({"message": "What happens when the owner goes out of scope?", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("delta"));
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.stats().chat_streams_cancelled == 0 {
        assert!(Instant::now() < deadline, "the upstream stream was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.state.gateway.recorder().flush().await;
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT error FROM model_calls WHERE operation = 'chat' AND outcome = 'error'")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert!(errors.iter().any(|e| e.contains("cancelled")), "{errors:?}");
}

/// Another tenant cannot read, continue, list or delete a conversation.
#[tokio::test]
async fn conversations_never_cross_tenants() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    index_docs(&app).await;
    let reply = chat(&app, json!({"message": "What does Cargo download?"})).await;
    let id = reply["conversation_id"].as_str().unwrap();
    let other = app.new_tenant("globex").await;
    let get = app.client.get(app.url(&format!("/v1/conversations/{id}"))).bearer_auth(&other).send().await.unwrap();
    assert_eq!(get.status(), 404);
    let cont = app
        .client
        .post(app.url("/v1/chat"))
        .bearer_auth(&other)
        .json(&json!({"message": "hi", "conversation_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(cont.status(), 404);
    let list: Value =
        app.client.get(app.url("/v1/conversations")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["conversations"].as_array().unwrap().len(), 0);
    let delete =
        app.client.delete(app.url(&format!("/v1/conversations/{id}"))).bearer_auth(&other).send().await.unwrap();
    assert_eq!(delete.status(), 404);
    // Their chat does not see our documents either.
    let theirs: Value = app.post_json_as(&other, "/v1/chat", &json!({"message": "What does Cargo download?"})).await;
    assert_eq!(theirs["answer"], stolid::domain::chat::NOT_FOUND);
}

/// A follow-up that leans on the conversation ("and how do I undo it?") is
/// rewritten by the model into a standalone query before retrieval, in one
/// more call through the gateway; asked with `rewrite_query: false`, retrieval sees only its
/// pronoun and finds the wrong passage.
#[tokio::test]
async fn a_follow_up_is_rewritten_into_a_standalone_query_before_retrieval() {
    // One passage per turn, in retrieval's order (no rerank): the answer can
    // only cite what the (rewritten) query ranked first.
    let env = HashMap::from([("CHAT_TOP_K", "1".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    let docs = [
        ("committing", "Commits are made with git commit and a message describing the change."),
        (
            "reverting",
            "To undo a commit that was already shared, run git revert with its hash: it records a new commit reversing it.",
        ),
        ("editor", "Undo a change with Ctrl+Z; undo again to go further back."),
    ];
    app.index_all(docs.iter().map(|(title, text)| json!({"text": text, "title": title}))).await;
    let cited = |reply: &Value| -> Vec<String> {
        reply["citations"].as_array().unwrap().iter().map(|c| c["title"].as_str().unwrap().to_string()).collect()
    };
    for rewrite in [true, false] {
        let first = chat(&app, json!({"message": "How do I make a git commit?"})).await;
        let conversation = first["conversation_id"].as_str().unwrap();
        let requests_before = fake.stats().chat_requests;
        let follow_up = chat(
            &app,
            json!({"message": "and how do I undo it?", "conversation_id": conversation, "rewrite_query": rewrite, "rerank": false}),
        )
        .await;
        let calls = fake.stats().chat_requests - requests_before;
        if rewrite {
            assert_eq!(calls, 2, "one rewrite, one answer");
            assert_eq!(cited(&follow_up).first().map(String::as_str), Some("reverting"), "{follow_up}");
        } else {
            assert_eq!(calls, 1);
            assert_eq!(cited(&follow_up).first().map(String::as_str), Some("editor"), "{follow_up}");
        }
    }
}

/// The titles of a passage listing (`[n] title › headings` lines), in order.
fn listed_titles(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix('[')?.split_once("] "))
        .filter(|(number, _)| number.chars().all(|c| c.is_ascii_digit()))
        .map(|(_, source)| source.split(" › ").next().unwrap_or_default().to_string())
        .collect()
}

/// The chat model reorders the retrieved passages before the answer is asked
/// for: the answer's context follows the reranker's order (the passages it
/// named, then the others as retrieved), the call is metered as `rerank` in the
/// conversation, `rerank: false` skips it, and a reply naming no passage keeps
/// the retrieval order.
#[tokio::test]
async fn the_chat_model_reranks_the_passages_before_answering() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    let docs = [
        ("keeper", "The lighthouse keeper lights the lamp at dusk."),
        ("cliff", "A lighthouse stands on the northern cliff."),
        ("lens", "Lighthouse lenses were made by Fresnel."),
    ];
    app.index_all(docs.iter().map(|(title, text)| json!({"text": text, "title": title}))).await;
    let ask = json!({"message": "Tell me about the lighthouse"});
    let answer_context = || listed_titles(fake.last_chat_messages()[0]["content"].as_str().unwrap());

    fake.set_rerank_reply(Some("3, 1"));
    let reply = chat(&app, ask.clone()).await;
    let retrieved = listed_titles(&fake.last_rerank_listing());
    assert_eq!(retrieved.len(), 3, "every match is a candidate: {retrieved:?}");
    assert_eq!(
        answer_context(),
        [retrieved[2].clone(), retrieved[0].clone(), retrieved[1].clone()],
        "the reranker's order"
    );
    assert_eq!((fake.stats().rerank_requests, fake.stats().chat_requests), (1, 2));
    app.state.gateway.recorder().flush().await;
    let metered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM model_calls WHERE endpoint = 'rerank' AND conversation_id = $1::uuid")
            .bind(reply["conversation_id"].as_str().unwrap())
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(metered, 1, "the rerank call counts in the conversation's cost");

    let skipped = chat(&app, json!({"message": "Tell me about the lighthouse", "rerank": false})).await;
    assert!(!skipped["citations"].as_array().unwrap().is_empty(), "{skipped}");
    assert_eq!((fake.stats().rerank_requests, fake.stats().chat_requests), (1, 3), "no rerank call");

    fake.set_rerank_reply(Some("I cannot rank these."));
    let kept = chat(&app, ask).await;
    assert!(!kept["citations"].as_array().unwrap().is_empty(), "{kept}");
    assert_eq!(answer_context(), listed_titles(&fake.last_rerank_listing()), "the retrieval order is kept");
}

/// A turn's `usage` (and its stored message's tokens and cost) is what all of
/// its model calls cost, as recorded: the follow-up's rewrite, the query
/// embedding and the rerank as well as the answer, streamed or not.
#[tokio::test]
async fn a_turns_usage_is_every_model_call_it_made() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    index_docs(&app).await;
    let first: Value = app
        .post("/v1/chat")
        .header("x-request-id", "turn-1")
        .json(&json!({"message": "What happens when the owner goes out of scope?"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = first["conversation_id"].as_str().unwrap();
    let streamed = app
        .post("/v1/chat")
        .header("x-request-id", "turn-2")
        .json(&json!({"message": "And what does Cargo download?", "conversation_id": id, "stream": true}))
        .send()
        .await
        .unwrap();
    let done = sse_events(streamed).await.into_iter().find(|(event, _)| event == "done").expect("a done event").1;
    assert!(fake.stats().rerank_requests >= 1, "the turns made more calls than their answers");
    let messages = app.get_json(&format!("/v1/conversations/{id}")).await["messages"].as_array().unwrap().clone();
    for (request_id, reply, message) in [("turn-1", &first, &messages[1]), ("turn-2", &done, &messages[3])] {
        let (input, output, cost) = recorded_usage(&app, request_id).await;
        let usage = &reply["usage"];
        assert_eq!(usage["input_tokens"].as_i64().unwrap(), input, "{request_id}: {reply}");
        assert_eq!(usage["output_tokens"].as_i64().unwrap(), output, "{request_id}");
        assert!((usage["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12, "{request_id}: {usage} vs {cost}");
        assert_eq!(message["input_tokens"].as_i64().unwrap(), input, "{request_id}: the stored message");
        assert!((message["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12, "{request_id}: the stored message");
    }
    // The answer's call alone was less: the rest is the embedding, the rerank (and the rewrite).
    let (answer_input,): (i64,) = sqlx::query_as(
        "SELECT input_tokens::int8 FROM model_calls WHERE request_id = 'turn-1' AND endpoint = 'chat' AND operation = 'chat'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert!(answer_input < first["usage"]["input_tokens"].as_i64().unwrap(), "{first}");
}

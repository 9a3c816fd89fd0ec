//! Documents end to end: upload through the API, index through SQS workers
//! (real moto queue, real Postgres), read back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stolid_testkit::fake_openai::Fault;

use crate::helpers::{
    Options, TestApp, error_code, spawn_app, spawn_app_with, spawn_app_with_fake, upload_text, wait_until_settled,
};

async fn upload_file(app: &TestApp, name: &str, mime: &str, bytes: Vec<u8>) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()).mime_str(mime).unwrap();
    let form = reqwest::multipart::Form::new().part("file", part).text("collection", "guides");
    app.post("/v1/documents").multipart(form).send().await.unwrap()
}

async fn chunks(app: &TestApp, id: &str) -> Vec<Value> {
    let body: Value = app.get_json(&format!("/v1/documents/{id}/chunks")).await;
    body["chunks"].as_array().unwrap().clone()
}

const MARKDOWN: &str = "# Rust guide\n\nIntro to the guide.\n\n## Ownership\n\nEach value in Rust has an owner. There can only be one owner at a time.\n\n## Borrowing\n\nReferences let you use a value without taking ownership of it.\n";

const HTML: &str = "<html><head><title>t</title><script>tracking()</script></head><body>\
    <h1>Cargo</h1><p>Cargo is the Rust package manager.</p><h2>Build</h2><p>Run <code>cargo build</code> to compile.</p></body></html>";

/// A one-page PDF with the text "Stolid reads PDF files".
fn tiny_pdf() -> Vec<u8> {
    let content = "BT /F1 18 Tf 40 700 Td (Stolid reads PDF files) Tj ET";
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        pdf.extend(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    pdf
}

/// Text, Markdown, HTML and PDF all end `indexed`, with chunks that hold the
/// text, heading paths for structured formats, and counts on the document.
#[tokio::test]
async fn every_supported_format_is_indexed_into_sensible_chunks() {
    let app = spawn_app().await;
    let text = upload_text(&app, json!({"text": "Plain words about the borrow checker.", "title": "plain"})).await;
    assert_eq!(text["status"], "queued");
    let mut ids = vec![text["id"].as_str().unwrap().to_string()];
    for (name, mime, bytes) in [
        ("guide.md", "text/markdown", MARKDOWN.as_bytes().to_vec()),
        ("cargo.html", "text/html", HTML.as_bytes().to_vec()),
        ("paper.pdf", "application/pdf", tiny_pdf()),
    ] {
        let response = upload_file(&app, name, mime, bytes).await;
        assert_eq!(response.status(), 202, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["documents"][0]["collection"], "guides");
        ids.push(body["documents"][0]["id"].as_str().unwrap().to_string());
    }
    let expectations = ["borrow checker", "one owner at a time", "Rust package manager", "Stolid reads PDF files"];
    for (id, expected) in ids.iter().zip(expectations) {
        let doc = wait_until_settled(&app, id).await;
        assert_eq!(doc["status"], "indexed", "{doc}");
        assert!(doc["chunk_count"].as_i64().unwrap() >= 1);
        assert!(doc["token_count"].as_i64().unwrap() > 0);
        assert!(doc["indexed_at"].is_string());
        let chunks = chunks(&app, id).await;
        assert_eq!(chunks.len() as i64, doc["chunk_count"].as_i64().unwrap());
        let all: String = chunks.iter().map(|c| c["content"].as_str().unwrap()).collect::<Vec<_>>().join(" ");
        assert!(all.contains(expected), "{id}: {all}");
    }
    let html_chunks = chunks(&app, &ids[2]).await;
    assert!(!html_chunks.iter().any(|c| c["content"].as_str().unwrap().contains("tracking")), "scripts are dropped");
    let md_chunks = chunks(&app, &ids[1]).await;
    assert_eq!(md_chunks[0]["heading_path"][0], "Rust guide");
    let embeddings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chunk_embeddings").fetch_one(&app.state.db).await.unwrap();
    let total_chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(embeddings, total_chunks, "every chunk has its vector");
    // The original comes back byte for byte.
    let content = app.get(&format!("/v1/documents/{}/content", ids[1])).send().await.unwrap();
    assert_eq!(content.headers()["content-type"], "text/markdown");
    assert_eq!(content.text().await.unwrap(), MARKDOWN);
    // An uploaded page is handed to a browser as a file to save, never as a page
    // of the console's origin that could run its scripts.
    let page = app.get(&format!("/v1/documents/{}/content", ids[2])).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["content-security-policy"], "sandbox; default-src 'none'");
    assert_eq!(
        page.headers()["content-disposition"],
        "attachment; filename=\"cargo.html\"; filename*=UTF-8''cargo.html"
    );
    assert_eq!(page.text().await.unwrap(), HTML);
}

/// The same content in the same collection is one document; another collection is another.
#[tokio::test]
async fn uploading_the_same_content_again_returns_the_existing_document() {
    let app = spawn_app().await;
    let first = upload_text(&app, json!({"text": "duplicate me"})).await;
    let again = app.post("/v1/documents").json(&json!({"text": "duplicate me"})).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["documents"][0]["id"], first["id"]);
    assert_eq!(again["documents"][0]["duplicate"], true);
    let other = upload_text(&app, json!({"text": "duplicate me", "collection": "other"})).await;
    assert_ne!(other["id"], first["id"]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM documents").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(count, 2);
}

/// Bad uploads get the right status and a stable code, never a 500.
#[tokio::test]
async fn bad_uploads_are_refused_clearly() {
    let env = HashMap::from([("MAX_BODY_BYTES", "2048".to_string())]);
    let app = spawn_app_with(Options { env, ..Default::default() }).await;
    let image = upload_file(&app, "cat.png", "image/png", vec![0x89, b'P', b'N', b'G']).await;
    assert_eq!(image.status(), 415);
    assert_eq!(error_code(image).await, "unsupported_media_type");
    let big = upload_file(&app, "big.txt", "text/plain", vec![b'a'; 10_000]).await;
    assert_eq!(big.status(), 413);
    assert_eq!(error_code(big).await, "payload_too_large");
    let form = app
        .post("/v1/documents")
        .body("text=hi")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let both = app.post("/v1/documents").json(&json!({"text": "a", "s3_uri": "s3://x/y"})).send().await.unwrap();
    assert_eq!(both.status(), 422);
    let syntax =
        app.post("/v1/documents").header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(syntax.status(), 400);
    assert_eq!(error_code(syntax).await, "invalid_json");
    let metadata = app.post("/v1/documents").json(&json!({"text": "a", "metadata": [1]})).send().await.unwrap();
    assert_eq!(metadata.status(), 422);
    let missing = app.get(&format!("/v1/documents/{}", uuid::Uuid::now_v7())).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let not_uuid = app.get("/v1/documents/nope").send().await.unwrap();
    assert_eq!(not_uuid.status(), 400);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM documents").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(count, 0);
}

/// Uploads up to MAX_BODY_BYTES are accepted, well past axum's 2 MB extractor default.
#[tokio::test]
async fn large_uploads_up_to_the_configured_limit_are_accepted() {
    let app = spawn_app().await;
    let paragraph = "A large handbook paragraph about ownership, borrowing and lifetimes in Rust programs.\n\n";
    let big = paragraph.repeat(3 * 1024 * 1024 / paragraph.len());
    let response = upload_file(&app, "handbook.md", "text/markdown", big.into_bytes()).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

/// Invalid content fails permanently with a reason instead of being retried; other documents still index.
#[tokio::test]
async fn a_poison_document_fails_with_a_reason_while_others_index() {
    let app = spawn_app().await;
    let response = upload_file(&app, "bad.txt", "text/plain", vec![0xff, 0xfe, 0xfd]).await;
    let body: Value = response.json().await.unwrap();
    let bad = body["documents"][0]["id"].as_str().unwrap().to_string();
    let good = upload_text(&app, json!({"text": "A healthy document."})).await;
    let failed = wait_until_settled(&app, &bad).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("UTF-8"), "{failed}");
    assert_eq!(wait_until_settled(&app, good["id"].as_str().unwrap()).await["status"], "indexed");
}

/// A provider failing every time: after the redrive limit the document is
/// `failed` with the last error and the message is in the dead-letter queue.
#[tokio::test]
async fn repeated_failures_end_failed_after_the_redrive_limit_and_dead_letter() {
    let env =
        HashMap::from([("EMBED_MAX_ATTEMPTS", "1".to_string()), ("WORKER_VISIBILITY_TIMEOUT_SECS", "1".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.push_faults(std::iter::repeat_n(Fault::ServerError, crate::helpers::MAX_RECEIVES as usize));
    let doc = upload_text(&app, json!({"text": "this will not embed"})).await;
    let settled = wait_until_settled(&app, doc["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "failed");
    assert!(settled["error"].as_str().unwrap().contains("gave up"), "{settled}");
    assert_eq!(fake.embedding_arrivals().len() as u32, crate::helpers::MAX_RECEIVES);
    // The next receive moves the message to the DLQ.
    let sqs = aws_sdk_sqs::Client::new(&app.infra.sdk);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let received = sqs.receive_message().queue_url(&app.infra.dlq_url).wait_time_seconds(1).send().await.unwrap();
        if let Some(message) = received.messages.unwrap_or_default().first() {
            assert!(message.body().unwrap().contains(doc["id"].as_str().unwrap()));
            break;
        }
        assert!(Instant::now() < deadline, "the message never reached the dead-letter queue");
    }
    // Another document indexes normally once the provider recovers.
    let ok = upload_text(&app, json!({"text": "this one will"})).await;
    assert_eq!(wait_until_settled(&app, ok["id"].as_str().unwrap()).await["status"], "indexed");
}

/// Running the job twice (redelivery, re-index) leaves exactly one set of chunks,
/// and unchanged chunks reuse their embeddings instead of calling the model again.
#[tokio::test]
async fn indexing_twice_leaves_one_set_of_chunks_and_reuses_embeddings() {
    let (app, fake) = spawn_app_with_fake(Options::default()).await;
    let doc = upload_text(&app, json!({"text": MARKDOWN, "content_type": "text/markdown"})).await;
    let id = doc["id"].as_str().unwrap().to_string();
    let first = wait_until_settled(&app, &id).await;
    assert_eq!(first["status"], "indexed");
    let requests_after_first = fake.stats().embedding_requests;
    let doc_id: uuid::Uuid = id.parse().unwrap();
    // A duplicate delivery of the same message is skipped outright...
    stolid::worker::jobs::index::run(&app.state, app.tenant_id, doc_id, false, &Default::default()).await.unwrap();
    // ...and a re-index re-chunks but embeds nothing new.
    let response = app.post(&format!("/v1/documents/{id}/reindex")).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let second = wait_until_settled(&app, &id).await;
    assert_eq!(second["status"], "indexed");
    assert_eq!(second["chunk_count"], first["chunk_count"]);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE document_id = $1")
        .bind(doc_id)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(rows, first["chunk_count"].as_i64().unwrap());
    assert_eq!(fake.stats().embedding_requests, requests_after_first, "no embedding call for unchanged chunks");
}

/// A document of ~300 small chunks (three write slices), each paragraph naming `word`.
fn large_text(word: &str) -> String {
    (0..300).map(|i| format!("Paragraph {i} of the ledger mentions the {word} and its number {i}.\n\n")).collect()
}

/// An app whose embeddings go 16 inputs a request, one at a time, 100 ms each:
/// a large document takes a couple of seconds to embed.
async fn slow_embedding_app() -> (TestApp, stolid_testkit::fake_openai::FakeOpenAi) {
    let env = HashMap::from([
        ("CHUNK_MAX_TOKENS", "24".to_string()),
        ("CHUNK_OVERLAP_TOKENS", "0".to_string()),
        ("EMBED_MAX_BATCH_INPUTS", "16".to_string()),
        ("EMBED_MAX_IN_FLIGHT", "1".to_string()),
    ]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.set_latency(Duration::from_millis(100));
    (app, fake)
}

async fn chunk_rows(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM chunks WHERE document_id = $1::uuid")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

/// Waits until some but not all of the document's chunks are written while it
/// is still indexing; `None` if it settled first.
async fn wait_for_partial_write(app: &TestApp, id: &str) -> Option<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let rows = chunk_rows(app, id).await;
        let doc = app.get_json(&format!("/v1/documents/{id}")).await;
        if doc["status"] != "processing" && doc["status"] != "queued" {
            return None;
        }
        if rows > 0 {
            return Some(rows);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A large document's chunks are written in slices while the rest is still
/// being embedded, and none of them is seen (listing, keyword and vector
/// search) until the last slice makes the document indexed, all at once.
#[tokio::test]
async fn a_large_document_is_written_in_slices_unseen_until_it_is_indexed() {
    let (app, fake) = slow_embedding_app().await;
    let doc = upload_text(&app, json!({"text": large_text("zebrafish")})).await;
    let id = doc["id"].as_str().unwrap().to_string();
    let written = wait_for_partial_write(&app, &id).await.expect("slices written before the document is indexed");
    assert!(written % 128 == 0, "whole slices: {written}");
    assert!(chunks(&app, &id).await.is_empty(), "a half-written generation is listed");
    for mode in ["keyword", "vector", "hybrid"] {
        let body = app.post_json("/v1/search", &json!({"query": "zebrafish ledger", "mode": mode})).await;
        assert_eq!(body["results"], json!([]), "{mode} search sees a half-written generation: {body}");
    }
    let done = wait_until_settled(&app, &id).await;
    assert_eq!(done["status"], "indexed", "{done}");
    let count = done["chunk_count"].as_i64().unwrap();
    assert!(count > 256, "three slices or more: {count}");
    assert_eq!(chunk_rows(&app, &id).await, count);
    assert!(!chunks(&app, &id).await.is_empty());
    let body = app.post_json("/v1/search", &json!({"query": "zebrafish ledger", "mode": "keyword"})).await;
    assert_eq!(body["results"][0]["document_id"], json!(id), "{body}");
    assert!(fake.stats().embedding_requests >= (count as u64).div_ceil(16));
}

/// A large document that fails for good partway through keeps none of the
/// slices it had written.
#[tokio::test]
async fn a_large_document_failing_partway_keeps_no_half_written_chunks() {
    let (app, fake) = slow_embedding_app().await;
    let doc = upload_text(&app, json!({"text": large_text("okapi")})).await;
    let id = doc["id"].as_str().unwrap().to_string();
    wait_for_partial_write(&app, &id).await.expect("slices written before the failure");
    fake.push_faults([Fault::QuotaExhausted]);
    let done = wait_until_settled(&app, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("quota"), "{done}");
    assert_eq!(chunk_rows(&app, &id).await, 0, "the failed attempt's slices were left behind");
}

/// Two deliveries of one large document's job running at once (a visibility
/// timeout that ran out) leave exactly one generation, the one the document shows.
#[tokio::test]
async fn two_deliveries_at_once_of_a_large_document_leave_one_set() {
    let (app, _fake) = slow_embedding_app().await;
    let doc = upload_text(&app, json!({"text": large_text("narwhal")})).await;
    let id = doc["id"].as_str().unwrap().to_string();
    let first = wait_until_settled(&app, &id).await;
    assert_eq!(first["status"], "indexed");
    let doc_id: uuid::Uuid = id.parse().unwrap();
    // Queued again without a message, so only the two runs below index it.
    sqlx::query("UPDATE documents SET status = 'queued' WHERE id = $1")
        .bind(doc_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let (wait_a, wait_b) = (Default::default(), Default::default());
    let (a, b) = tokio::join!(
        stolid::worker::jobs::index::run(&app.state, app.tenant_id, doc_id, false, &wait_a),
        stolid::worker::jobs::index::run(&app.state, app.tenant_id, doc_id, false, &wait_b),
    );
    a.unwrap();
    b.unwrap();
    let (rows, generations, stray): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT c.generation), count(*) FILTER (WHERE c.generation <> d.chunk_generation)
         FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.id = $1",
    )
    .bind(doc_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!((rows, generations, stray), (first["chunk_count"].as_i64().unwrap(), 1, 0));
    let again = app.get_json(&format!("/v1/documents/{id}")).await;
    assert_eq!(again["status"], "indexed");
    assert_eq!(again["chunk_count"], first["chunk_count"]);
}

/// Delete removes row, chunks and the S3 original, in any status; a job that
/// runs afterwards writes nothing back.
#[tokio::test]
async fn deleting_a_document_removes_everything_and_stays_deleted() {
    let app = spawn_app().await;
    let doc = upload_text(&app, json!({"text": "short lived"})).await;
    let id = doc["id"].as_str().unwrap().to_string();
    wait_until_settled(&app, &id).await;
    let s3_key = format!("tenants/{}/documents/{id}/original", app.tenant_id);
    assert!(app.state.blobs.get(&s3_key).await.unwrap().is_some());
    let deleted =
        app.client.delete(app.url(&format!("/v1/documents/{id}"))).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get(&format!("/v1/documents/{id}")).send().await.unwrap().status(), 404);
    assert!(app.state.blobs.get(&s3_key).await.unwrap().is_none());
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(chunks, 0);
    // A late (re)delivery of its job must not bring it back.
    stolid::worker::jobs::index::run(&app.state, app.tenant_id, id.parse().unwrap(), false, &Default::default())
        .await
        .unwrap();
    let docs: i64 = sqlx::query_scalar("SELECT count(*) FROM documents").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(docs, 0);
    let again =
        app.client.delete(app.url(&format!("/v1/documents/{id}"))).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(again.status(), 404);
}

/// Listing filters by status and collection and pages with a cursor; other tenants see nothing.
#[tokio::test]
async fn listing_filters_and_pages_within_the_tenant() {
    let app = spawn_app().await;
    for i in 0..5 {
        upload_text(
            &app,
            json!({"text": format!("document {i}"), "collection": if i % 2 == 0 { "even" } else { "odd" }}),
        )
        .await;
    }
    let page: Value = app.get_json("/v1/documents?limit=2").await;
    assert_eq!(page["documents"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let mut seen: Vec<String> =
        page["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    let rest: Value = app.get_json(&format!("/v1/documents?limit=10&cursor={cursor}")).await;
    assert!(rest["next_cursor"].is_null());
    seen.extend(rest["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
    let even: Value = app.get_json("/v1/documents?collection=even").await;
    assert_eq!(even["documents"].as_array().unwrap().len(), 3);
    let bad = app.get("/v1/documents?status=done").send().await.unwrap();
    assert_eq!(bad.status(), 422);
    // Collections by name, with what of them is searchable once indexed.
    app.drain_queue().await;
    let collections: Value = app.get_json("/v1/collections").await;
    let counts: Vec<(&str, i64, i64, bool)> = collections["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap();
            (name, c["documents"].as_i64().unwrap(), c["indexed"].as_i64().unwrap(), c["chunks"].as_i64().unwrap() > 0)
        })
        .collect();
    assert_eq!(counts, [("even", 3, 3, true), ("odd", 2, 2, true)], "{collections}");

    let other = app.new_tenant("globex").await;
    let theirs: Value =
        app.client.get(app.url("/v1/documents")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["documents"].as_array().unwrap().len(), 0);
    let their_collections: Value =
        app.client.get(app.url("/v1/collections")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
    assert_eq!(their_collections["collections"], json!([]));
    let id = &seen[0];
    let peek = app.client.get(app.url(&format!("/v1/documents/{id}"))).bearer_auth(&other).send().await.unwrap();
    assert_eq!(peek.status(), 404);
}

fn many_small_chunks(requests_per_second: u32) -> Options {
    Options {
        env: HashMap::from([
            ("CHUNK_MAX_TOKENS", "20".to_string()),
            ("CHUNK_OVERLAP_TOKENS", "0".to_string()),
            ("EMBED_MAX_BATCH_INPUTS", "4".to_string()),
            ("EMBED_MAX_IN_FLIGHT", "3".to_string()),
        ]),
        tweak: Some(Box::new(move |config| {
            config.llm.embedding_limits.requests =
                stolid::config::RateCap { limit: requests_per_second, window: Duration::from_secs(1) };
        })),
        ..Default::default()
    }
}

async fn upload_many(app: &TestApp, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let text = (0..6)
            .map(|p| format!("Document {i} paragraph {p} talks about topic {} in some detail.\n\n", i * 7 + p))
            .collect::<String>();
        ids.push(upload_text(app, json!({"text": text})).await["id"].as_str().unwrap().to_string());
    }
    ids
}

/// With many documents indexing at once, the provider never sees more than the
/// shared cap in any window, nor more calls in flight than allowed.
#[tokio::test]
async fn the_shared_limiter_holds_the_cap_with_many_documents_in_flight() {
    let (app, fake) = spawn_app_with_fake(many_small_chunks(20)).await;
    fake.set_latency(Duration::from_millis(20));
    for id in upload_many(&app, 16).await {
        assert_eq!(wait_until_settled(&app, &id).await["status"], "indexed");
    }
    let stats = fake.stats();
    assert!(stats.embedding_requests >= 20, "enough traffic to test the cap: {stats:?}");
    assert!(stats.max_in_flight <= 3, "{stats:?}");
    // Arrival times are measured at the server: allow loopback jitter at the window's edges.
    let busiest = fake.max_embedding_requests_in(Duration::from_millis(975));
    assert!(busiest <= 20, "{busiest} requests in one window");
    assert_eq!(stats.rate_limited, 0);
}

/// A provider stricter than our configured cap answers 429s: the shared limiter
/// slows down, requests do not storm, and every document still ends indexed.
#[tokio::test]
async fn provider_429s_slow_the_limiter_and_every_document_still_indexes() {
    let (app, fake) = spawn_app_with_fake(many_small_chunks(40)).await;
    fake.set_rate_cap(Some(stolid::config::RateCap { limit: 10, window: Duration::from_secs(1) }));
    for id in upload_many(&app, 12).await {
        assert_eq!(wait_until_settled(&app, &id).await["status"], "indexed");
    }
    let stats = fake.stats();
    let limiter = app.state.gateway.limiter().status();
    assert!(stats.rate_limited > 0, "the provider did push back: {stats:?}");
    assert!(limiter.throttled_total > 0, "{limiter:?}");
    // No storm: each 429 pauses everyone, so they stay a small share of the traffic.
    assert!(stats.rate_limited * 2 < stats.embedding_requests, "{stats:?}");
}

/// Summaries are written by a job through the gateway (and metered), singly or in batch.
#[tokio::test]
async fn documents_can_be_summarized_one_by_one_or_in_batch() {
    let app = spawn_app().await;
    let one = upload_text(&app, json!({"text": MARKDOWN, "content_type": "text/markdown", "collection": "s"})).await;
    let two = upload_text(
        &app,
        json!({"text": "Cargo is the package manager. It builds code and fetches crates.", "collection": "s"}),
    )
    .await;
    for doc in [&one, &two] {
        wait_until_settled(&app, doc["id"].as_str().unwrap()).await;
    }
    let single = app.post(&format!("/v1/documents/{}/summarize", one["id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(single.status(), 202);
    let batch = app.post("/v1/documents/summarize").json(&json!({"collection": "s"})).send().await.unwrap();
    assert_eq!(batch.status(), 202);
    assert_eq!(batch.json::<Value>().await.unwrap()["queued"], 2);
    let nothing = app.post("/v1/documents/summarize").json(&json!({})).send().await.unwrap();
    assert_eq!(nothing.status(), 422, "an empty selection is refused, not taken as everything");
    let deadline = Instant::now() + Duration::from_secs(30);
    for doc in [&one, &two] {
        let id = doc["id"].as_str().unwrap();
        let summary = loop {
            let d: Value = app.get_json(&format!("/v1/documents/{id}")).await;
            if let Some(summary) = d["summary"].as_str() {
                break summary.to_string();
            }
            assert!(Instant::now() < deadline, "no summary for {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(summary.len() > 20, "{summary}");
    }
    app.state.gateway.recorder().flush().await;
    let calls: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM model_calls WHERE endpoint = 'worker.summarize' AND operation = 'chat'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert!(calls >= 2, "{calls}");
}

/// Deploying a new embedding model and re-indexing the tenant switches each
/// document to the new vectors in one step: at no point does a document have
/// no vectors, and afterwards only the new model's remain.
#[tokio::test]
async fn reindexing_with_a_new_embedding_model_switches_atomically() {
    let old = spawn_app().await;
    let doc = upload_text(&old, json!({"text": MARKDOWN, "content_type": "text/markdown"})).await;
    let id = doc["id"].as_str().unwrap().to_string();
    assert_eq!(wait_until_settled(&old, &id).await["embedding_model"], "local-hash-384");
    let infra = old.infra.clone();
    old.stop().await.unwrap();

    let env =
        HashMap::from([("EMBEDDING_MODEL", "local-hash-256".to_string()), ("EMBEDDING_DIMENSIONS", "256".to_string())]);
    let new = spawn_app_with(Options { env, infra: Some(infra), ..Default::default() }).await;
    let key = new.new_tenant("acme").await; // same tenant, a fresh key for the new app
    // Before the re-index, the old vectors keep serving vector searches.
    let before: Value =
        new.post_json_as(&key, "/v1/search", &json!({"query": "who owns a value", "mode": "vector"})).await;
    assert!(before["results"].as_array().is_some_and(|r| !r.is_empty()), "old vectors must stay searchable: {before}");
    let reindex = new
        .client
        .post(new.url("/v1/documents/reindex"))
        .bearer_auth(&key)
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(reindex.status(), 202);
    let doc_id: uuid::Uuid = id.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (vectors, model): (i64, Option<String>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM chunk_embeddings e JOIN chunks c ON c.id = e.chunk_id WHERE c.document_id = $1),
                    (SELECT embedding_model FROM documents WHERE id = $1)",
        )
        .bind(doc_id)
        .fetch_one(&new.state.db)
        .await
        .unwrap();
        assert!(vectors > 0, "the document was left without vectors mid-switch");
        if model.as_deref() == Some("local-hash-256") {
            break;
        }
        assert!(Instant::now() < deadline, "the re-index never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let models: Vec<(String, i32)> = sqlx::query_as(
        "SELECT DISTINCT e.model, vector_dims(e.embedding) FROM chunk_embeddings e JOIN chunks c ON c.id = e.chunk_id WHERE c.document_id = $1",
    )
    .bind(doc_id)
    .fetch_all(&new.state.db)
    .await
    .unwrap();
    assert_eq!(models, [("local-hash-256".to_string(), 256)]);
    let index = stolid::store::embeddings::index_name("local-hash-256", 256);
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = $1)")
        .bind(index)
        .fetch_one(&new.state.db)
        .await
        .unwrap();
    assert!(exists, "the new model got its own HNSW index without a migration");
}

/// An exhausted quota is not retried: the document fails with that reason, the
/// message is not redelivered, and `/readyz` reports it.
#[tokio::test]
async fn an_exhausted_embedding_quota_fails_documents_without_burning_the_queue() {
    let env = HashMap::from([("WORKER_VISIBILITY_TIMEOUT_SECS", "1".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.push_faults([Fault::QuotaExhausted]);
    let doc = upload_text(&app, json!({"text": "needs an embedding"})).await;
    let settled = wait_until_settled(&app, doc["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "failed");
    assert!(settled["error"].as_str().unwrap().contains("quota"), "{settled}");
    // Longer than the visibility timeout: a message left on the queue would have come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.embedding_arrivals().len(), 1, "no retries against an exhausted quota");
    let ready: Value = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert!(ready["model"]["quota_exhausted"].is_string(), "{ready}");
}

/// A process that dies mid-job (no shutdown, no release) stops its heartbeat;
/// the message reappears after the visibility timeout and another process
/// indexes the document.
#[tokio::test]
async fn a_job_from_a_killed_worker_is_picked_up_by_another() {
    let fake = stolid_testkit::fake_openai::FakeOpenAi::start().await;
    fake.set_latency(Duration::from_secs(30)); // the first process never finishes its call
    let infra = crate::helpers::create_infra().await;
    let env = HashMap::from([("WORKER_VISIBILITY_TIMEOUT_SECS", "2".to_string())]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let (first_infra, first_env, base_url) = (infra.clone(), env.clone(), fake.base_url());
    let doomed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let app = spawn_app_with(Options {
                env: first_env,
                infra: Some(first_infra),
                fake: Some(base_url),
                ..Default::default()
            })
            .await;
            ready_tx.send((app.address.clone(), app.api_key.clone())).unwrap();
            let _ = kill_rx.await;
        });
        // Like SIGKILL: every task is dropped where it stands; nothing is released.
        runtime.shutdown_background();
    });
    let (address, key) = ready_rx.recv().unwrap();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{address}/v1/documents"))
        .bearer_auth(&key)
        .json(&json!({"text": "survives a crash"}))
        .send()
        .await
        .unwrap();
    let id = response.json::<Value>().await.unwrap()["documents"][0]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.embedding_arrivals().is_empty() {
        assert!(Instant::now() < deadline, "the first worker never started the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill_tx.send(()).unwrap();
    doomed.join().unwrap();

    fake.set_latency(Duration::ZERO);
    let survivor =
        spawn_app_with(Options { env, infra: Some(infra), fake: Some(fake.base_url()), ..Default::default() }).await;
    let doc = wait_until_settled(&survivor, &id).await;
    assert_eq!(doc["status"], "indexed", "{doc}");
    assert_eq!(fake.embedding_arrivals().len(), 2, "one call lost with the dead process, one that succeeded");
}

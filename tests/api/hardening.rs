//! Regressions from the hardening pass: hostile input, cross-tenant probes,
//! dependency faults. Each test failed before its fix.

use serde_json::{Value, json};

use std::time::Duration;

use sqlx::Connection;

use stolid::store::documents::DocumentStatus;
use stolid_testkit::proxy::{FaultProxy, ProxyMode, upstream_of, via};

use crate::helpers::{
    Options, TestApp, base_env, create_infra, error_code, spawn_app, spawn_app_with, spawn_app_with_fake, upload_text,
    wait_for_status, wait_until_settled,
};

/// `s3_uri` names only objects under the caller's own import prefix: another
/// tenant's original is refused exactly like a key that does not exist, so
/// neither its content nor its existence leaks.
#[tokio::test]
async fn s3_uri_cannot_read_another_tenants_objects_or_probe_for_them() {
    let app = spawn_app().await;
    let secret = upload_text(&app, json!({"text": "Tenant A's secret plan.", "title": "secret"})).await;
    let secret = wait_until_settled(&app, secret["id"].as_str().unwrap()).await;
    assert_eq!(secret["status"], "indexed");
    let a_key = format!("tenants/{}/documents/{}/original", app.tenant_id, secret["id"].as_str().unwrap());
    let bucket = &app.infra.bucket;

    let b_key = app.new_tenant("beta").await;
    let b_id = stolid::store::keys::ensure_tenant(&app.state.db, "beta").await.unwrap();
    let post_as_b = |uri: String| {
        app.client
            .post(app.url("/v1/documents"))
            .bearer_auth(&b_key)
            .json(&json!({"s3_uri": uri, "content_type": "text/plain"}))
            .send()
    };
    let mut refusals = Vec::new();
    for uri in [
        format!("s3://{bucket}/{a_key}"),
        format!("s3://{bucket}/tenants/{}/documents/x/original", app.tenant_id),
        format!("s3://{bucket}/tenants/{b_id}/documents/x/original"),
        format!("s3://{bucket}/imports/{}/plan.txt", app.tenant_id),
        format!("s3://{bucket}/imports/{b_id}/../{}/plan.txt", app.tenant_id),
        format!("s3://other-bucket/imports/{b_id}/plan.txt"),
    ] {
        let response = post_as_b(uri.clone()).await.unwrap();
        assert_eq!(response.status(), 403, "{uri}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{uri}");
        refusals.push(body);
    }
    // The refusal for an existing object and for a made-up one are the same bytes.
    assert_eq!(refusals[0], refusals[1]);

    // Nothing was registered for B: its listing and search stay empty.
    let list: Value =
        app.client.get(app.url("/v1/documents")).bearer_auth(&b_key).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["documents"].as_array().unwrap().len(), 0, "{list}");

    // B's own import prefix works.
    let own = format!("imports/{b_id}/notes.txt");
    app.state.blobs.put(&own, b"Beta's own imported notes.".to_vec(), "text/plain").await.unwrap();
    let response = post_as_b(format!("s3://{bucket}/{own}")).await.unwrap();
    assert_eq!(response.status(), 202);
    let missing = post_as_b(format!("s3://{bucket}/imports/{b_id}/absent.txt")).await.unwrap();
    assert_eq!(error_code(missing).await, "not_found");
}

/// A NUL (U+0000) in any text a caller sends is refused with 422
/// `invalid_character` (Postgres text cannot hold one; it used to be a 500),
/// and a refused upload leaves nothing behind in S3.
#[tokio::test]
async fn nul_characters_in_caller_input_are_refused_with_422_everywhere() {
    let app = spawn_app().await;
    let nul = "a\u{0}b";
    let bodies: Vec<(&str, Value)> = vec![
        ("/v1/search", json!({"query": nul})),
        ("/v1/search", json!({"query": "ok", "collection": nul})),
        ("/v1/search", json!({"query": "ok", "filter": {"lang": nul}})),
        ("/v1/search", json!({"query": "ok", "filter": {nul: "en"}})),
        ("/v1/chat", json!({"message": nul})),
        ("/v1/suggest", json!({"text": nul})),
        ("/v1/agent", json!({"message": nul})),
        ("/v1/chat/completions", json!({"model": "stolid", "messages": [{"role": "user", "content": nul}]})),
        ("/v1/documents", json!({"text": nul})),
        ("/v1/documents", json!({"text": "fine", "title": nul})),
        ("/v1/documents", json!({"text": "fine", "metadata": {"k": nul}})),
        ("/v1/documents", json!({"text": "fine", "collection": nul})),
        ("/v1/documents/reindex", json!({"collection": nul})),
    ];
    for (path, body) in bodies {
        let response = app.post(path).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 422, "{path} {body}");
        assert_eq!(error_code(response).await, "invalid_character", "{path} {body}");
    }
    for path in ["/v1/documents?collection=a%00b", "/v1/documents?status=queued%00", "/v1/conversations?x=%00"] {
        let response = app.get(path).send().await.unwrap();
        assert_eq!(response.status(), 422, "{path}");
        assert_eq!(error_code(response).await, "invalid_character", "{path}");
    }
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"words".to_vec()).file_name("a.txt"))
        .text("collection", nul);
    let response = app.post("/v1/documents").multipart(form).send().await.unwrap();
    assert_eq!(error_code(response).await, "invalid_character");

    let objects = app.bucket_keys().await;
    assert!(objects.is_empty(), "refused uploads left objects: {objects:?}");
}

/// A stray NUL inside an uploaded text file is dropped from the extracted text:
/// the document indexes on its first delivery instead of failing five times.
#[tokio::test]
async fn a_text_file_with_nul_bytes_indexes_without_them() {
    let app = spawn_app().await;
    let part = reqwest::multipart::Part::bytes(b"Ownership rules\0 apply to every value.\0".to_vec())
        .file_name("nul.txt")
        .mime_str("text/plain")
        .unwrap();
    let response = app.post("/v1/documents").multipart(reqwest::multipart::Form::new().part("file", part)).send().await;
    let body: Value = response.unwrap().json().await.unwrap();
    let doc = wait_until_settled(&app, body["documents"][0]["id"].as_str().unwrap()).await;
    assert_eq!(doc["status"], "indexed", "{doc}");
    let chunks: Value = app.get_json(&format!("/v1/documents/{}/chunks", doc["id"].as_str().unwrap())).await;
    assert_eq!(chunks["chunks"][0]["content"], "Ownership rules apply to every value.");
}

/// Content that can never index fails at once with its reason, and the
/// message is not retried (nothing reaches the dead-letter queue): binary data
/// labelled as HTML, text above MAX_EXTRACTED_BYTES, a
/// corrupt PDF. An empty file is refused at upload.
#[tokio::test]
async fn poison_documents_fail_at_once_with_their_reason() {
    let mut env = std::collections::HashMap::new();
    env.insert("MAX_EXTRACTED_BYTES", (256 * 1024).to_string());
    let app = spawn_app_with(Options { env, ..Default::default() }).await;
    let noise = stolid_testkit::noise(200_000, 0x9e37_79b9_7f4a_7c15u64);
    let long_line = "x".repeat(512 * 1024).into_bytes();
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("noise.html", "text/html", noise, "binary"),
        ("line.txt", "text/plain", long_line, "MAX_EXTRACTED_BYTES"),
        ("broken.pdf", "application/pdf", b"%PDF-1.4 not really".to_vec(), "PDF could not be read"),
    ];
    let mut ids = Vec::new();
    for (name, mime, bytes, _) in &cases {
        let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()).mime_str(mime).unwrap();
        let response = app.post("/v1/documents").multipart(reqwest::multipart::Form::new().part("file", part)).send();
        let body: Value = response.await.unwrap().json().await.unwrap();
        ids.push(body["documents"][0]["id"].as_str().unwrap().to_string());
    }
    for ((name, _, _, reason), id) in cases.iter().zip(&ids) {
        let doc = wait_until_settled(&app, id).await;
        assert_eq!(doc["status"], "failed", "{name}: {doc}");
        assert!(doc["error"].as_str().unwrap().contains(reason), "{name}: {doc}");
    }
    assert_eq!(dead_letters(&app).await, 0);

    let empty = reqwest::multipart::Part::bytes(Vec::new()).file_name("empty.txt").mime_str("text/plain").unwrap();
    let response = app.post("/v1/documents").multipart(reqwest::multipart::Form::new().part("file", empty)).send();
    assert_eq!(error_code(response.await.unwrap()).await, "invalid_request");
}

async fn dead_letters(app: &TestApp) -> usize {
    let sqs = aws_sdk_sqs::Client::new(&app.infra.sdk);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&app.infra.dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    attributes.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages]
        .parse()
        .unwrap()
}

/// Searches wait on a slow model without holding a pooled connection: many
/// more concurrent searches than connections all succeed, and other requests
/// are served meanwhile (before, the pool ran dry and they got 500s).
#[tokio::test]
async fn slow_model_calls_do_not_hold_database_connections() {
    let mut env = std::collections::HashMap::new();
    env.insert("EMBED_MAX_IN_FLIGHT", "32".to_string());
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.set_latency(Duration::from_millis(1500));
    let searches = (0..24)
        .map(|i| app.post("/v1/search").json(&json!({"query": format!("question {i}"), "mode": "vector"})).send());
    let me = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.get("/v1/me").send().await.unwrap().status()
    };
    let (results, me) = tokio::join!(futures::future::join_all(searches), me);
    assert_eq!(me, 200);
    for response in results {
        let response = response.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let idle_in_transaction: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(idle_in_transaction, 0);
}

/// Postgres going away answers 503 `unavailable` with `Retry-After` (not a 500
/// after a long wait), says nothing about which dependency in the body, and
/// the same process serves again once Postgres is back.
#[tokio::test]
async fn a_database_outage_answers_503_and_recovers_without_a_restart() {
    let mut infra = create_infra().await;
    let proxy = FaultProxy::start(upstream_of(&infra.database_url).await).await;
    infra.database_url = via(&infra.database_url, proxy.addr());
    let app = spawn_app_with(Options { infra: Some(infra), ..Default::default() }).await;
    upload_text(&app, json!({"text": "Written before the outage."})).await;

    proxy.set_mode(ProxyMode::Refuse);
    let requests = [
        app.get("/v1/documents"),
        app.post("/v1/search").json(&json!({"query": "outage", "mode": "keyword"})),
        app.post("/v1/documents").json(&json!({"text": "Written during the outage."})),
    ];
    for request in requests {
        let started = std::time::Instant::now();
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let body = response.text().await.unwrap();
        assert!(body.contains("\"unavailable\""), "{body}");
        assert!(!body.to_lowercase().contains("postgres") && !body.contains("pool"), "{body}");
        println!("503 after {:?}", started.elapsed());
    }

    proxy.set_mode(ProxyMode::Pass);
    let list: Value = app.get_json("/v1/documents").await;
    assert_eq!(list["documents"].as_array().unwrap().len(), 1, "{list}");
}

/// A database that is up but refuses new sessions (connections disallowed, its
/// connection limit reached, a failover, a rotated password) is unavailable,
/// not a bug: 503 with `Retry-After`, and served again once it accepts them.
#[tokio::test]
async fn a_database_refusing_connections_answers_503_not_500() {
    let app = spawn_app().await;
    upload_text(&app, json!({"text": "Written before the database closed its doors."})).await;
    let (base, name) = app.infra.database_url.rsplit_once('/').unwrap();
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/stolid")).await.unwrap();
    for (refusal, reopen) in [
        ("ALLOW_CONNECTIONS false", "ALLOW_CONNECTIONS true"), // FATAL 55000 at connect
        ("CONNECTION LIMIT 0", "CONNECTION LIMIT -1"),         // FATAL 53300 at connect
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" {refusal}")))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .execute(&mut admin)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await; // past the pool's no-ping window
        for request in [
            app.get("/v1/documents"),
            app.post("/v1/search").json(&json!({"query": "doors", "mode": "keyword"})),
            app.post("/v1/documents").json(&json!({"text": "Written while it refused."})),
        ] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 503, "{refusal}: {}", response.text().await.unwrap());
            assert!(response.headers().contains_key("retry-after"), "{refusal}");
            assert_eq!(error_code(response).await, "unavailable", "{refusal}");
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" {reopen}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let list: Value = app.get_json("/v1/documents").await;
        assert_eq!(list["documents"].as_array().unwrap().len(), 1, "{refusal}: {list}");
    }
}

/// Every statement of the pool is held to `DATABASE_STATEMENT_TIMEOUT_SECS`: a
/// request whose statement cannot finish (here it waits behind a lock) answers
/// 504 `timeout` when the time is up instead of holding its connection, and
/// the next request is served.
#[tokio::test]
async fn a_statement_past_the_statement_timeout_answers_504_and_frees_its_connection() {
    let env = std::collections::HashMap::from([("DATABASE_STATEMENT_TIMEOUT_SECS", "0.5".to_string())]);
    let app = spawn_app_with(Options { env, ..Default::default() }).await;
    upload_text(&app, json!({"text": "A document to list."})).await;
    let mut admin = sqlx::PgConnection::connect(&app.infra.database_url).await.unwrap();
    let mut lock = sqlx::Connection::begin(&mut admin).await.unwrap();
    sqlx::query("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let started = std::time::Instant::now();
    let response = app.get("/v1/documents").send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(error_code(response).await, "timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    lock.rollback().await.unwrap();
    let list: Value = app.get_json("/v1/documents").await;
    assert_eq!(list["documents"].as_array().unwrap().len(), 1, "{list}");
}

/// A metadata filter is bounded (keys, `in` values, bytes): the filter that
/// held Postgres for a minute (10,000 `in` values) is refused at once with 422.
#[tokio::test]
async fn a_hostile_filter_is_refused_before_it_reaches_the_database() {
    let app = spawn_app().await;
    let values: Vec<String> = (0..10_000).map(|i| format!("value-{i}")).collect();
    for path in ["/v1/search", "/v1/chat", "/v1/suggest"] {
        let field = if path == "/v1/search" {
            "query"
        } else if path == "/v1/chat" {
            "message"
        } else {
            "text"
        };
        let response =
            app.post(path).json(&json!({field: "wombat", "filter": {"t": {"in": values}}})).send().await.unwrap();
        assert_eq!(response.status(), 422, "{path}");
        assert_eq!(error_code(response).await, "invalid_request", "{path}");
    }
}

/// Connections are handed out without a ping only while they were used
/// moments ago: once Postgres has dropped every connection (a restart, a
/// failover) and they have sat idle past that window, the next request is
/// served on fresh ones, not answered 503.
#[tokio::test]
async fn connections_postgres_dropped_while_idle_are_replaced_without_a_failed_request() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/documents").send().await.unwrap().status(), 200);
    }
    let mut admin = sqlx::PgConnection::connect(&app.infra.database_url).await.unwrap();
    let dropped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(dropped > 0, "the app held connections");
    tokio::time::sleep(Duration::from_millis(700)).await;
    for _ in 0..3 {
        let response = app.get("/v1/documents").send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

/// An S3 (and SQS) that accepts connections and never answers fails calls
/// within AWS_TIMEOUT_SECS: uploads and `/content` answer 503, `/readyz` says
/// S3 is not ready; all recover when it answers again.
#[tokio::test]
async fn a_hanging_s3_answers_503_quickly_and_readyz_reports_it() {
    let endpoint = base_env()["AWS_ENDPOINT_URL"].clone();
    let proxy = FaultProxy::start(upstream_of(&endpoint).await).await;
    let mut env = std::collections::HashMap::new();
    env.insert("AWS_ENDPOINT_URL", via(&endpoint, proxy.addr()));
    env.insert("AWS_TIMEOUT_SECS", "1".to_string());
    let app = spawn_app_with(Options { env, ..Default::default() }).await;
    let doc = upload_text(&app, json!({"text": "Stored before the hang."})).await;
    let content_path = format!("/v1/documents/{}/content", doc["id"].as_str().unwrap());

    proxy.set_mode(ProxyMode::Hang);
    let upload = app.post("/v1/documents").json(&json!({"text": "Written during the hang."})).send().await.unwrap();
    assert_eq!(upload.status(), 503);
    assert_eq!(error_code(upload).await, "unavailable");
    let content = app.get(&content_path).send().await.unwrap();
    assert_eq!(content.status(), 503);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(ready["checks"]["s3"].as_str().unwrap().starts_with("error"), "{ready}");

    proxy.set_mode(ProxyMode::Pass);
    assert_eq!(app.get(&content_path).send().await.unwrap().status(), 200);
    let again = app.post("/v1/documents").json(&json!({"text": "Written after the hang."})).send().await.unwrap();
    assert_eq!(again.status(), 202);
}

/// Re-indexing when SQS refuses answers 503 and leaves every document as it
/// was: none is left `queued` with no message that will ever finish it.
#[tokio::test]
async fn reindex_with_the_queue_down_leaves_documents_as_they_were() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for text in ["First indexed page.", "Second indexed page."] {
        let doc = upload_text(&app, json!({"text": text})).await;
        let id = doc["id"].as_str().unwrap().to_string();
        assert_eq!(wait_until_settled(&app, &id).await["status"], "indexed");
        ids.push(id);
    }
    let mut state = app.state.clone();
    state.queue = stolid::infra::queue::Queue::new(
        &app.infra.sdk,
        &format!("{}-gone", app.infra.queue_url),
        Duration::from_secs(2),
    );
    let router = stolid::api::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let batch = app.client.post(format!("{address}/v1/documents/reindex")).bearer_auth(&app.api_key);
    let response = batch.json(&json!({"all": true})).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let single = app.client.post(format!("{address}/v1/documents/{}/reindex", ids[0])).bearer_auth(&app.api_key);
    assert_eq!(single.send().await.unwrap().status(), 503);
    for id in &ids {
        let doc: Value = app.get_json(&format!("/v1/documents/{id}")).await;
        assert_eq!(doc["status"], "indexed", "{doc}");
    }
}

/// A job that runs past JOB_TIMEOUT_SECS is stopped and retried; after the
/// queue's last delivery its document is `failed` with that reason.
#[tokio::test]
async fn a_job_past_its_deadline_is_retried_then_failed_with_the_reason() {
    let mut env = std::collections::HashMap::new();
    env.insert("JOB_TIMEOUT_SECS", "1".to_string());
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.set_latency(Duration::from_secs(3));
    let doc = upload_text(&app, json!({"text": "Embedding this takes longer than the job may."})).await;
    let doc = wait_until_settled(&app, doc["id"].as_str().unwrap()).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("JOB_TIMEOUT_SECS"), "{error}");
    // Written on the last delivery only: the earlier ones were retried.
    assert!(error.starts_with("gave up after repeated failures"), "{error}");
}

/// A job still running when the drain deadline passes is released, and its
/// document goes back to `queued` (with why) rather than staying `processing`.
#[tokio::test]
async fn a_job_released_at_shutdown_leaves_its_document_queued() {
    let mut env = std::collections::HashMap::new();
    env.insert("SHUTDOWN_TIMEOUT_SECS", "1".to_string());
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.set_latency(Duration::from_secs(4));
    let doc = upload_text(&app, json!({"text": "Still embedding when the task stops."})).await;
    let id: uuid::Uuid = doc["id"].as_str().unwrap().parse().unwrap();
    let (db, tenant) = (app.state.db.clone(), app.tenant_id);
    wait_for_status(&db, tenant, id, DocumentStatus::Processing).await;
    app.stop().await.unwrap();
    let doc = stolid::store::documents::get(&db, tenant, id).await.unwrap().unwrap();
    assert_eq!(doc.status, DocumentStatus::Queued, "{doc:?}");
}

/// The sweeper re-sends the job of a document nothing will finish (here:
/// re-indexes whose message was lost), which then indexes; it leaves alone one
/// that may simply be waiting in a backlog; and it fails for good a document
/// sent too many times, with the reason.
#[tokio::test]
async fn the_sweeper_finishes_or_fails_documents_left_unfinished() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for text in ["A re-index whose message was lost.", "A document that never finishes.", "One in a backlog."] {
        let doc = upload_text(&app, json!({"text": text})).await;
        let id = doc["id"].as_str().unwrap().to_string();
        assert_eq!(wait_until_settled(&app, &id).await["status"], "indexed");
        ids.push(id.parse::<uuid::Uuid>().unwrap());
    }
    // Finished messages are deleted in batches, a moment after their job.
    app.drain_queue().await;
    let set = |id: uuid::Uuid, status: &'static str, sweeps: i32, idle_minutes: f64| {
        sqlx::query(
            "UPDATE documents SET status = $2, sweeps = $3, updated_at = now() - make_interval(secs => $4 * 60) WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(sweeps)
        .bind(idle_minutes)
        .execute(&app.state.db)
    };
    // While the queue holds messages, a document idle for a while may just be
    // waiting in that backlog: it is left alone.
    set(ids[2], "queued", 0, 20.0).await.unwrap();
    let mut busy = app.state.clone();
    busy.queue = stolid::infra::queue::Queue::new(&app.infra.sdk, &app.infra.dlq_url, Duration::from_secs(5));
    busy.queue.send("{}".to_string()).await.unwrap();
    let report = stolid::worker::sweeper::sweep_stuck(&busy).await.unwrap();
    assert_eq!((report.requeued, report.failed, report.deferred), (0, 0, 1), "{report:?}");

    // With the queue empty nothing can be waiting in it: stuck documents are
    // sent again, and one sent too often already fails.
    set(ids[0], "queued", 0, 120.0).await.unwrap();
    set(ids[1], "processing", 3, 120.0).await.unwrap();
    let report = stolid::worker::sweeper::sweep_stuck(&app.state).await.unwrap();
    assert_eq!((report.requeued, report.failed, report.deferred), (2, 1, 0), "{report:?}");
    for id in [ids[0], ids[2]] {
        assert_eq!(wait_until_settled(&app, &id.to_string()).await["status"], "indexed");
    }
    let failed = wait_until_settled(&app, &ids[1].to_string()).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("sent again 3 times"), "{failed}");
}

/// A chunk generation an attempt left half-written when its task died (opened
/// longer ago than the stuck threshold, never published) is deleted by the
/// sweeper; one still being written, and the generation the document shows, stay.
#[tokio::test]
async fn the_sweeper_deletes_generations_a_dead_attempt_left_half_written() {
    let app = spawn_app().await;
    let doc = upload_text(&app, json!({"text": "Published once.\n\nAnd kept."})).await;
    let id: uuid::Uuid = doc["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(wait_until_settled(&app, &id.to_string()).await["status"], "indexed");
    let db = &app.state.db;
    // Two unpublished copies of its chunks: one opened two hours ago, one just now.
    let mut generations = Vec::new();
    for opened_minutes_ago in [120.0, 0.0] {
        // The document is indexed, so starting an attempt only draws its generation.
        let generation = stolid::store::documents::start_attempt(db, app.tenant_id, id).await.unwrap().unwrap();
        stolid::store::chunks::open_generation(db, id, generation).await.unwrap();
        sqlx::query(
            "UPDATE chunk_generations_open SET opened_at = now() - make_interval(secs => $2 * 60) WHERE generation = $1",
        )
        .bind(generation)
        .bind(opened_minutes_ago)
        .execute(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO chunks (id, tenant_id, document_id, generation, ordinal, content, content_hash, token_count,
                                 start_offset, end_offset)
             SELECT gen_random_uuid(), tenant_id, document_id, $2, ordinal, content, content_hash, token_count,
                    start_offset, end_offset
             FROM chunks WHERE document_id = $1
               AND generation = (SELECT chunk_generation FROM documents WHERE id = $1)",
        )
        .bind(id)
        .bind(generation)
        .execute(db)
        .await
        .unwrap();
        generations.push(generation);
    }
    let report = stolid::worker::sweeper::sweep_stuck(&app.state).await.unwrap();
    assert_eq!(report.abandoned, 1, "{report:?}");
    let left: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT generation, count(*) FROM chunks WHERE document_id = $1 GROUP BY generation ORDER BY generation",
    )
    .bind(id)
    .fetch_all(db)
    .await
    .unwrap();
    let shown = doc_chunk_generation(db, id).await;
    let published = left.iter().find(|(g, _)| *g == shown).map(|(_, n)| *n).expect("the published generation stays");
    assert_eq!(left, vec![(shown, published), (generations[1], published)], "the recent one stays, the old one goes");
}

async fn doc_chunk_generation(db: &sqlx::PgPool, id: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT chunk_generation FROM documents WHERE id = $1").bind(id).fetch_one(db).await.unwrap()
}

/// Originals whose document row is gone are deleted; live originals and the
/// operators' `imports/` objects are kept.
#[tokio::test]
async fn the_sweeper_deletes_orphaned_originals_only() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|config| config.worker.sweeper.stuck_after = Duration::ZERO)),
        ..Default::default()
    })
    .await;
    let live = upload_text(&app, json!({"text": "A live document."})).await;
    let live_key = format!("tenants/{}/documents/{}/original", app.tenant_id, live["id"].as_str().unwrap());
    let orphan_key = format!("tenants/{}/documents/{}/original", app.tenant_id, uuid::Uuid::now_v7());
    let import_key = format!("imports/{}/later.txt", app.tenant_id);
    for key in [&orphan_key, &import_key] {
        app.state.blobs.put(key, b"bytes".to_vec(), "text/plain").await.unwrap();
    }
    let report = stolid::worker::sweeper::sweep_originals(&app.state).await.unwrap();
    assert_eq!((report.orphans_deleted, report.newly_missing), (1, 0), "{report:?}");
    let mut keys = app.bucket_keys().await;
    keys.sort();
    let mut expected = vec![import_key, live_key];
    expected.sort();
    assert_eq!(keys, expected);
}

/// Periodic passes are paced fleet-wide: of several tasks asking for a pass's
/// lease in one period, one gets it; once it expires, the next asker does.
#[tokio::test]
async fn one_task_of_the_fleet_runs_each_maintenance_pass() {
    let app = spawn_app().await;
    let tasks: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    let take = |holder| stolid::store::leases::try_take(&app.state.db, "test_pass", holder, 60.0);
    let attempts = futures::future::join_all(tasks.iter().map(|&task| take(task))).await;
    assert_eq!(attempts.into_iter().filter(|taken| *taken.as_ref().unwrap()).count(), 1);
    for &task in &tasks {
        assert!(!take(task).await.unwrap(), "nobody takes it again within the period");
    }
    // The period ends (as if a minute passed): the next asker gets it.
    sqlx::query("UPDATE maintenance_leases SET expires_at = now() - interval '1 second' WHERE name = 'test_pass'")
        .execute(&app.state.db)
        .await
        .unwrap();
    assert!(take(tasks[1]).await.unwrap());
    assert!(!take(tasks[2]).await.unwrap());
}

/// The same bytes declared as another type are another document, not a
/// duplicate of the first: dedupe looks at the content type too.
#[tokio::test]
async fn the_same_bytes_with_another_type_are_not_a_duplicate() {
    let app = spawn_app().await;
    let bytes = b"<h1>Title</h1><p>Body text.</p>".to_vec();
    let mut ids = Vec::new();
    for (name, mime) in [("page.html", "text/html"), ("page.pdf", "application/pdf"), ("again.html", "text/html")] {
        let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name).mime_str(mime).unwrap();
        let response = app.post("/v1/documents").multipart(reqwest::multipart::Form::new().part("file", part)).send();
        let body: Value = response.await.unwrap().json().await.unwrap();
        let doc = &body["documents"][0];
        ids.push((
            doc["id"].as_str().unwrap().to_string(),
            doc["duplicate"].as_bool().unwrap(),
            doc["content_type"].clone(),
        ));
    }
    assert_eq!(ids[0].2, "text/html");
    assert_eq!((ids[1].1, &ids[1].2), (false, &json!("application/pdf")));
    assert_ne!(ids[0].0, ids[1].0);
    assert_eq!((ids[2].1, &ids[2].0), (true, &ids[0].0));
}

/// One multipart upload carries at most 100 files: 10,000 tiny files once ran
/// past the request timeout with thousands stored. More are refused with 422
/// `too_many_files` before anything is stored; 100 are taken.
#[tokio::test]
async fn an_upload_of_too_many_files_is_refused_before_anything_is_stored() {
    let app = spawn_app().await;
    let form = |n: usize| {
        (0..n).fold(reqwest::multipart::Form::new(), |form, i| {
            let part = reqwest::multipart::Part::bytes(format!("note {i}").into_bytes())
                .file_name(format!("note-{i}.txt"))
                .mime_str("text/plain")
                .unwrap();
            form.part("file", part)
        })
    };
    let refused = app.post("/v1/documents").multipart(form(10_000)).send().await.unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(error_code(refused).await, "too_many_files");
    let list: Value = app.get_json("/v1/documents").await;
    assert_eq!(list["documents"].as_array().unwrap().len(), 0, "nothing stored: {list}");
    assert!(app.bucket_keys().await.is_empty(), "no original in S3");

    let taken = app.post("/v1/documents").multipart(form(100)).send().await.unwrap();
    assert_eq!(taken.status(), 202);
    let body: Value = taken.json().await.unwrap();
    assert_eq!(body["documents"].as_array().unwrap().len(), 100);
}

/// The texts of `n` documents of four short paragraphs each: with
/// `CHUNK_MAX_TOKENS=20` every paragraph is a chunk of its own.
fn paragraph_documents(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let text = (0..4)
                .map(|p| format!("Document {i} paragraph {p} talks about wombats, burrows and the dry grass plains."))
                .collect::<Vec<_>>()
                .join("\n\n");
            json!({"text": text, "title": format!("doc {i}")})
        })
        .collect()
}

/// The environment of a fleet cap far smaller than the queue: one embedding
/// request a second, two inputs each, jobs allowed two seconds of work.
fn tight_cap_env() -> std::collections::HashMap<&'static str, String> {
    let mut env = std::collections::HashMap::new();
    env.insert("EMBED_REQUESTS_PER_MINUTE", "60".to_string());
    env.insert("EMBED_MAX_BATCH_INPUTS", "2".to_string());
    env.insert("CHUNK_MAX_TOKENS", "20".to_string());
    env.insert("CHUNK_OVERLAP_TOKENS", "0".to_string());
    env.insert("JOB_TIMEOUT_SECS", "2".to_string());
    env.insert("SWEEP_INTERVAL_SECS", "0".to_string());
    env
}

/// Issue 33, item 2: a queue deeper than the cap drains within the deadline.
/// Eight documents need about sixteen requests at one a second, so most jobs
/// wait in line far longer than JOB_TIMEOUT_SECS (and longer than all three
/// deliveries together); waiting for the cap is not the job's fault, and none
/// of them fails.
#[tokio::test]
async fn jobs_waiting_for_the_fleets_cap_are_not_timed_out() {
    let (app, _fake) = spawn_app_with_fake(Options { env: tight_cap_env(), ..Default::default() }).await;
    let mut ids = Vec::new();
    for body in paragraph_documents(8) {
        ids.push(upload_text(&app, body).await["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let doc = wait_until_settled(&app, id).await;
        assert_eq!(doc["status"], "indexed", "{doc}");
    }
    // The test means something only if jobs did wait longer than their deadline.
    let longest_wait: f64 =
        sqlx::query_scalar("SELECT max(wait_ms) FROM model_calls WHERE endpoint = 'worker.index' AND tenant_id = $1")
            .bind(app.tenant_id)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert!(longest_wait > 3.0 * 2_000.0, "the longest wait for the cap was only {longest_wait} ms");
}

/// A job that has waited for the cap as long as it may (SWEEP_STUCK_AFTER_SECS
/// minus JOB_TIMEOUT_SECS, here 3 s) is released: its document shows `queued`
/// with why, its message goes back to the queue as a new one, and it indexes
/// later. Nothing is failed.
#[tokio::test]
async fn a_job_that_waits_too_long_for_the_cap_is_released_and_indexes_later() {
    let mut env = tight_cap_env();
    env.insert("SWEEP_STUCK_AFTER_SECS", "5".to_string());
    let (app, _fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    let mut ids = Vec::new();
    for body in paragraph_documents(5) {
        ids.push(upload_text(&app, body).await["id"].as_str().unwrap().to_string());
    }
    let mut released = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut settled = 0;
        for id in &ids {
            let doc: Value = app.get_json(&format!("/v1/documents/{id}")).await;
            assert_ne!(doc["status"], "failed", "{doc}");
            let error = doc["error"].as_str().unwrap_or_default();
            if doc["status"] == "queued" && error.contains("waiting for the fleet's embedding cap") {
                released = Some(error.to_string());
            }
            settled += usize::from(doc["status"] == "indexed");
        }
        if settled == ids.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{settled} of {} indexed", ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let released = released.expect("no job was released, so the test proves nothing");
    assert!(released.contains("released after 3 s in line"), "{released}");
}

/// `failed` is final: a message still in the queue for a failed document (a
/// sweeper's re-send, a redelivery) does not index it; a re-index request does.
#[tokio::test]
async fn a_leftover_message_does_not_undo_failed() {
    let app = spawn_app().await;
    let id: uuid::Uuid = app.index_all([json!({"text": "Failed once, for good."})]).await[0].parse().unwrap();
    stolid::store::documents::mark_failed(&app.state.db, app.tenant_id, id, "gave up: a test").await.unwrap();
    let leftover = stolid::infra::queue::Job::IndexDocument { tenant_id: app.tenant_id, document_id: id };
    app.state.queue.send(leftover.to_message()).await.unwrap();
    app.drain_queue().await;
    let doc: Value = app.get_json(&format!("/v1/documents/{id}")).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"], "gave up: a test");

    let response = app.post(&format!("/v1/documents/{id}/reindex")).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    assert_eq!(wait_until_settled(&app, &id.to_string()).await["status"], "indexed");
}

/// Issue 33, item 6: originals the object store lost are noticed. The
/// sweeper's listing (here three keys a page, so the ranges between pages are
/// exercised) marks exactly the documents whose object is gone, across
/// tenants; the content answers 410 `original_missing`; the gauge counts them;
/// an object put back clears its mark.
#[tokio::test]
async fn lost_originals_are_noticed_and_reported() {
    let app = spawn_app().await;
    let beta_key = app.new_tenant("beta").await;
    let mut docs = Vec::new(); // (api key, id)
    for i in 0..7 {
        let key = if i % 2 == 0 { app.api_key.clone() } else { beta_key.clone() };
        let response = app
            .client
            .post(format!("{}/v1/documents", app.address))
            .bearer_auth(&key)
            .json(&json!({"text": format!("Document number {i}.")}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let body: Value = response.json().await.unwrap();
        docs.push((key, body["documents"][0]["id"].as_str().unwrap().to_string()));
    }
    app.drain_queue().await;
    // The rows must be older than the listing's margin.
    sqlx::query("UPDATE documents SET created_at = created_at - interval '1 hour'")
        .execute(&app.state.db)
        .await
        .unwrap();
    // Lose the first, the middle and the last original in the listing's order:
    // the ranges before the first page, between pages and after the last.
    let mut keys = app.bucket_keys().await;
    keys.sort();
    assert_eq!(keys.len(), 7);
    let lost: Vec<usize> =
        [0, 3, 6].iter().map(|&k| docs.iter().position(|(_, id)| keys[k].contains(id.as_str())).unwrap()).collect();
    let mut saved = Vec::new();
    for k in [0, 3, 6] {
        saved.push((keys[k].clone(), app.state.blobs.get(&keys[k]).await.unwrap().unwrap()));
        app.state.blobs.delete(&keys[k]).await.unwrap();
    }
    let report = stolid::worker::sweeper::sweep_originals_in_pages(&app.state, 3).await.unwrap();
    assert_eq!((report.newly_missing, report.missing, report.orphans_deleted), (3, 3, 0), "{report:?}");
    let marked: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM documents WHERE original_missing_since IS NOT NULL ORDER BY id")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    let mut expected: Vec<String> = lost.iter().map(|&i| docs[i].1.clone()).collect();
    expected.sort();
    assert_eq!(marked, expected);
    let gauges = stolid::worker::gauges::measure(&app.state).await.unwrap();
    assert_eq!(gauges.missing_originals, 3);

    // Reading one: a clear 410, and the document says since when.
    let (key, id) = &docs[lost[0]];
    let response =
        app.client.get(format!("{}/v1/documents/{id}/content", app.address)).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), 410);
    assert_eq!(error_code(response).await, "original_missing");
    let doc: Value = app
        .client
        .get(format!("{}/v1/documents/{id}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["original_missing_since"].is_string(), "{doc}");
    assert_eq!(doc["status"], "indexed", "its chunks stay searchable");

    // A second pass finds nothing new; an object put back is unmarked.
    let (restored_key, bytes) = saved.remove(0);
    app.state.blobs.put(&restored_key, bytes, "text/plain").await.unwrap();
    let report = stolid::worker::sweeper::sweep_originals_in_pages(&app.state, 3).await.unwrap();
    assert_eq!((report.newly_missing, report.missing), (0, 2), "{report:?}");
    let report = stolid::worker::sweeper::sweep_originals(&app.state).await.unwrap();
    assert_eq!((report.newly_missing, report.missing, report.listed), (0, 2, 5), "{report:?}");
}

/// A new document (its row younger than the listing) is never taken for one
/// whose original is missing, nor is the whole table when the bucket is empty
/// of originals but the rows are new.
#[tokio::test]
async fn the_originals_pass_leaves_new_documents_alone() {
    let app = spawn_app().await;
    let doc = upload_text(&app, json!({"text": "Brand new."})).await;
    let id = doc["id"].as_str().unwrap();
    app.drain_queue().await;
    let key = app.bucket_keys().await.into_iter().find(|k| k.contains(id)).unwrap();
    app.state.blobs.delete(&key).await.unwrap();
    let report = stolid::worker::sweeper::sweep_originals(&app.state).await.unwrap();
    assert_eq!((report.newly_missing, report.missing), (0, 0), "{report:?}");
}

/// Issue 33, item 5: a request cut off by REQUEST_TIMEOUT_SECS while it stores
/// a document (here: SQS hangs on the index job's send) does not leave the
/// document `queued` with no message: the store finishes on its own, and the
/// document indexes once SQS answers.
#[tokio::test]
async fn a_store_cut_off_by_the_request_timeout_still_sends_its_job() {
    let app = spawn_app().await;
    let endpoint = base_env()["AWS_ENDPOINT_URL"].clone();
    let proxy = FaultProxy::start(upstream_of(&endpoint).await).await;
    let proxied = app.infra.sdk.to_builder().endpoint_url(via(&endpoint, proxy.addr())).build();
    let mut state = app.state.clone();
    state.queue = stolid::infra::queue::Queue::new(&proxied, &app.infra.queue_url, Duration::from_secs(30));
    let mut config = (*state.config).clone();
    config.request_timeout = Duration::from_secs(1);
    state.config = std::sync::Arc::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, stolid::api::router(state)).await });

    proxy.set_mode(ProxyMode::Hang);
    let upload = app.client.post(format!("{address}/v1/documents")).bearer_auth(&app.api_key);
    let response = upload.json(&json!({"text": "Cut off mid-store.", "title": "cut off"})).send().await.unwrap();
    assert_eq!(response.status(), 504);
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM documents WHERE title = 'cut off'")
        .fetch_one(&app.state.db)
        .await
        .expect("the row was written before the send hung");
    proxy.set_mode(ProxyMode::Pass);
    let doc = wait_until_settled(&app, &id.to_string()).await;
    assert_eq!(doc["status"], "indexed", "{doc}");
}

//! Promises of the deployment, not of one process: several instances against
//! one database, as the tasks of an ECS service run.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use stolid::app::ProcessRole;
use stolid::config::RateCap;
use stolid::llm::CallContext;
use stolid::llm::limiter::buckets;
use stolid::llm::limiter::pace_for;
use stolid_testkit::fake_openai::{BucketCaps, FakeOpenAi, Fault, POISON};

use crate::helpers::{
    Options, TestApp, create_infra, spawn_app, spawn_app_with, spawn_app_with_fake, start_app, upload_text,
    wait_until_settled,
};

/// Three tasks started at the same moment against a fresh database (migrations
/// to run, a new embedding model's HNSW index to build) all come up, and the
/// index is built once and valid. Before, two of three died with "deadlock
/// detected": the index build waits for every running statement, including
/// one blocked on the lock the builder held.
#[tokio::test]
async fn three_instances_started_together_all_come_up() {
    let infra = create_infra().await;
    let env = HashMap::from([("EMBEDDING_MODEL", "fleet-start-model".to_string())]);
    let tenants = ["t0", "t1", "t2"];
    let starts = tenants.iter().map(|tenant| start_app(infra.clone(), env.clone(), |_| {}, ProcessRole::All, tenant));
    let apps = futures::future::join_all(starts).await;
    for (i, app) in apps.iter().enumerate() {
        assert!(app.is_ok(), "instance {i} failed to start: {:#}", app.as_ref().err().unwrap());
    }
    let app = apps.into_iter().next().unwrap().unwrap();
    let name = stolid::store::embeddings::index_name("fleet-start-model", 384);
    let valid: Vec<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = $1",
    )
    .bind(&name)
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(valid, vec![true]);
}

const MODEL: &str = "text-embedding-3-small";

fn ctx(endpoint: &'static str) -> CallContext {
    CallContext { endpoint, ..Default::default() }
}

/// `count` instances on one database and one fake provider, each configured
/// with the whole cap, as a user scaling an ECS service out would.
async fn fleet(count: usize, env: HashMap<&'static str, String>) -> (Vec<TestApp>, FakeOpenAi) {
    let (first, fake) = spawn_app_with_fake(Options { env: env.clone(), ..Default::default() }).await;
    let mut apps = vec![first];
    for _ in 1..count {
        let options = Options {
            env: env.clone(),
            infra: Some(apps[0].infra.clone()),
            fake: Some(fake.base_url()),
            ..Default::default()
        };
        apps.push(spawn_app_with(options).await);
    }
    (apps, fake)
}

/// Three instances, each with its own limiter and each told the whole cap,
/// send queries as fast as they can: the provider (a one-second bucket, as
/// OpenAI enforces a per-minute cap) never answers 429, and each instance
/// knows it is one of three.
#[tokio::test]
async fn the_cap_holds_across_three_instances_sharing_one_database() {
    // A slot for every query, so each is its own request and the request cap binds.
    let env =
        HashMap::from([("EMBED_REQUESTS_PER_MINUTE", "600".to_string()), ("EMBED_MAX_IN_FLIGHT", "48".to_string())]);
    let (apps, fake) = fleet(3, env).await;
    fake.set_bucket_caps(BucketCaps { requests_per_minute: Some(600), tokens_per_minute: None });
    fake.set_latency(Duration::from_millis(20));
    let calls = apps.iter().flat_map(|app| {
        (0..15).map(|i| {
            let gateway = app.state.gateway.clone();
            async move { gateway.embed_query(&ctx("test"), MODEL, 384, &format!("query {i}")).await }
        })
    });
    for result in futures::future::join_all(calls).await {
        result.expect("every query succeeds");
    }
    let log = fake.embedding_log();
    assert_eq!(log.iter().filter(|a| a.status == 429).count(), 0, "{log:?}");
    assert_eq!(log.len(), 45);
    // The three shared ten per second: one instance alone would have been as fast.
    let span = log.last().unwrap().at.duration_since(log[0].at).as_secs_f64();
    assert!(span >= 3.0, "45 requests at 10/s take over 3 s, not {span:.2} s");
    for app in &apps {
        assert_eq!(app.state.gateway.limiter().status().fleet_members, 3);
    }
}

/// A 429 answered to one instance pauses the other as well: its next request
/// reaches the provider only after the pause.
#[tokio::test]
async fn a_429_seen_by_one_instance_pauses_and_slows_the_other() {
    let (apps, fake) = fleet(2, HashMap::new()).await;
    fake.push_faults([Fault::RateLimited { retry_after_secs: 1.0 }]);
    let first = apps[0].state.gateway.clone();
    let throttled = tokio::spawn(async move { first.embed_query(&ctx("test"), MODEL, 384, "first").await });
    let throttled_at = loop {
        if let Some((at, _)) = fake.embedding_arrivals().into_iter().find(|(_, status)| *status == 429) {
            break at;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Give the 429 a moment to reach the database, then ask from the other instance.
    tokio::time::sleep(Duration::from_millis(100)).await;
    apps[1].state.gateway.embed_query(&ctx("test"), MODEL, 384, "second").await.unwrap();
    throttled.await.unwrap().unwrap();
    let served: Vec<_> = fake.embedding_arrivals().into_iter().filter(|(_, s)| *s == 200).collect();
    assert_eq!(served.len(), 2);
    for (at, _) in served {
        assert!(at.duration_since(throttled_at) >= Duration::from_millis(990), "sent during the pause");
    }
    assert_eq!(apps[1].state.gateway.limiter().status().slowdown, 2, "the other instance slowed down too");
    assert_eq!(apps[1].state.gateway.limiter().status().throttled_total, 0, "it never saw a 429 itself");
}

/// A task that reserved budget and died costs the fleet that reservation and
/// nothing more: the next reservation waits only for the budget the dead task
/// took, and the task stops counting for the in-flight shares once its
/// membership lapses.
#[tokio::test]
async fn a_task_that_dies_holding_a_reservation_stalls_the_fleet_no_longer_than_it() {
    let app = spawn_app().await;
    let db = &app.state.db;
    let pace = pace_for(RateCap::per_minute(600));
    let tokens = pace_for(RateCap::per_minute(1_000_000));
    let (dead, alive) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (recovery, ttl) = (Duration::from_secs(3), Duration::from_secs(10));
    let reserve =
        |member, requests| buckets::lease(db, "fleet-test", member, (requests, 10), (pace, tokens), recovery, ttl);
    // The dead task took a whole burst and will never send it.
    let burst = pace.burst as u32;
    reserve(dead, burst).await.unwrap();
    let next = reserve(alive, 1).await.unwrap();
    assert!(
        next.ready_in <= burst as f64 * pace.interval,
        "waited {:.3} s, more than the dead task's reservation",
        next.ready_in
    );
    assert_eq!(next.members, 2);
    // Its membership lapses after the TTL: the survivor gets the whole in-flight cap again.
    sqlx::query("UPDATE fleet_members SET last_seen = last_seen - 11 WHERE id = $1")
        .bind(dead)
        .execute(db)
        .await
        .unwrap();
    assert_eq!(reserve(alive, 1).await.unwrap().members, 1);
}

/// Every reservation keeps room in the burst for one query credit per task of
/// the fleet, since a credit may be sent long after its moment; the room never
/// takes more than half the burst.
#[tokio::test]
async fn reservations_keep_room_for_every_tasks_query_credit() {
    let app = spawn_app().await;
    let db = &app.state.db;
    let (recovery, ttl) = (Duration::from_secs(3), Duration::from_secs(10));
    // A cell every 100 s: nothing refills while the burst is counted.
    let pace = |held| buckets::Pace { interval: 100.0, burst: 20.0, held };
    let members: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
    for &member in &members {
        buckets::lease(db, "warm-up", member, (1, 1), (pace(0.0), pace(0.0)), recovery, ttl).await.unwrap();
    }
    let member = members[0];
    // How many one-request reservations leave at once before one must wait.
    let sent_at_once = |key: &'static str, held: f64| async move {
        let mut count = 0;
        loop {
            let lease = buckets::lease(db, key, member, (1, 1), (pace(held), pace(0.0)), recovery, ttl).await.unwrap();
            if lease.ready_in > 0.0 {
                return (count, lease.members);
            }
            count += 1;
        }
    };
    let (without, fleet) = sent_at_once("no-credits", 0.0).await;
    assert_eq!(without, 20);
    let (with, _) = sent_at_once("credits", 2.0).await;
    assert_eq!(with, 20 - 2 * fleet as usize, "{fleet} tasks");
    let (capped, _) = sent_at_once("large-credits", 8.0).await;
    assert_eq!(capped, 10, "at most half the burst is kept");
}

/// Chunks of several documents travel in one request, and each document gets
/// its own vectors back in order (the fake's vectors are a function of the text).
#[tokio::test]
async fn batching_puts_chunks_of_several_documents_into_one_request() {
    let env = HashMap::from([
        ("CHUNK_MAX_TOKENS", "20".to_string()),
        ("CHUNK_OVERLAP_TOKENS", "0".to_string()),
        ("EMBED_MAX_IN_FLIGHT", "1".to_string()),
        ("WORKER_CONCURRENCY", "8".to_string()),
    ]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.set_latency(Duration::from_millis(300));
    let bodies = (0..6).map(|d| {
        let text: String =
            (0..4).map(|p| format!("Document {d} paragraph {p} explains topic {}.\n\n", d * 10 + p)).collect();
        json!({ "text": text })
    });
    app.index_all(bodies).await;
    let per_document: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM chunks GROUP BY document_id").fetch_all(&app.state.db).await.unwrap();
    let most_in_one_document = *per_document.iter().max().unwrap() as u32;
    let largest_request = fake.embedding_log().iter().map(|a| a.inputs).max().unwrap();
    assert!(
        largest_request > most_in_one_document,
        "a request carried {largest_request} inputs, no more than one document's {most_in_one_document}"
    );
    let stored: Vec<(String, String, pgvector::Vector)> = sqlx::query_as(
        "SELECT c.context, c.content, e.embedding FROM chunks c JOIN chunk_embeddings e ON e.chunk_id = c.id",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(stored.len() as i64, per_document.iter().sum::<i64>());
    for (context, content, vector) in stored {
        let embedded = stolid::ingest::chunk::embedding_text(&context, &content);
        assert_eq!(vector.to_vec(), stolid::llm::providers::local::embed(&embedded, 384), "the vector of {embedded:?}");
    }
}

/// A query does not wait behind a backlog of bulk batches: under a cap of two
/// requests a second with twenty one-input batches queued, it goes out next.
#[tokio::test]
async fn a_query_is_not_delayed_behind_bulk_batches() {
    let env = HashMap::from([
        ("EMBED_REQUESTS_PER_MINUTE", "120".to_string()),
        ("EMBED_MAX_BATCH_INPUTS", "1".to_string()),
        ("EMBED_MAX_IN_FLIGHT", "4".to_string()),
    ]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    let gateway = app.state.gateway.clone();
    let texts: Vec<String> = (0..20).map(|i| format!("bulk input {i}")).collect();
    let bulk = tokio::spawn(async move { gateway.embed(&ctx("worker.index"), &texts).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = fake.embedding_arrivals().len();
    app.state.gateway.embed_query(&ctx("search"), MODEL, 384, "the query").await.unwrap();
    let after = fake.embedding_arrivals().len();
    assert!(after - before <= 3, "{} bulk requests went out ahead of the query", after - before - 1);
    assert!(after < 10, "the bulk backlog was still there: {after} requests sent");
    bulk.await.unwrap().unwrap();
}

/// An input the provider refuses fails only its own caller: the batch it
/// shared is sent again caller by caller. A document with such an input ends
/// `failed` at once, with the reason.
#[tokio::test]
async fn an_input_the_provider_refuses_fails_only_its_own_caller() {
    let env = HashMap::from([("EMBED_MAX_IN_FLIGHT", "1".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Default::default() }).await;
    fake.set_latency(Duration::from_millis(1000));
    let gateway = app.state.gateway.clone();
    let embed = |texts: Vec<String>| {
        let gateway = gateway.clone();
        tokio::spawn(async move { gateway.embed(&ctx("worker.index"), &texts).await })
    };
    // The first holds the only slot while the next two queue up together.
    let first = embed(vec!["goes first".into()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let good = embed(vec!["a good input".into(), "another good one".into()]);
    let bad = embed(vec![format!("bad: {POISON}")]);
    first.await.unwrap().unwrap();
    assert_eq!(good.await.unwrap().unwrap().vectors.len(), 2);
    let err = bad.await.unwrap().unwrap_err();
    assert!(matches!(err, stolid::llm::LlmError::Refused(_)), "{err:?}");
    let refused: Vec<u32> = fake.embedding_log().iter().filter(|a| a.status == 400).map(|a| a.inputs).collect();
    assert_eq!(refused, [3, 1], "the mixed batch, then the bad input alone");

    let doc = upload_text(&app, json!({ "text": format!("Bad: {POISON}") })).await;
    let doc = wait_until_settled(&app, doc["id"].as_str().unwrap()).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("refused the input"), "{doc}");
}

//! Spend control: per-tenant hard limits enforced before each model call,
//! across the fleet; indexing that pauses instead of failing; soft limits.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use stolid::llm::accounting::budget_rows::{self, LimitChanges};
use uuid::Uuid;

use crate::helpers::{Options, TestApp, error_code, spawn_app_with, spawn_app_with_fake, upload_text};

/// One token of the chat model costs a tenth of a cent, so a few chats spend dollars.
const CHAT_MODEL: &str = "budget-chat";

fn priced_env() -> HashMap<&'static str, String> {
    HashMap::from([
        ("CHAT_MODEL", CHAT_MODEL.to_string()),
        ("MODEL_PRICES", json!({CHAT_MODEL: {"input": 1000.0, "output": 1000.0}}).to_string()),
        ("CHAT_MAX_ANSWER_TOKENS", "40".to_string()),
        ("RERANK_CANDIDATES", "0".to_string()),
    ])
}

async fn set_limits(app: &TestApp, changes: LimitChanges) {
    budget_rows::set_limits(&app.state.db, app.tenant_id, &changes).await.unwrap();
}

async fn budget(app: &TestApp) -> Value {
    let response = app.get("/v1/budget").send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Moves the document's pause end to the past and runs the sweeper's pass, which resumes it.
async fn resume_as_if_the_pause_ran_out(app: &TestApp, id: Uuid) {
    sqlx::query("UPDATE documents SET paused_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let report = stolid::worker::sweeper::sweep_paused(&app.state).await.unwrap();
    assert_eq!(report.resumed, 1);
}

async fn recorded_cost(app: &TestApp) -> f64 {
    sqlx::query_scalar("SELECT coalesce(sum(cost_usd), 0) FROM model_calls WHERE tenant_id = $1")
        .bind(app.tenant_id)
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

/// Many chats at once, sent to two instances sharing one database, against a
/// small daily limit: what the tenant spent never passes the limit (each call
/// was admitted only if its worst case fitted beside every call in flight),
/// the refused ones get `429 budget_exceeded` with the limit, the period and
/// `Retry-After`, and the spend equals the recorded calls' cost.
#[tokio::test]
async fn concurrent_chats_on_two_instances_never_spend_past_the_hard_limit() {
    let (first, fake) = spawn_app_with_fake(Options { env: priced_env(), ..Default::default() }).await;
    let second = spawn_app_with(Options {
        env: priced_env(),
        infra: Some(first.infra.clone()),
        fake: Some(fake.base_url()),
        ..Default::default()
    })
    .await;
    first.index_all([json!({"title": "ownership", "text": "Ownership moves values. Borrowing lends them."})]).await;
    let limit = 2.0;
    set_limits(&first, LimitChanges { usd_per_day: Some(Some(limit)), ..Default::default() }).await;

    // Eight clients per instance, each asking until it is refused.
    let clients = (0..16).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        let (client, url, key) = (app.client.clone(), app.url("/v1/chat"), first.api_key.clone());
        async move {
            let (mut answered, mut refusal) = (0, None);
            for _ in 0..20 {
                let response = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"message": "How does ownership move values?"}))
                    .send()
                    .await
                    .unwrap();
                if response.status() == 200 {
                    answered += 1;
                    continue;
                }
                assert_eq!(response.status(), 429);
                let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                refusal = Some((retry_after, response.json::<Value>().await.unwrap()));
                break;
            }
            (answered, refusal)
        }
    });
    let results = futures::future::join_all(clients).await;
    first.state.gateway.recorder().flush().await;
    second.state.gateway.recorder().flush().await;

    let answered: usize = results.iter().map(|(n, _)| n).sum();
    let refusals: Vec<&(u64, Value)> = results.iter().filter_map(|(_, r)| r.as_ref()).collect();
    assert!(answered >= 2, "the budget admitted {answered} chats");
    assert_eq!(refusals.len(), 16, "every client was refused in the end: {results:?}");
    let (retry_after, body) = refusals[0];
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(body["error"]["budget"]["period"], "day");
    assert_eq!(body["error"]["budget"]["unit"], "usd");
    assert_eq!(body["error"]["budget"]["limit"], limit);
    assert!(*retry_after > 0 && *retry_after <= 86_400, "{retry_after}");

    let standing = budget(&first).await;
    let spent = standing["day"]["spent_usd"].as_f64().unwrap();
    assert!(spent <= limit + 1e-9, "spent {spent} past the limit {limit}: {standing}");
    assert!(spent > limit / 2.0, "the limit was barely used ({spent}); admission is too cautious: {standing}");
    assert!((spent - recorded_cost(&first).await).abs() < 1e-9, "{standing}");
    assert_eq!(standing["day"]["reserved_usd"], 0.0, "every reservation ended: {standing}");
    assert_eq!(standing["limits"]["usd_per_day"], limit);
}

/// A tenant over its limit has its documents wait, `queued` with the reason,
/// not fail; once the limit is raised the sweeper sends their jobs again and
/// they index, nothing lost. Searches meanwhile are refused with the budget's code.
#[tokio::test]
async fn over_budget_indexing_pauses_and_resumes_when_the_limit_is_raised() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    set_limits(&app, LimitChanges { tokens_per_day: Some(Some(5)), ..Default::default() }).await;
    let doc = upload_text(&app, json!({"title": "paused", "text": "A document that waits for its budget."})).await;
    let id = doc["id"].as_str().unwrap().to_string();
    app.drain_queue().await;

    let waiting = app.get_json(&format!("/v1/documents/{id}")).await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    let reason = waiting["error"].as_str().unwrap();
    assert!(
        reason.starts_with("paused: embedding it needs")
            && reason.contains("more than the whole day limit of 5 tokens"),
        "{waiting}"
    );
    assert!(waiting["paused_until"].is_string(), "{waiting}");
    // More than the 5 tokens the limit allows (a one-word query would fit).
    let query = "how long does a document wait for its tenant's budget to reset?";
    let search = app.post("/v1/search").json(&json!({"query": query, "mode": "vector"})).send().await.unwrap();
    assert_eq!(search.status(), 429);
    assert_eq!(error_code(search).await, "budget_exceeded");

    // Still no room: the sweeper leaves it paused, without counting a re-send.
    let report = stolid::worker::sweeper::sweep_paused(&app.state).await.unwrap();
    assert_eq!((report.resumed, report.waiting), (0, 1));

    set_limits(&app, LimitChanges { tokens_per_day: Some(None), ..Default::default() }).await;
    let report = stolid::worker::sweeper::sweep_paused(&app.state).await.unwrap();
    assert_eq!(report.resumed, 1);
    app.drain_queue().await;
    let indexed = app.get_json(&format!("/v1/documents/{id}")).await;
    assert_eq!(indexed["status"], "indexed", "{indexed}");
    assert!(indexed["error"].is_null() && indexed["paused_until"].is_null(), "{indexed}");
}

/// A tenant whose day is spent has its documents wait until the day resets;
/// then they index, nothing lost. (The reset is simulated: today's spend
/// becomes yesterday's, and the pause's end is moved to the past.)
#[tokio::test]
async fn a_paused_document_indexes_after_the_period_resets() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    set_limits(&app, LimitChanges { tokens_per_day: Some(Some(1_000)), ..Default::default() }).await;
    sqlx::query(
        "INSERT INTO budget_spend (tenant_id, day, spent_tokens) VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 1000)",
    )
    .bind(app.tenant_id)
    .execute(&app.state.db)
    .await
    .unwrap();
    let doc = upload_text(&app, json!({"title": "tomorrow", "text": "Indexed once the day's budget resets."})).await;
    let id: Uuid = doc["id"].as_str().unwrap().parse().unwrap();
    app.drain_queue().await;
    let waiting = app.get_json(&format!("/v1/documents/{id}")).await;
    assert!(
        waiting["error"].as_str().unwrap().starts_with("paused: the daily budget of 1000 tokens is spent"),
        "{waiting}"
    );

    sqlx::query("UPDATE budget_spend SET day = day - 1 WHERE tenant_id = $1")
        .bind(app.tenant_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    resume_as_if_the_pause_ran_out(&app, id).await;
    app.drain_queue().await;
    let indexed = app.get_json(&format!("/v1/documents/{id}")).await;
    assert_eq!(indexed["status"], "indexed", "{indexed}");
    assert!(indexed["chunk_count"].as_i64().unwrap() > 0);
}

/// When a pause runs out (the period reset) the job runs again even if the
/// sweeper cannot tell the limit has room; still over, it pauses again rather
/// than failing or counting against the document's re-sends.
#[tokio::test]
async fn a_document_whose_pause_ran_out_is_retried_and_paused_again_while_still_over() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    set_limits(&app, LimitChanges { tokens_per_day: Some(Some(5)), ..Default::default() }).await;
    let doc = upload_text(&app, json!({"title": "again", "text": "Waiting for the reset."})).await;
    let id: Uuid = doc["id"].as_str().unwrap().parse().unwrap();
    app.drain_queue().await;
    resume_as_if_the_pause_ran_out(&app, id).await;
    app.drain_queue().await;
    let (status, sweeps, paused): (String, i32, bool) =
        sqlx::query_as("SELECT status, sweeps, paused_until > now() FROM documents WHERE id = $1")
            .bind(id)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), sweeps, paused), ("queued", 0, true));
}

/// The soft limit refuses nothing; its crossing is marked once a day. A tenant
/// may set its own soft limit, only below the operator's limits.
#[tokio::test]
async fn the_soft_limit_is_marked_once_and_a_tenant_can_only_lower_it() {
    let (app, _fake) = spawn_app_with_fake(Options { env: priced_env(), ..Default::default() }).await;
    app.index_all([json!({"title": "soft", "text": "Soft limits log; hard limits refuse."})]).await;
    set_limits(&app, LimitChanges { soft_usd_per_day: Some(Some(5.0)), ..Default::default() }).await;

    let too_high =
        app.client.put(app.url("/v1/budget")).bearer_auth(&app.api_key).json(&json!({"soft_usd_per_day": 6.0}));
    let response = too_high.send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(error_code(response).await, "invalid_request");
    let lowered =
        app.client.put(app.url("/v1/budget")).bearer_auth(&app.api_key).json(&json!({"soft_usd_per_day": 0.01}));
    let body: Value = lowered.send().await.unwrap().json().await.unwrap();
    assert_eq!(body["limits"]["soft_usd_per_day"], 0.01, "{body}");
    assert_eq!(body["limits"]["operator_soft_usd_per_day"], 5.0, "{body}");
    assert!(body["soft_limit_crossed_at"].is_null(), "{body}");

    for _ in 0..2 {
        let response = app.post("/v1/chat").json(&json!({"message": "What do soft limits do?"})).send().await.unwrap();
        assert_eq!(response.status(), 200, "a soft limit refuses nothing");
    }
    let standing = budget(&app).await;
    let crossed = standing["soft_limit_crossed_at"].as_str().expect("the crossing is marked").to_string();
    app.post("/v1/chat").json(&json!({"message": "And hard limits?"})).send().await.unwrap();
    assert_eq!(budget(&app).await["soft_limit_crossed_at"], crossed, "marked once per day");
}

/// Reservations racing from many connections at once (as many tasks' calls
/// do) admit exactly what fits: each sees every reservation decided before it.
#[tokio::test]
async fn racing_reservations_admit_exactly_what_fits() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    set_limits(&app, LimitChanges { usd_per_day: Some(Some(1.0)), ..Default::default() }).await;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(32).connect(&app.infra.database_url).await.unwrap();
    // Every connection open first, so the reservations start together.
    let held: Vec<_> = futures::future::join_all((0..32).map(|_| pool.acquire())).await;
    drop(held);
    let reservations = (0..64).map(|_| budget_rows::reserve(&pool, app.tenant_id, Uuid::now_v7(), 0.1, 0, 60.0));
    let results = futures::future::join_all(reservations).await;
    let admitted = results.into_iter().filter(|r| r.as_ref().unwrap().is_none()).count();
    assert_eq!(admitted, 10, "ten reservations of $0.10 fit in $1.00");
}

/// A task that dies mid-call leaves its reservation behind; it stops counting
/// when it expires, so the tenant is not blocked for longer than that.
#[tokio::test]
async fn a_reservation_left_by_a_dead_task_stops_counting_when_it_expires() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    set_limits(&app, LimitChanges { usd_per_day: Some(Some(1.0)), ..Default::default() }).await;
    let db = &app.state.db;
    let reserve = |usd: f64, ttl: f64| budget_rows::reserve(db, app.tenant_id, Uuid::now_v7(), usd, 0, ttl);
    assert_eq!(reserve(0.9, 0.5).await.unwrap(), None, "fits");
    let refused = reserve(0.2, 60.0).await.unwrap().expect("0.9 held + 0.2 passes 1.0");
    assert_eq!((refused.period.as_str(), refused.unit.as_str()), ("day", "usd"));
    assert!((refused.used - 0.9).abs() < 1e-12, "{refused:?}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(reserve(0.2, 60.0).await.unwrap(), None, "the dead task's reservation expired");
}

/// A tenant with no limits sees its spend and no limits, and reserves nothing.
#[tokio::test]
async fn a_tenant_without_limits_sees_its_spend_and_is_never_refused() {
    let (app, _fake) = spawn_app_with_fake(Options { env: priced_env(), ..Default::default() }).await;
    app.index_all([json!({"title": "free", "text": "No limits here."})]).await;
    let response = app.post("/v1/chat").json(&json!({"message": "Any limits?"})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let standing = budget(&app).await;
    assert!(standing["limits"]["usd_per_day"].is_null(), "{standing}");
    assert!(standing["day"]["remaining_usd"].is_null(), "{standing}");
    let spent = standing["day"]["spent_usd"].as_f64().unwrap();
    assert!(spent > 0.0 && (spent - recorded_cost(&app).await).abs() < 1e-9, "{standing}");
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM budget_reservations").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(held, 0);
}

/// `stolid budgets set` and `list` as an operator runs them: limits change one
/// at a time, `none` removes one, bad values are refused with a clear message.
#[tokio::test]
async fn the_budgets_cli_sets_and_lists_limits() {
    let (app, _fake) = spawn_app_with_fake(Options::default()).await;
    let url = app.infra.database_url.clone();
    let run = |args: Vec<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_stolid"))
                .env("DATABASE_URL", url)
                .args(args)
                .output()
                .unwrap()
        })
    };
    let set = run(vec!["budgets", "set", "--tenant", "acme", "--usd-per-day", "5", "--soft-usd-per-day", "4"]);
    let output = set.await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output =
        run(vec!["budgets", "set", "--tenant", "acme", "--usd-per-month", "100", "--soft-usd-per-day", "none"])
            .await
            .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let limits = budget_rows::limits(&app.state.db, app.tenant_id).await.unwrap().unwrap();
    assert_eq!((limits.usd_per_day, limits.usd_per_month, limits.soft_usd_per_day), (Some(5.0), Some(100.0), None));

    let listed = run(vec!["budgets", "list"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("acme") && l.contains("5.00") && l.contains("100.00")), "{stdout}");

    let bad = run(vec!["budgets", "set", "--tenant", "acme", "--usd-per-day=-1"]).await.unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("0 or more"), "{}", String::from_utf8_lossy(&bad.stderr));
    let unknown = run(vec!["budgets", "set", "--tenant", "nobody", "--usd-per-day", "1"]).await.unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no tenant named"));
}

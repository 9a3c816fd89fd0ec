//! The one place integration tests get an app: a fresh database, bucket and
//! queue per test against the real local stack (`make infra` writes `.env`),
//! and the real router on a random port. The only fake is the model server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use stolid::app::ProcessRole;
use stolid::config::Config;
use stolid::domain::state::AppState;
use stolid_testkit::fake_openai::FakeOpenAi;
pub use stolid_testkit::infra::{Infra, MAX_RECEIVES, base_env, create_infra, start_app};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    pub state: AppState,
    pub infra: Infra,
    pub api_key: String,
    pub tenant_id: Uuid,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    pub stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A change to the parsed config.
pub type Tweak = Box<dyn FnOnce(&mut Config) + Send>;

#[derive(Default)]
pub struct Options {
    /// Extra environment for the config (e.g. `EMBED_REQUESTS_PER_MINUTE`).
    pub env: HashMap<&'static str, String>,
    /// Point the `openai` provider at this fake server.
    pub fake: Option<String>,
    /// Change the parsed config (e.g. shorter windows than the env allows).
    pub tweak: Option<Tweak>,
    /// Reuse another app's database, bucket and queues (a second process, a new deploy).
    pub infra: Option<Infra>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let infra = match options.infra {
        Some(infra) => infra,
        None => create_infra().await,
    };
    let mut env = options.env;
    env.insert("DATABASE_MAX_CONNECTIONS", "5".into());
    env.insert("WORKER_WAIT_TIME_SECS", "1".into());
    if let Some(base_url) = options.fake {
        env.insert("OPENAI_API_KEY", "sk-fake".into());
        env.insert("OPENAI_BASE_URL", base_url);
        env.entry("EMBEDDING_DIMENSIONS").or_insert_with(|| "384".into());
        env.entry("LLM_TIMEOUT_SECS").or_insert_with(|| "5".into());
    }
    let tweak = |config: &mut Config| {
        if let Some(tweak) = options.tweak {
            tweak(config);
        }
    };
    let app = start_app(infra, env, tweak, ProcessRole::All, "acme").await.expect("starting the app");
    TestApp {
        address: app.address,
        state: app.state,
        infra: app.infra,
        api_key: app.api_key,
        tenant_id: app.tenant_id,
        client: reqwest::Client::new(),
        shutdown: app.shutdown,
        stopped: app.stopped,
    }
}

pub async fn spawn_app_with_fake(mut options: Options) -> (TestApp, FakeOpenAi) {
    let fake = FakeOpenAi::start().await;
    options.fake = Some(fake.base_url());
    (spawn_app_with(options).await, fake)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&self.api_key)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(&self.api_key)
    }

    /// GET with the key; the JSON body, whatever the status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    /// POST `body` as JSON with the key; the JSON body, whatever the status.
    pub async fn post_json(&self, path: &str, body: &impl serde::Serialize) -> serde_json::Value {
        self.post(path).json(body).send().await.unwrap().json().await.unwrap()
    }

    /// POST `body` as JSON with another tenant's `key`; the JSON body.
    pub async fn post_json_as(&self, key: &str, path: &str, body: &impl serde::Serialize) -> serde_json::Value {
        self.client.post(self.url(path)).bearer_auth(key).json(body).send().await.unwrap().json().await.unwrap()
    }

    /// Another tenant with its own key, for isolation tests.
    pub async fn new_tenant(&self, name: &str) -> String {
        let id = stolid::store::keys::ensure_tenant(&self.state.db, name).await.unwrap();
        stolid::store::keys::create_key(&self.state.db, id).await.unwrap().key
    }

    /// Waits until the workers have emptied the queue: no message waiting or in
    /// flight, and no document `queued` or `processing` (but those paused by
    /// their budget, which wait on purpose).
    pub async fn drain_queue(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM documents WHERE status IN ('queued', 'processing') AND paused_until IS NULL",
            )
            .fetch_one(&self.state.db)
            .await
            .unwrap();
            if open == 0 && self.state.queue.depth().await.unwrap_or(1) == 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the queue never drained: {open} documents unfinished");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Uploads each JSON body (`{"text", ...}`), drains the queue, and checks
    /// that every document ended `indexed`; their ids, in order.
    pub async fn index_all(&self, bodies: impl IntoIterator<Item = serde_json::Value>) -> Vec<String> {
        let mut ids = Vec::new();
        for body in bodies {
            let response = self.post("/v1/documents").json(&body).send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.text().await.unwrap());
            let uploaded: serde_json::Value = response.json().await.unwrap();
            ids.push(uploaded["documents"][0]["id"].as_str().unwrap().to_string());
        }
        self.drain_queue().await;
        for id in &ids {
            let doc = self.get_json(&format!("/v1/documents/{id}")).await;
            assert_eq!(doc["status"], "indexed", "{doc}");
        }
        ids
    }

    /// Every key in the test's bucket.
    pub async fn bucket_keys(&self) -> Vec<String> {
        let config = aws_sdk_s3::config::Builder::from(&self.infra.sdk).force_path_style(true).build();
        let listed = aws_sdk_s3::Client::from_conf(config)
            .list_objects_v2()
            .bucket(&self.infra.bucket)
            .send()
            .await
            .expect("listing the test bucket");
        listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
    }

    /// Starts graceful shutdown and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.stopped).await.expect("shutdown finished in time")?
    }
}

/// Polls the document until it is `indexed` or `failed`.
pub async fn wait_until_settled(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let doc: Value = app.get_json(&format!("/v1/documents/{id}")).await;
        if doc["status"] == "indexed" || doc["status"] == "failed" {
            return doc;
        }
        assert!(Instant::now() < deadline, "document never settled: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn upload_text(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/documents").json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    body["documents"][0].clone()
}

/// Waits until the document's row has `status`, read from the database, so it
/// works whatever the API is doing (stopping, or another process's).
pub async fn wait_for_status(
    db: &sqlx::PgPool,
    tenant_id: Uuid,
    id: Uuid,
    status: stolid::store::documents::DocumentStatus,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stolid::store::documents::get(db, tenant_id, id).await.unwrap().unwrap().status != status {
        assert!(Instant::now() < deadline, "document {id} never became {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses a JSON error body and returns its code, checking the shape on the way.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("error bodies are JSON");
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {body}"));
    assert!(body["error"]["message"].is_string(), "no error.message in {body}");
    code.to_string()
}

/// Reads an SSE response into (event, data) pairs.
pub async fn sse_events(response: reqwest::Response) -> Vec<(String, serde_json::Value)> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?.to_string();
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event, serde_json::from_str(data).unwrap()))
        })
        .collect()
}

/// What one request's model calls cost, from `model_calls`: input and output
/// tokens, and USD.
pub async fn recorded_usage(app: &TestApp, request_id: &str) -> (i64, i64, f64) {
    app.state.gateway.recorder().flush().await;
    sqlx::query_as(
        "SELECT coalesce(sum(input_tokens), 0)::int8, coalesce(sum(output_tokens), 0)::int8,
                coalesce(sum(cost_usd), 0)::float8
         FROM model_calls WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap()
}

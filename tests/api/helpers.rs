//! The one place integration tests get an app: a fresh database, bucket and
//! queue per test against the real local stack (`make infra` writes `.env`),
//! and the real router on a random port. The only fake is the model server.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use stolid::app::{AppState, Application, Role};
use stolid::config::Config;
use stolid::testkit::fake_openai::FakeOpenAi;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Settings from `.env` (written by `make infra`), overridden by the real environment.
pub fn base_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.env");
        let mut map: HashMap<String, String> = dotenvy::from_path_iter(path)
            .map(|iter| iter.filter_map(Result::ok).collect())
            .unwrap_or_default();
        for key in [
            "DATABASE_URL",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            if let Ok(value) = std::env::var(key) {
                map.insert(key.to_string(), value);
            }
        }
        assert!(
            map.contains_key("DATABASE_URL"),
            "no DATABASE_URL: run `make infra` first"
        );
        map
    })
}

/// Per-test infrastructure: a database, a bucket, a queue with a DLQ.
pub struct Infra {
    pub database_url: String,
    pub bucket: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub sdk: aws_config::SdkConfig,
}

/// Redrive limit of test queues: a message is delivered this many times, then dead-lettered.
pub const MAX_RECEIVES: u32 = 3;

pub async fn create_infra() -> Infra {
    let env = base_env();
    let admin_url = &env["DATABASE_URL"];
    let name = format!("stolid_test_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(admin_url)
        .await
        .expect("connecting to the admin database");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("creating the test database");
    admin.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    let database_url = format!("{base}/{name}");

    let config = Config::from_lookup(lookup(&HashMap::new())).expect("base config");
    let sdk = stolid::app::aws_sdk_config(&config).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let suffix = Uuid::new_v4().simple().to_string();
    let bucket = format!("test-{}", &suffix[..20]);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("creating the test bucket");
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("test-{suffix}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let redrive =
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES})
            .to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("test-{suffix}"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            redrive,
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    Infra {
        database_url,
        bucket,
        queue_url,
        dlq_url,
        sdk,
    }
}

/// A config lookup over `.env`, with per-test overrides.
pub fn lookup(overrides: &HashMap<&str, String>) -> impl Fn(&str) -> Option<String> + use<> {
    let mut map = base_env().clone();
    map.entry("S3_BUCKET".into())
        .or_insert_with(|| "unset".into());
    map.entry("SQS_QUEUE_URL".into())
        .or_insert_with(|| "unset".into());
    // The suite runs on the local provider unless a test points it at the fake server.
    map.remove("OPENAI_API_KEY");
    for (k, v) in overrides {
        map.insert(k.to_string(), v.clone());
    }
    move |k| map.get(k).cloned()
}

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
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let infra = create_infra().await;
    let mut env = options.env;
    env.insert("DATABASE_URL", infra.database_url.clone());
    env.insert("S3_BUCKET", infra.bucket.clone());
    env.insert("SQS_QUEUE_URL", infra.queue_url.clone());
    env.insert("DATABASE_MAX_CONNECTIONS", "5".into());
    env.insert("WORKER_WAIT_TIME_SECS", "1".into());
    if let Some(base_url) = options.fake {
        env.insert("OPENAI_API_KEY", "sk-fake".into());
        env.insert("OPENAI_BASE_URL", base_url);
        env.entry("EMBEDDING_DIMENSIONS")
            .or_insert_with(|| "384".into());
        env.entry("LLM_TIMEOUT_SECS").or_insert_with(|| "5".into());
    }
    let mut config = Config::from_lookup(lookup(&env)).expect("test config");
    config.port = 0;
    if let Some(tweak) = options.tweak {
        tweak(&mut config);
    }
    let app = Application::build(config, Role::All, false)
        .await
        .expect("building the app");
    let address = format!("http://127.0.0.1:{}", app.port().unwrap());
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let stopped = tokio::spawn(app.run(shutdown.clone()));
    let tenant_id = stolid::store::keys::ensure_tenant(&state.db, "acme")
        .await
        .unwrap();
    let api_key = stolid::store::keys::create_key(&state.db, tenant_id)
        .await
        .unwrap()
        .key;
    TestApp {
        address,
        state,
        infra,
        api_key,
        tenant_id,
        client: reqwest::Client::new(),
        shutdown,
        stopped,
    }
}

/// A fake OpenAI server and an app whose `openai` provider talks to it.
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

    /// Another tenant with its own key, for isolation tests.
    pub async fn new_tenant(&self, name: &str) -> String {
        let id = stolid::store::keys::ensure_tenant(&self.state.db, name)
            .await
            .unwrap();
        stolid::store::keys::create_key(&self.state.db, id)
            .await
            .unwrap()
            .key
    }

    /// Starts graceful shutdown and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.stopped)
            .await
            .expect("shutdown finished in time")?
    }
}

/// Parses a JSON error body and returns its code, checking the shape on the way.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("error bodies are JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"));
    assert!(
        body["error"]["message"].is_string(),
        "no error.message in {body}"
    );
    code.to_string()
}

//! Throwaway infrastructure for tests and benchmarks: a fresh database, bucket
//! and queue (with a dead-letter queue) on the local stack that `make infra`
//! describes in `.env`.

use std::collections::HashMap;
use std::sync::OnceLock;

use uuid::Uuid;

use stolid::config::Config;

/// Settings from `.env` (written by `make infra`), overridden by the real environment.
pub fn base_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = crate::repo_root().join(".env");
        let mut map: HashMap<String, String> =
            dotenvy::from_path_iter(path).map(|iter| iter.filter_map(Result::ok).collect()).unwrap_or_default();
        for key in ["DATABASE_URL", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            if let Ok(value) = std::env::var(key) {
                map.insert(key.to_string(), value);
            }
        }
        assert!(map.contains_key("DATABASE_URL"), "no DATABASE_URL: run `make infra` first");
        map
    })
}

/// Per-test infrastructure: a database, a bucket, a queue with a DLQ.
#[derive(Clone)]
pub struct Infra {
    pub database_url: String,
    pub bucket: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub sdk: aws_config::SdkConfig,
}

impl Infra {
    /// What a `stolid serve` child process ([`super::process::Proc`]) needs to
    /// run on this infrastructure; callers add their own settings.
    pub fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("S3_BUCKET", self.bucket.clone()),
            ("SQS_QUEUE_URL", self.queue_url.clone()),
            ("AWS_ENDPOINT_URL", base_env()["AWS_ENDPOINT_URL"].clone()),
        ]
    }

    /// Drops what [`create_infra`] made: the database, both queues, the bucket
    /// and its objects. For long runs (benchmarks) that make many; `make test`
    /// drops leftover databases itself.
    pub async fn remove(&self) -> anyhow::Result<()> {
        let (_, name) = self.database_url.rsplit_once('/').expect("a database name");
        let admin = sqlx::PgPool::connect(&base_env()["DATABASE_URL"]).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        for url in [&self.queue_url, &self.dlq_url] {
            sqs.delete_queue().queue_url(url).send().await?;
        }
        let s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&self.sdk).force_path_style(true).build());
        let mut pages = s3.list_objects_v2().bucket(&self.bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            for object in page?.contents() {
                if let Some(key) = object.key() {
                    s3.delete_object().bucket(&self.bucket).key(key).send().await?;
                }
            }
        }
        s3.delete_bucket().bucket(&self.bucket).send().await?;
        Ok(())
    }
}

/// Infrastructure an earlier run made and left (`make eval -- --keep`), by its names.
pub async fn existing_infra(database_url: String, bucket: String, queue_url: String, dlq_url: String) -> Infra {
    let config = Config::from_lookup(lookup(&HashMap::new())).expect("base config");
    let sdk = stolid::infra::aws::sdk_config(&config.aws).await;
    Infra { database_url, bucket, queue_url, dlq_url, sdk }
}

/// Redrive limit of test queues: a message is delivered this many times, then dead-lettered.
pub const MAX_RECEIVES: u32 = 3;

/// A test's own database, bucket and queues (`stolid_test_*`, which `make
/// test` drops before it runs).
pub async fn create_infra() -> Infra {
    create_infra_for("test").await
}

/// [`create_infra`] for a run of `purpose` (`bench`, `eval`, `chaos`): its
/// database is `stolid_<purpose>_*`, so a `make test` started meanwhile does
/// not drop it mid-run.
pub async fn create_infra_for(purpose: &str) -> Infra {
    let env = base_env();
    let admin_url = &env["DATABASE_URL"];
    let name = format!("stolid_{purpose}_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(admin_url).await.expect("connecting to the admin database");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("creating the test database");
    admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').expect("DATABASE_URL has a database name");
    let database_url = format!("{base}/{name}");

    let config = Config::from_lookup(lookup(&HashMap::new())).expect("base config");
    let sdk = stolid::infra::aws::sdk_config(&config.aws).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let suffix = Uuid::new_v4().simple().to_string();
    let bucket = format!("test-{}", &suffix[..20]);
    s3.create_bucket().bucket(&bucket).send().await.expect("creating the test bucket");
    let dlq_url = sqs.create_queue().queue_name(format!("test-{suffix}-dlq")).send().await.unwrap().queue_url.unwrap();
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
    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES}).to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("test-{suffix}"))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    Infra { database_url, bucket, queue_url, dlq_url, sdk }
}

/// A config lookup over `.env`, with per-test overrides.
pub fn lookup(overrides: &HashMap<&str, String>) -> impl Fn(&str) -> Option<String> + use<> {
    let mut map = base_env().clone();
    map.entry("S3_BUCKET".into()).or_insert_with(|| "unset".into());
    map.entry("SQS_QUEUE_URL".into()).or_insert_with(|| "unset".into());
    // The suite runs on the local provider unless a test points it at the fake server,
    // with hashed embeddings (cheap, exact) unless a test asks for the model.
    map.remove("OPENAI_API_KEY");
    map.remove("LOCAL_EMBEDDING_MODEL_DIR");
    for (k, v) in overrides {
        map.insert(k.to_string(), v.clone());
    }
    move |k| map.get(k).cloned()
}

/// The app running in this process on throwaway infrastructure, with one tenant and its key.
pub struct RunningApp {
    pub address: String,
    pub state: stolid::domain::state::AppState,
    pub infra: Infra,
    pub api_key: String,
    pub tenant_id: Uuid,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Builds the app on `infra` with `env` over `.env` (the infrastructure's own
/// settings filled in), lets `tweak` adjust the parsed config, serves it on a
/// free port, and creates `tenant` with a key.
pub async fn start_app(
    infra: Infra,
    mut env: HashMap<&'static str, String>,
    tweak: impl FnOnce(&mut Config),
    role: stolid::app::ProcessRole,
    tenant: &str,
) -> anyhow::Result<RunningApp> {
    env.insert("DATABASE_URL", infra.database_url.clone());
    env.insert("S3_BUCKET", infra.bucket.clone());
    env.insert("SQS_QUEUE_URL", infra.queue_url.clone());
    let mut config = Config::from_lookup(lookup(&env))?;
    config.port = 0;
    tweak(&mut config);
    let app = stolid::app::Application::build(config, role, false).await?;
    let address = format!("http://127.0.0.1:{}", app.port().expect("the API role listens"));
    let state = app.state().clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stopped = tokio::spawn(app.run(shutdown.clone()));
    let tenant_id = stolid::store::keys::ensure_tenant(&state.db, tenant).await?;
    let api_key = stolid::store::keys::create_key(&state.db, tenant_id).await?.key;
    Ok(RunningApp { address, state, infra, api_key, tenant_id, shutdown, stopped })
}

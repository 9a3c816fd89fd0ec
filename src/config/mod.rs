//! Typed configuration from environment variables (and `.env`, loaded by `main`).
//!
//! Every setting has one variable, documented in `docs/configuration.md` and declared once
//! in the `variables!` table below (name, type, default, check), from which the
//! reading and [`VARIABLES`] are generated. Parsing is done once at start and
//! fails with one line naming the variable, so a typo in a task definition
//! shows up as a clear crash, not as odd behaviour later.

pub mod pricing;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::config::pricing::{ModelPrice, PriceTable};

/// The variables, one line each: the field it fills, its type, its name, and
/// how it is read with its default. [`VARIABLES`] and the reading both come
/// from this table, so no variable is read without being listed; [`Config`]
/// is then assembled from what was read.
macro_rules! variables {
    ($($field:ident: $ty:ty = $var:literal, $read:expr;)*) => {
        /// Every variable stolid reads, so deployment files can be checked against it.
        pub const VARIABLES: &[&str] = &[$($var),*];

        /// The environment as read, before it is assembled into a [`Config`].
        struct Vars {
            $($field: $ty,)*
        }

        impl Vars {
            fn read(env: &Env) -> Result<Self, ConfigError> {
                Ok(Vars { $($field: ($read)(env, $var)?,)* })
            }
        }
    };
}

variables! {
    database_url: String = "DATABASE_URL", required;
    database_max_connections: u32 = "DATABASE_MAX_CONNECTIONS", positive(20);
    database_acquire_timeout_secs: f64 = "DATABASE_ACQUIRE_TIMEOUT_SECS", positive(2.0);
    database_statement_timeout_secs: f64 = "DATABASE_STATEMENT_TIMEOUT_SECS", positive(120.0);
    s3_bucket: String = "S3_BUCKET", required;
    sqs_queue_url: String = "SQS_QUEUE_URL", required;
    aws_timeout_secs: f64 = "AWS_TIMEOUT_SECS", positive(10.0);
    aws_endpoint_url: Option<String> = "AWS_ENDPOINT_URL", optional;
    aws_region: String = "AWS_REGION", text("us-east-1");
    aws_access_key_id: Option<String> = "AWS_ACCESS_KEY_ID", optional;
    aws_secret_access_key: Option<String> = "AWS_SECRET_ACCESS_KEY", optional;
    llm_provider: Option<String> = "LLM_PROVIDER", optional;
    openai_api_key: Option<String> = "OPENAI_API_KEY", optional;
    openai_base_url: String = "OPENAI_BASE_URL", text("https://api.openai.com/v1");
    chat_model: Option<String> = "CHAT_MODEL", optional;
    embedding_model: Option<String> = "EMBEDDING_MODEL", optional;
    embedding_dimensions: Option<usize> = "EMBEDDING_DIMENSIONS", maybe_number;
    local_embedding_model_dir: Option<String> = "LOCAL_EMBEDDING_MODEL_DIR", optional;
    llm_timeout_secs: u64 = "LLM_TIMEOUT_SECS", positive(120);
    embed_max_attempts: u32 = "EMBED_MAX_ATTEMPTS", positive(6);
    chat_max_attempts: u32 = "CHAT_MAX_ATTEMPTS", positive(3);
    model_prices: Option<String> = "MODEL_PRICES", optional;
    embed_requests_per_minute: u32 = "EMBED_REQUESTS_PER_MINUTE", positive(3_000);
    embed_tokens_per_minute: u32 = "EMBED_TOKENS_PER_MINUTE", positive(1_000_000);
    embed_max_in_flight: usize = "EMBED_MAX_IN_FLIGHT", positive(16);
    embed_max_batch_inputs: usize = "EMBED_MAX_BATCH_INPUTS", positive(2_048);
    embed_max_batch_tokens: usize = "EMBED_MAX_BATCH_TOKENS", positive(300_000);
    embed_max_input_tokens: usize = "EMBED_MAX_INPUT_TOKENS", positive(8_192);
    query_embedding_cache: usize = "QUERY_EMBEDDING_CACHE", number(1_024);
    budget_reservation_ttl_secs: f64 = "BUDGET_RESERVATION_TTL_SECS", positive(900.0);
    worker_pollers: usize = "WORKER_POLLERS", number(1);
    worker_concurrency: usize = "WORKER_CONCURRENCY", positive(32);
    worker_visibility_timeout_secs: u64 = "WORKER_VISIBILITY_TIMEOUT_SECS", positive(60);
    worker_wait_time_secs: u64 = "WORKER_WAIT_TIME_SECS", number(10);
    job_timeout_secs: f64 = "JOB_TIMEOUT_SECS", positive(600.0);
    sweep_interval_secs: f64 = "SWEEP_INTERVAL_SECS", number(60.0);
    sweep_stuck_after_secs: f64 = "SWEEP_STUCK_AFTER_SECS", positive(900.0);
    sweep_max_requeues: u32 = "SWEEP_MAX_REQUEUES", number(3);
    max_extracted_bytes: usize = "MAX_EXTRACTED_BYTES", positive(10 * 1024 * 1024);
    hnsw_ef_search: u32 = "HNSW_EF_SEARCH", positive(100);
    keyword_term_postings: i64 = "KEYWORD_TERM_POSTINGS", positive(200);
    chat_top_k: usize = "CHAT_TOP_K", positive(8);
    chat_context_tokens: usize = "CHAT_CONTEXT_TOKENS", positive(3_000);
    chat_history_tokens: usize = "CHAT_HISTORY_TOKENS", number(2_000);
    chat_max_answer_tokens: u32 = "CHAT_MAX_ANSWER_TOKENS", positive(700);
    retrieval_min_similarity: f64 = "RETRIEVAL_MIN_SIMILARITY", number(0.2);
    rerank_candidates: usize = "RERANK_CANDIDATES", number(20);
    aggregate_demotion: f64 = "AGGREGATE_DEMOTION", number(0.5);
    rerank_model: Option<String> = "RERANK_MODEL", optional;
    chunk_max_tokens: usize = "CHUNK_MAX_TOKENS", positive(400);
    chunk_overlap_tokens: usize = "CHUNK_OVERLAP_TOKENS", number(50);
    port: u16 = "PORT", number(8080);
    log_level: String = "LOG_LEVEL", text("info");
    shutdown_timeout_secs: u64 = "SHUTDOWN_TIMEOUT_SECS", positive(30);
    request_timeout_secs: u64 = "REQUEST_TIMEOUT_SECS", positive(120);
    max_body_bytes: usize = "MAX_BODY_BYTES", positive(50 * 1024 * 1024);
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("configuration: {var} is required but not set")]
    Missing { var: &'static str },
    #[error("configuration: {var}={value:?} is invalid: {reason}")]
    Invalid { var: &'static str, value: String, reason: String },
}

/// Which model backend the gateway talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenAI-compatible endpoint through async-openai.
    OpenAi,
    /// In-process, deterministic, offline: the default without an API key.
    Local,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Local => "local",
        }
    }
}

/// A cap of `limit` units per `window` (requests or tokens).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateCap {
    pub limit: u32,
    pub window: Duration,
}

impl RateCap {
    pub fn per_minute(limit: u32) -> Self {
        Self { limit, window: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone)]
pub struct EmbeddingLimits {
    pub requests: RateCap,
    pub tokens: RateCap,
    /// Calls allowed on the wire at once, across every worker of the process.
    pub max_in_flight: usize,
    /// Provider per-request limits (OpenAI: 2,048 inputs, 300,000 tokens, 8,192 per input).
    pub max_batch_inputs: usize,
    pub max_batch_tokens: usize,
    pub max_input_tokens: usize,
    /// Attempts per embedding request before a rate-limited or failing one gives up.
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub provider: ProviderKind,
    pub api_key: Option<String>,
    pub base_url: String,
    pub chat_model: String,
    pub embedding_model: String,
    pub embedding_dimensions: usize,
    pub request_timeout: Duration,
    /// Attempts per chat call: fewer than embeddings, since a person is waiting.
    pub chat_max_attempts: u32,
    pub prices: PriceTable,
    pub embedding_limits: EmbeddingLimits,
    /// What the local provider embeds with (ignored by other providers).
    pub local_embeddings: LocalEmbeddings,
    /// How many query embeddings (by model and text) a process keeps for reuse; zero keeps none.
    pub query_embedding_cache: usize,
    /// How long a budget reservation counts if its task dies mid-call: longer
    /// than any call or index job runs.
    pub budget_reservation_ttl: Duration,
}

/// The local provider's embeddings: a sentence-embedding model when its files
/// are there, otherwise the hashed lexical vectors, with the reason (shown by
/// `/readyz` and logged at start).
#[derive(Debug, Clone, PartialEq)]
pub enum LocalEmbeddings {
    Model(std::path::PathBuf),
    Hashed { reason: String },
}

#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// Set for local emulators (moto); the SDK then uses path-style S3 addressing.
    pub endpoint_url: Option<String>,
    pub region: String,
    /// Per-attempt deadline of an S3 or SQS call (the whole call, with retries,
    /// gets 2.5 times as long; an SQS long poll gets its wait on top): a service
    /// that accepts and never answers must not hold a request or a job for minutes.
    pub call_timeout: Duration,
    /// Static credentials (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`), e.g. for
    /// emulators; without them the SDK's default chain (ECS task role) applies.
    pub credentials: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Concurrent SQS receive loops.
    pub pollers: usize,
    /// Jobs processed at once per process; bounds memory however deep the queue is.
    pub concurrency: usize,
    /// Visibility timeout set on received messages and extended by the heartbeat.
    pub visibility_timeout: Duration,
    pub wait_time: Duration,
    /// A job running longer than this is stopped and retried (the last attempt
    /// marks its document failed with the reason).
    pub job_timeout: Duration,
    /// Extracted text above this many bytes fails the document with a clear
    /// reason instead of chunking and embedding without bound.
    pub max_extracted_bytes: usize,
    pub sweeper: SweeperConfig,
}

/// The sweeper: finds documents no job will ever finish (see `worker::sweeper`).
#[derive(Debug, Clone)]
pub struct SweeperConfig {
    /// How often the fleet looks for stuck documents (one task per period); zero turns it off.
    pub interval: Duration,
    /// A document `queued` or `processing` and untouched this long is stuck.
    /// Longer than `JOB_TIMEOUT_SECS`, so a job still running is never taken for stuck.
    pub stuck_after: Duration,
    /// Re-sends before a stuck document is failed for good.
    pub max_requeues: u32,
}

/// Retrieval-augmented chat: how much to retrieve and how to budget the prompt.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub top_k: usize,
    pub context_tokens: usize,
    /// Conversation history kept in the prompt (oldest turns go first).
    pub history_tokens: usize,
    pub max_answer_tokens: u32,
    /// Vector hits below this cosine similarity are not context.
    pub min_similarity: f64,
}

/// Reranking of retrieved candidates by the chat model (see `retrieval::rerank`).
#[derive(Debug, Clone)]
pub struct RerankConfig {
    /// How many of the best fused candidates the model reorders; zero turns reranking off.
    pub candidates: usize,
    /// A model for the reranking call (a small, cheap one will do); the chat model by default.
    pub model: Option<String>,
}

/// How documents are cut into chunks (cl100k tokens).
#[derive(Debug, Clone, Copy)]
pub struct ChunkSettings {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkSettings {
    fn default() -> Self {
        Self { max_tokens: 400, overlap_tokens: 50 }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection before answering 503.
    pub database_acquire_timeout: Duration,
    /// Postgres ends any statement of the pool that runs longer (`statement_timeout`),
    /// so no statement, however hostile its request, outlives the longest request.
    pub database_statement_timeout: Duration,
    pub s3_bucket: String,
    pub sqs_queue_url: String,
    pub aws: AwsConfig,
    pub llm: LlmConfig,
    pub worker: WorkerConfig,
    pub chunking: ChunkSettings,
    /// HNSW candidate list size per search: recall against latency.
    pub hnsw_ef_search: u32,
    /// Best postings read per query word by a tenant-wide keyword search: recall against latency.
    pub keyword_term_postings: i64,
    pub chat: ChatConfig,
    pub rerank: RerankConfig,
    /// What an aggregate document's passages' scores are multiplied by in
    /// search (0 to 1; 1 turns the demotion off): they rank below the pages they repeat.
    pub aggregate_demotion: f64,
    pub port: u16,
    pub log_level: String,
    pub shutdown_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let vars = Vars::read(&env)?;
        let api_key = vars.openai_api_key;
        let provider = match vars.llm_provider.as_deref() {
            None if api_key.is_some() => ProviderKind::OpenAi,
            None => ProviderKind::Local,
            Some("openai") => ProviderKind::OpenAi,
            Some("local") => ProviderKind::Local,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "LLM_PROVIDER",
                    value: other.into(),
                    reason: "expected `openai` or `local`".into(),
                });
            }
        };
        let local_embeddings = match vars.local_embedding_model_dir.filter(|dir| !dir.is_empty()) {
            None => LocalEmbeddings::Hashed { reason: "LOCAL_EMBEDDING_MODEL_DIR is not set".into() },
            Some(dir) if std::path::Path::new(&dir).join("model.safetensors").is_file() => {
                LocalEmbeddings::Model(dir.into())
            }
            Some(dir) => LocalEmbeddings::Hashed {
                reason: format!("LOCAL_EMBEDDING_MODEL_DIR={dir} holds no model.safetensors (`make infra` fetches it)"),
            },
        };
        // A model's vectors are stored under its directory's name (all-MiniLM-L6-v2).
        let local_embed = match &local_embeddings {
            LocalEmbeddings::Model(dir) => dir.file_name().map_or("local-model".into(), |n| n.to_string_lossy().into()),
            LocalEmbeddings::Hashed { .. } => "local-hash-384".to_string(),
        };
        let (default_chat, default_embed, default_dims) = match provider {
            ProviderKind::OpenAi => ("gpt-4o-mini", "text-embedding-3-small", 1536),
            ProviderKind::Local => ("local-extractive", local_embed.as_str(), 384),
        };
        let embedding_dimensions = vars.embedding_dimensions.unwrap_or(default_dims);
        if !(1..=16_000).contains(&embedding_dimensions) {
            return Err(env.invalid("EMBEDDING_DIMENSIONS", "must be between 1 and 16000 (pgvector's limit)"));
        }
        let mut prices = PriceTable::default();
        if let Some(raw) = vars.model_prices {
            let overrides: HashMap<String, ModelPrice> = serde_json::from_str(&raw).map_err(|e| {
                ConfigError::Invalid {
                    var: "MODEL_PRICES",
                    value: raw.clone(),
                    reason: format!("expected JSON like {{\"model\": {{\"input\": 0.15, \"output\": 0.6}}}} (USD per 1M tokens): {e}"),
                }
            })?;
            prices.extend(overrides);
        }
        if provider == ProviderKind::OpenAi && api_key.is_none() {
            return Err(ConfigError::Missing { var: "OPENAI_API_KEY" });
        }
        let llm = LlmConfig {
            provider,
            api_key,
            base_url: vars.openai_base_url,
            chat_model: vars.chat_model.unwrap_or_else(|| default_chat.into()),
            embedding_model: vars.embedding_model.unwrap_or_else(|| default_embed.into()),
            embedding_dimensions,
            request_timeout: Duration::from_secs(vars.llm_timeout_secs),
            chat_max_attempts: vars.chat_max_attempts,
            prices,
            embedding_limits: EmbeddingLimits {
                requests: RateCap::per_minute(vars.embed_requests_per_minute),
                tokens: RateCap::per_minute(vars.embed_tokens_per_minute),
                max_in_flight: vars.embed_max_in_flight,
                max_batch_inputs: vars.embed_max_batch_inputs,
                max_batch_tokens: vars.embed_max_batch_tokens,
                max_input_tokens: vars.embed_max_input_tokens,
                max_attempts: vars.embed_max_attempts,
            },
            local_embeddings: match provider {
                ProviderKind::Local => local_embeddings,
                ProviderKind::OpenAi => LocalEmbeddings::Hashed { reason: "the provider is not local".into() },
            },
            query_embedding_cache: vars.query_embedding_cache,
            budget_reservation_ttl: Duration::from_secs_f64(vars.budget_reservation_ttl_secs),
        };
        let config = Config {
            database_url: vars.database_url,
            database_max_connections: vars.database_max_connections,
            database_acquire_timeout: Duration::from_secs_f64(vars.database_acquire_timeout_secs),
            database_statement_timeout: Duration::from_secs_f64(vars.database_statement_timeout_secs),
            s3_bucket: vars.s3_bucket,
            sqs_queue_url: vars.sqs_queue_url,
            aws: AwsConfig {
                endpoint_url: vars.aws_endpoint_url,
                region: vars.aws_region,
                call_timeout: Duration::from_secs_f64(vars.aws_timeout_secs),
                credentials: vars.aws_access_key_id.zip(vars.aws_secret_access_key),
            },
            llm,
            worker: WorkerConfig {
                pollers: vars.worker_pollers,
                concurrency: vars.worker_concurrency,
                visibility_timeout: Duration::from_secs(vars.worker_visibility_timeout_secs),
                wait_time: Duration::from_secs(vars.worker_wait_time_secs),
                job_timeout: Duration::from_secs_f64(vars.job_timeout_secs),
                max_extracted_bytes: vars.max_extracted_bytes,
                sweeper: SweeperConfig {
                    interval: Duration::from_secs_f64(vars.sweep_interval_secs),
                    stuck_after: Duration::from_secs_f64(vars.sweep_stuck_after_secs),
                    max_requeues: vars.sweep_max_requeues,
                },
            },
            chunking: ChunkSettings { max_tokens: vars.chunk_max_tokens, overlap_tokens: vars.chunk_overlap_tokens },
            hnsw_ef_search: vars.hnsw_ef_search,
            keyword_term_postings: vars.keyword_term_postings,
            chat: ChatConfig {
                top_k: vars.chat_top_k,
                context_tokens: vars.chat_context_tokens,
                history_tokens: vars.chat_history_tokens,
                max_answer_tokens: vars.chat_max_answer_tokens,
                min_similarity: vars.retrieval_min_similarity,
            },
            rerank: RerankConfig { candidates: vars.rerank_candidates, model: vars.rerank_model },
            aggregate_demotion: vars.aggregate_demotion,
            port: vars.port,
            log_level: vars.log_level,
            shutdown_timeout: Duration::from_secs(vars.shutdown_timeout_secs),
            request_timeout: Duration::from_secs(vars.request_timeout_secs),
            max_body_bytes: vars.max_body_bytes,
        };
        if config.aggregate_demotion > 1.0 {
            return Err(env.invalid("AGGREGATE_DEMOTION", "must be between 0 and 1 (1 turns the demotion off)"));
        }
        if config.worker.sweeper.stuck_after <= config.worker.job_timeout {
            return Err(env.invalid("SWEEP_STUCK_AFTER_SECS", "must be longer than JOB_TIMEOUT_SECS"));
        }
        Ok(config)
    }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn optional(&self, var: &str) -> Option<String> {
        (self.0)(var)
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.optional(var).filter(|s| !s.is_empty()).unwrap_or_else(|| default.to_string())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var).filter(|s| !s.is_empty()).ok_or(ConfigError::Missing { var })
    }

    fn invalid(&self, var: &'static str, reason: &str) -> ConfigError {
        ConfigError::Invalid { var, value: self.optional(var).unwrap_or_default(), reason: reason.into() }
    }

    fn parse_optional<T>(&self, var: &'static str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(var).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(raw) => raw.trim().parse().map(Some).map_err(|e: T::Err| ConfigError::Invalid {
                var,
                value: raw.clone(),
                reason: e.to_string(),
            }),
        }
    }

    fn parse<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.parse_optional(var)?.unwrap_or(default))
    }

    fn parse_positive<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(var, default)?;
        if value <= T::default() {
            return Err(self.invalid(var, "must be greater than zero"));
        }
        Ok(value)
    }
}

/// How a variable of the table is read: required, optional, text or a number
/// with its default, a number that must be positive. Empty counts as unset.
fn required(env: &Env, var: &'static str) -> Result<String, ConfigError> {
    env.required(var)
}

fn optional(env: &Env, var: &'static str) -> Result<Option<String>, ConfigError> {
    Ok(env.optional(var).filter(|s| !s.is_empty()))
}

fn text(default: &'static str) -> impl Fn(&Env, &'static str) -> Result<String, ConfigError> {
    move |env, var| Ok(env.string(var, default))
}

fn number<T>(default: T) -> impl Fn(&Env, &'static str) -> Result<T, ConfigError>
where
    T: FromStr + Copy,
    T::Err: std::fmt::Display,
{
    move |env, var| env.parse(var, default)
}

fn maybe_number<T>(env: &Env, var: &'static str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    env.parse_optional(var)
}

fn positive<T>(default: T) -> impl Fn(&Env, &'static str) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Default + Copy,
    T::Err: std::fmt::Display,
{
    move |env, var| env.parse_positive(var, default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const BASE: [(&str, &str); 3] = [
        ("DATABASE_URL", "postgres://localhost/stolid"),
        ("S3_BUCKET", "b"),
        ("SQS_QUEUE_URL", "http://localhost:4566/000000000000/q"),
    ];

    #[test]
    fn the_variable_list_is_exactly_what_the_config_reads() {
        let read = std::sync::Mutex::new(std::collections::BTreeSet::new());
        let base = lookup(&BASE);
        Config::from_lookup(|k| {
            read.lock().unwrap().insert(k.to_string());
            base(k)
        })
        .unwrap();
        let read = read.into_inner().unwrap();
        let listed: std::collections::BTreeSet<String> = VARIABLES.iter().map(|v| v.to_string()).collect();
        assert_eq!(read, listed);
    }

    #[test]
    fn defaults_to_the_local_provider_without_an_api_key() {
        let config = Config::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(config.llm.provider, ProviderKind::Local);
        assert_eq!(config.port, 8080);
        assert_eq!(config.llm.embedding_dimensions, 384);
    }

    #[test]
    fn the_local_provider_embeds_with_the_model_whose_weights_are_there_and_says_why_not() {
        let config = Config::from_lookup(lookup(&BASE)).unwrap();
        assert!(
            matches!(&config.llm.local_embeddings, LocalEmbeddings::Hashed { reason } if reason.contains("not set"))
        );
        assert_eq!(config.llm.embedding_model, "local-hash-384");

        let dir = std::env::temp_dir().join(format!("stolid-model-{}", uuid::Uuid::new_v4().simple()));
        let model_dir = dir.join("all-MiniLM-L6-v2");
        std::fs::create_dir_all(&model_dir).unwrap();
        let mut pairs = BASE.to_vec();
        let model_dir_text = model_dir.to_string_lossy().to_string();
        pairs.push(("LOCAL_EMBEDDING_MODEL_DIR", &model_dir_text));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert!(
            matches!(&config.llm.local_embeddings, LocalEmbeddings::Hashed { reason } if reason.contains("no model.safetensors")),
            "{:?}",
            config.llm.local_embeddings
        );

        std::fs::write(model_dir.join("model.safetensors"), b"").unwrap();
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(config.llm.local_embeddings, LocalEmbeddings::Model(model_dir.clone()));
        assert_eq!(config.llm.embedding_model, "all-MiniLM-L6-v2", "vectors are stored under the model's name");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_api_key_selects_the_openai_provider_and_its_models() {
        let mut pairs = BASE.to_vec();
        pairs.push(("OPENAI_API_KEY", "sk-test"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(config.llm.provider, ProviderKind::OpenAi);
        assert_eq!(config.llm.embedding_model, "text-embedding-3-small");
        assert_eq!(config.llm.embedding_dimensions, 1536);
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let err = Config::from_lookup(lookup(&BASE[1..])).unwrap_err();
        assert_eq!(err, ConfigError::Missing { var: "DATABASE_URL" });
        assert_eq!(err.to_string(), "configuration: DATABASE_URL is required but not set");
    }

    #[test]
    fn an_unparsable_number_names_the_variable_and_value() {
        let mut pairs = BASE.to_vec();
        pairs.push(("PORT", "eighty"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err().to_string();
        assert!(err.contains("PORT=\"eighty\" is invalid"), "{err}");
    }

    #[test]
    fn zero_where_a_positive_number_is_needed_is_rejected() {
        let mut pairs = BASE.to_vec();
        pairs.push(("EMBED_MAX_IN_FLIGHT", "0"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err().to_string();
        assert!(err.contains("EMBED_MAX_IN_FLIGHT"), "{err}");
        assert!(err.contains("greater than zero"), "{err}");
    }

    #[test]
    fn forcing_openai_without_a_key_is_an_error() {
        let mut pairs = BASE.to_vec();
        pairs.push(("LLM_PROVIDER", "openai"));
        assert_eq!(Config::from_lookup(lookup(&pairs)).unwrap_err(), ConfigError::Missing { var: "OPENAI_API_KEY" });
    }

    #[test]
    fn malformed_price_overrides_are_rejected_with_an_example() {
        let mut pairs = BASE.to_vec();
        pairs.push(("MODEL_PRICES", "cheap"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err().to_string();
        assert!(err.contains("MODEL_PRICES"), "{err}");
    }

    #[test]
    fn price_overrides_extend_the_default_table() {
        let mut pairs = BASE.to_vec();
        pairs.push(("MODEL_PRICES", r#"{"my-model": {"input": 1.0, "output": 2.0}}"#));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(config.llm.prices.cost_usd("my-model", 1_000_000, 500_000), 2.0);
        assert!(config.llm.prices.cost_usd("gpt-4o-mini", 1_000_000, 0) > 0.0);
    }
}

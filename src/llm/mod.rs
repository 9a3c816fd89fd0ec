//! The model gateway: every chat and embedding call of stolid passes through here.
//!
//! It owns the three things every call needs and no caller should re-implement:
//! - the provider (`openai` over any OpenAI-compatible endpoint, or `local`);
//! - for embeddings, batching under the provider's per-request limits and the one
//!   shared [`limiter::EmbedLimiter`], with 429 handling that slows everyone;
//! - accounting: each attempt becomes a [`accounting::usage::ModelCall`] (tokens,
//!   latency, cost, request id, outcome), logged and written to Postgres off the
//!   request path, and a budgeted tenant's call reserves its cost first.
//!
//! The rooms: this file holds the [`Gateway`] and what it is built from;
//! `types` its vocabulary (call context, messages, requests, errors); `embed` the
//! embedding paths (bulk through [`batcher`], queries through `query_groups`, the
//! query cache); `chat` plain and streamed chat; `retrying` the one retry policy
//! and the record of each attempt; [`providers`] the two providers; [`limiter`]
//! the fleet's cap; [`accounting`] usage records and budgets, with the
//! SQL of their tables.

pub mod accounting;
pub mod batcher;
pub mod limiter;
pub mod providers;
mod query_groups;

mod chat;
mod embed;
mod retrying;
mod types;

pub use chat::StreamItem;
pub use types::*;

use retrying::{Attempt, Paced, Pacing};

use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::config::{LlmConfig, LocalEmbeddings, ProviderKind};
use accounting::budget;
use accounting::usage::UsageRecorder;
use batcher::BatchQueue;
use limiter::EmbedLimiter;
use limiter::cap_wait;
use providers::{Provider, openai, sentence_model};

pub struct Gateway {
    provider: Provider,
    config: LlmConfig,
    limiter: Arc<EmbedLimiter>,
    batches: BatchQueue,
    query_groups: query_groups::QueryGroups,
    recorder: UsageRecorder,
    budgets: budget::Budgets,
    /// Set when the provider answered `insufficient_quota`; reported by `/readyz`.
    quota_exhausted: Mutex<Option<String>>,
    /// Recent query embeddings by (model, dimensions, text): a repeated question
    /// (a retry, a popular query, suggest as one types) costs no model call.
    /// Per process: a miss only costs the call it would have made anyway.
    query_embeddings: Option<Mutex<lru::LruCache<QueryKey, Vec<f32>>>>,
}

type QueryKey = (String, usize, String);

impl Gateway {
    /// `db` holds the fleet's embedding cap (see [`limiter`]).
    pub fn new(config: LlmConfig, recorder: UsageRecorder, db: sqlx::PgPool) -> anyhow::Result<Self> {
        let provider = match config.provider {
            ProviderKind::OpenAi => Provider::OpenAi(openai::OpenAiProvider::new(&config)?),
            ProviderKind::Local => Provider::Local(match &config.local_embeddings {
                LocalEmbeddings::Model(dir) => {
                    let model = sentence_model::SentenceModel::load(dir)
                        .with_context(|| format!("LOCAL_EMBEDDING_MODEL_DIR={}", dir.display()))?;
                    anyhow::ensure!(
                        model.dimensions() == config.embedding_dimensions,
                        "EMBEDDING_DIMENSIONS={} does not match the local model's {} dimensions",
                        config.embedding_dimensions,
                        model.dimensions()
                    );
                    tracing::info!(llm.model = %config.embedding_model, dir = %dir.display(), "local embedding model loaded");
                    Some(Arc::new(model))
                }
                LocalEmbeddings::Hashed { reason } => {
                    tracing::warn!(reason = %reason, "no local embedding model: embedding with hashed word features (lexical, not semantic)");
                    None
                }
            }),
        };
        let limiter = EmbedLimiter::new(db.clone(), limit_key(&config), &config.embedding_limits);
        Ok(Self {
            budgets: budget::Budgets::new(db, recorder.clone(), config.budget_reservation_ttl),
            limiter: Arc::new(limiter),
            batches: BatchQueue::new(),
            query_groups: Default::default(),
            provider,
            recorder,
            quota_exhausted: Mutex::new(None),
            query_embeddings: std::num::NonZeroUsize::new(config.query_embedding_cache)
                .map(|entries| Mutex::new(lru::LruCache::new(entries))),
            config,
        })
    }

    pub fn provider_name(&self) -> &'static str {
        self.config.provider.as_str()
    }
    /// Whether the chat model is a language model, which query rewriting and
    /// reranking need. The local provider's stand-ins for them (which the fake
    /// server answers with) are no substitute: its rewrite (the follow-up plus
    /// the previous question's words) retrieved worse than the follow-up alone
    /// in `make eval`, and reordering passages by word overlap would only undo
    /// the semantic ranking of its embedding model.
    pub fn has_language_model(&self) -> bool {
        matches!(self.provider, Provider::OpenAi(_))
    }
    /// For the local provider: why it embeds with hashed word features instead of a
    /// model (no model directory configured, or no weights in it). `None` otherwise.
    pub fn hashed_embeddings_reason(&self) -> Option<&str> {
        match (&self.provider, &self.config.local_embeddings) {
            (Provider::Local(None), LocalEmbeddings::Hashed { reason }) => Some(reason),
            _ => None,
        }
    }
    pub fn chat_model(&self) -> &str {
        &self.config.chat_model
    }
    pub fn embedding_model(&self) -> &str {
        &self.config.embedding_model
    }
    pub fn embedding_dimensions(&self) -> usize {
        self.config.embedding_dimensions
    }
    pub fn limiter(&self) -> &EmbedLimiter {
        &self.limiter
    }
    pub fn recorder(&self) -> &UsageRecorder {
        &self.recorder
    }
    pub fn max_input_tokens(&self) -> usize {
        self.config.embedding_limits.max_input_tokens
    }
    pub fn quota_exhausted(&self) -> Option<String> {
        self.quota_exhausted.lock().unwrap().clone()
    }
}

/// The fleet's cap belongs to a provider account: the endpoint and the key
/// (hashed: the secret is not stored). Every task configured alike shares it.
fn limit_key(config: &LlmConfig) -> String {
    use sha2::Digest;
    match config.provider {
        ProviderKind::Local => "local".to_string(),
        ProviderKind::OpenAi => {
            let account = format!("{}\n{}", config.base_url, config.api_key.as_deref().unwrap_or_default());
            format!("openai:{}", &hex::encode(sha2::Sha256::digest(account.as_bytes()))[..16])
        }
    }
}

/// Shared handle used across the app.
pub type SharedGateway = Arc<Gateway>;

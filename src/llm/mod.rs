//! The model gateway: every chat and embedding call of stolid passes through here.
//!
//! It owns the three things every call needs and no caller should re-implement:
//! - the provider (`openai` over any OpenAI-compatible endpoint, or `local`);
//! - for embeddings, batching under the provider's per-request limits and the one
//!   shared [`limiter::EmbedLimiter`], with 429 handling that slows everyone;
//! - accounting: each attempt becomes a [`usage::ModelCall`] (tokens, latency,
//!   cost, request id, outcome), logged and written to Postgres off the request path.

pub mod accounting;
pub mod batcher;
pub mod limiter;
pub mod providers;
mod query_groups;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{LlmConfig, LocalEmbeddings, ProviderKind};
use crate::infra::tokens::count_tokens;
use accounting::budget;
use accounting::usage::{ModelCall, Operation, Outcome, UsageRecorder};
use batcher::{BatchLimits, BatchQueue, Pending, answer_all};
use limiter::cap_wait;
use limiter::{EmbedLimiter, Lane};
use providers::{Provider, openai, sentence_model};

/// Who a call is made for; carried into every usage record.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub tenant_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub conversation_id: Option<Uuid>,
    /// What caused the call, e.g. `chat`, `search`, `worker.index`.
    pub endpoint: &'static str,
    /// Whether the tenant has spend limits, so each call must reserve first ([`budget`]).
    pub budgeted: bool,
    /// Adds up what every call made with this context (and its clones) cost,
    /// so a chat turn can report all of its calls: the rewrite, the query
    /// embedding, the rerank and the answer, not the answer alone.
    pub meter: Option<std::sync::Arc<Meter>>,
    /// Clocks how long bulk embeddings made with this context wait in line
    /// for the fleet's cap, so a job's deadline can leave that time out.
    pub cap_wait: Option<Arc<cap_wait::CapWait>>,
}

impl CallContext {
    /// This context with a fresh meter; read it with [`CallContext::metered_usage`].
    pub fn metered(self) -> Self {
        Self { meter: Some(Default::default()), ..self }
    }

    /// What the calls made with this context have cost so far (zero without a meter).
    pub fn metered_usage(&self) -> TokenUsage {
        self.meter.as_ref().map_or_else(TokenUsage::default, |m| m.0.lock().expect("meter lock").clone())
    }
}

/// Tokens and cost of the calls made under one [`CallContext`], failed and cancelled ones included.
#[derive(Debug, Default)]
pub struct Meter(std::sync::Mutex<TokenUsage>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model produced it.
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: vec![], tool_call_id: None }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    pub fn tool(call_id: &str, content: impl Into<String>) -> Self {
        Self { tool_call_id: Some(call_id.to_string()), ..Self::new(Role::Tool, content) }
    }
}

/// A function the model may call; `parameters` is a JSON Schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// What the caller wants done. Remote models read it from the prompt; the
    /// local provider, which cannot, is told here.
    pub task: Task,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Overrides the configured chat model.
    pub model: Option<String>,
}

impl ChatRequest {
    /// Prompt tokens as providers count them (a few per message for the role
    /// markup), for providers that report none.
    pub fn estimated_input_tokens(&self) -> usize {
        self.messages.iter().map(|m| count_tokens(&m.content) + 4).sum()
    }
}

/// The kind of answer a chat request asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Task {
    /// Answer the last user message from the context (or call a tool).
    #[default]
    Answer,
    /// Summarize the document in the system prompt.
    Summarize,
    /// Suggest follow-up questions the passages in the system prompt answer.
    Suggest,
    /// Rewrite the last user message, which may lean on the conversation before
    /// it ("and how do I undo it?"), into a standalone search query.
    RewriteQuery,
    /// Name the numbered passages that answer the query, best first.
    Rerank,
}

/// What a provider produced; token counts are added by the gateway.
#[derive(Debug, Clone, Default)]
pub struct ChatOutput {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct TokenUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cost_usd: f64,
}

#[derive(Debug, Clone)]
pub struct ChatResponse {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub model: String,
    pub provider: &'static str,
    pub usage: TokenUsage,
    pub latency: Duration,
}

#[derive(Debug, Clone)]
pub struct Embeddings {
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    pub model: String,
    pub input_tokens: u32,
    /// Provider requests made, retries included.
    pub requests: u32,
}

/// How a provider call failed; decides whether and how the gateway retries.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("rate limited: {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// 429 `insufficient_quota`: retrying cannot help until someone pays.
    #[error("quota exhausted: {0}")]
    QuotaExhausted(String),
    /// 5xx, timeouts, connection failures: worth retrying with backoff.
    #[error("transient provider error: {0}")]
    Transient(String),
    /// 400, 413, 422: the provider will not take this input (bad request, refused content).
    #[error("the provider refused the request: {0}")]
    Refused(String),
    #[error("provider error: {0}")]
    Fatal(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("the model provider is still rate limiting after {attempts} attempts")]
    RateLimited { attempts: u32 },
    #[error("the model provider's quota is exhausted: {0}")]
    QuotaExhausted(String),
    #[error("input {index} has {tokens} tokens, over the per-input limit of {max}")]
    InputTooLong { index: usize, tokens: usize, max: usize },
    #[error("the model provider failed: {0}")]
    Provider(String),
    /// The provider refused the input itself; sending it again cannot help.
    #[error("the model provider refused the input: {0}")]
    Refused(String),
    /// The fleet's rate limiter or the tenant's budget could not be reached:
    /// nothing is sent without them.
    #[error("the model is temporarily unavailable; try again shortly")]
    Unavailable(String),
    /// The tenant's hard spend limit leaves no room for the call; nothing was sent.
    #[error("{0}")]
    BudgetExceeded(Box<budget::Exceeded>),
}

impl From<limiter::LimiterUnavailable> for LlmError {
    fn from(err: limiter::LimiterUnavailable) -> Self {
        LlmError::Unavailable(err.to_string())
    }
}

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

    /// Embeds `inputs` with the configured model, for bulk work (indexing):
    /// they join the process's batch queue with every other job's, and come
    /// back in order.
    pub async fn embed(self: &Arc<Self>, ctx: &CallContext, inputs: &[String]) -> Result<Embeddings, LlmError> {
        let tokens = inputs.iter().map(|t| count_tokens(t)).collect();
        self.embed_counted(ctx, inputs, tokens).await
    }

    /// Holds room in the tenant's budget for embedding `tokens` with the
    /// configured model, if the tenant has limits, until the guard is dropped:
    /// for work cut into several calls (a large document's slices) that must
    /// fit as a whole, whose calls then run with `budgeted: false`.
    pub async fn reserve_embedding(
        &self,
        ctx: &CallContext,
        tokens: usize,
    ) -> Result<Option<budget::Reservation>, LlmError> {
        self.reserve(ctx, || self.embedding_estimate(&self.config.embedding_model, tokens)).await
    }

    /// [`Self::embed`] for inputs whose token counts the caller has already
    /// (`tokens[i]` is `count_tokens(&inputs[i])`).
    pub async fn embed_counted(
        self: &Arc<Self>,
        ctx: &CallContext,
        inputs: &[String],
        tokens: Vec<usize>,
    ) -> Result<Embeddings, LlmError> {
        assert_eq!(tokens.len(), inputs.len(), "one token count per input");
        let limits = &self.config.embedding_limits;
        if let Some((index, &n)) = tokens.iter().enumerate().find(|(_, n)| **n > limits.max_input_tokens) {
            return Err(LlmError::InputTooLong { index, tokens: n, max: limits.max_input_tokens });
        }
        let _reservation =
            self.reserve(ctx, || self.embedding_estimate(&self.config.embedding_model, tokens.iter().sum())).await?;
        let queue = self.batches.sender(self, self.batch_limits());
        let now = tokio::time::Instant::now();
        let caller = batcher::next_caller();
        let stopped = || LlmError::Unavailable("the embedding queue has stopped".into());
        let mut replies = Vec::with_capacity(inputs.len());
        for (text, &tokens) in inputs.iter().zip(&tokens) {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let ticket = ctx.cap_wait.as_ref().map(|wait| wait.enter()).unwrap_or_default();
            let item = Pending { caller, ctx: ctx.clone(), text: text.clone(), tokens, enqueued: now, ticket, reply };
            queue.send(item).map_err(|_| stopped())?;
            replies.push(rx);
        }
        let mut out = Embeddings {
            vectors: Vec::with_capacity(inputs.len()),
            model: self.config.embedding_model.clone(),
            input_tokens: tokens.iter().sum::<usize>() as u32,
            requests: 0,
        };
        let mut requests_seen = std::collections::HashSet::new();
        for rx in replies {
            let embedded = rx.await.map_err(|_| stopped())??;
            if requests_seen.insert(embedded.request) {
                out.requests += embedded.attempts;
            }
            out.vectors.push(embedded.vector);
        }
        Ok(out)
    }

    /// Embeds one query (search, chat) at once, ahead of bulk work, with
    /// `model`: while documents are re-indexed to a new model, queries are
    /// embedded with the old one too, to search the old vectors. A query
    /// embedded recently is answered from the process's cache, with no call;
    /// queries that find every in-flight slot taken share requests
    /// ([`query_groups`]).
    pub async fn embed_query(
        self: &Arc<Self>,
        ctx: &CallContext,
        model: &str,
        dims: usize,
        text: &str,
    ) -> Result<Vec<f32>, LlmError> {
        let key = (model.to_string(), dims, text.to_string());
        if let Some(cache) = &self.query_embeddings
            && let Some(vector) = cache.lock().unwrap().get(&key)
        {
            return Ok(vector.clone());
        }
        let asked = tokio::time::Instant::now();
        let max = self.config.embedding_limits.max_input_tokens;
        let tokens = count_tokens(text);
        if tokens > max {
            return Err(LlmError::InputTooLong { index: 0, tokens, max });
        }
        let _reservation = self.reserve(ctx, || self.embedding_estimate(model, tokens)).await?;
        let vector = match self.limiter.try_slot(Lane::Query) {
            Some(_slot) => {
                let shares = [(ctx.clone(), tokens)];
                let (mut vectors, _) =
                    self.embed_request(&shares, model, dims, &[text.to_string()], tokens, Paced::Query, asked).await?;
                vectors.swap_remove(0)
            }
            None => query_groups::embed_in_group(self, model, dims, ctx, text, tokens).await?,
        };
        if let Some(cache) = &self.query_embeddings {
            cache.lock().unwrap().put(key, vector.clone());
        }
        Ok(vector)
    }

    /// How full one embedding request may be.
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits { inputs: self.config.embedding_limits.max_batch_inputs, tokens: self.max_tokens_per_request() }
    }

    /// The most tokens one embedding request carries: the provider's limit, or
    /// the fleet's token burst if smaller.
    fn max_tokens_per_request(&self) -> usize {
        self.config.embedding_limits.max_batch_tokens.min(self.limiter.max_tokens_per_call())
    }

    /// Sends one cut batch and answers each input's caller. If the provider
    /// refuses the batch, each caller's inputs are sent again on their own: an
    /// input it rejects must fail only the job it came from, not its batch-mates.
    async fn send_bulk(&self, batch: Vec<Pending>, request: u64) {
        let callers: std::collections::HashSet<u64> = batch.iter().map(|p| p.caller).collect();
        let batch = match self.send_batch(batch, request, Paced::AlreadyOnce).await {
            Err((LlmError::Refused(_) | LlmError::Provider(_), batch)) if callers.len() > 1 => batch,
            Err((err, batch)) => return answer_all(batch, &err),
            Ok(()) => return,
        };
        let mut groups: Vec<Vec<Pending>> = Vec::new();
        for item in batch {
            match groups.iter_mut().find(|g| g[0].caller == item.caller) {
                Some(group) => group.push(item),
                None => groups.push(vec![item]),
            }
        }
        for group in groups {
            if let Err((err, group)) = self.send_batch(group, request, Paced::Bulk).await {
                answer_all(group, &err);
            }
        }
    }

    /// One request for `batch`; on failure the inputs come back unanswered.
    async fn send_batch(
        &self,
        batch: Vec<Pending>,
        request: u64,
        paced: Paced,
    ) -> Result<(), (LlmError, Vec<Pending>)> {
        let (model, dims) = (self.config.embedding_model.clone(), self.config.embedding_dimensions);
        let tokens: usize = batch.iter().map(|p| p.tokens).sum();
        let mut shares: Vec<(CallContext, usize)> = Vec::new();
        for item in &batch {
            match shares.iter_mut().find(|(ctx, _)| same_caller(ctx, &item.ctx)) {
                Some((_, n)) => *n += item.tokens,
                None => shares.push((item.ctx.clone(), item.tokens)),
            }
        }
        let texts: Vec<String> = batch.iter().map(|p| p.text.clone()).collect();
        let waiting_since = batch.iter().map(|p| p.enqueued).min().unwrap_or_else(tokio::time::Instant::now);
        match self.embed_request(&shares, &model, dims, &texts, tokens, paced, waiting_since).await {
            Ok((vectors, attempts)) => {
                for (item, vector) in batch.into_iter().zip(vectors) {
                    let _ = item.reply.send(Ok(batcher::Embedded { vector, request, attempts }));
                }
                Ok(())
            }
            Err(err) => Err((err, batch)),
        }
    }

    /// One provider request (with retries) for inputs that fit its limits.
    /// Success is recorded once per caller in `shares`, with that caller's
    /// part of the provider's token count; failed attempts once, for the first.
    /// `waiting_since`: when its inputs were asked for, so the record says how
    /// long the limiter held them.
    #[allow(clippy::too_many_arguments)]
    async fn embed_request(
        &self,
        shares: &[(CallContext, usize)],
        model: &str,
        dims: usize,
        inputs: &[String],
        estimated_tokens: usize,
        paced: Paced,
        waiting_since: tokio::time::Instant,
    ) -> Result<(Vec<Vec<f32>>, u32), LlmError> {
        let queued = waiting_since.elapsed();
        let attempts = self.config.embedding_limits.max_attempts;
        let (lane, first_done) = match paced {
            Paced::Query => (Lane::Query, false),
            Paced::Bulk => (Lane::Bulk, false),
            Paced::AlreadyOnce => (Lane::Bulk, true),
        };
        let pacing = Pacing::SharedLimiter { tokens: estimated_tokens, lane, first_done };
        let ((vectors, input_tokens), latency, tries, paced_for) = self
            .retrying(&shares[0].0, Operation::Embed, model, attempts, pacing, || {
                self.provider.embed(model, dims, inputs, estimated_tokens)
            })
            .await?;
        let mut left = input_tokens;
        for (i, (ctx, share)) in shares.iter().enumerate() {
            let part = if i + 1 == shares.len() {
                left
            } else {
                (input_tokens as f64 * *share as f64 / estimated_tokens.max(1) as f64).round() as u32
            };
            let part = part.min(left);
            left -= part;
            let attempt =
                Attempt { wait: queued + paced_for, ..Attempt::succeeded(Operation::Embed, model, latency, part, 0) };
            self.record(ctx, attempt);
        }
        if let Some(bad) = vectors.iter().find(|v| v.len() != dims) {
            return Err(LlmError::Provider(format!(
                "model {model} returned {} dimensions but EMBEDDING_DIMENSIONS is {dims}",
                bad.len()
            )));
        }
        Ok((vectors, tries))
    }

    /// A chat completion with the configured (or requested) model.
    pub async fn chat(&self, ctx: &CallContext, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let model = request.model.clone().unwrap_or_else(|| self.config.chat_model.clone());
        let _reservation = self.reserve(ctx, || self.chat_estimate(&model, request)).await?;
        let attempts = self.config.chat_max_attempts;
        let ((output, input_tokens, output_tokens), latency, _, _) = self
            .retrying(ctx, Operation::Chat, &model, attempts, Pacing::Own, || self.provider.chat(&model, request))
            .await?;
        let cost_usd =
            self.record(ctx, Attempt::succeeded(Operation::Chat, &model, latency, input_tokens, output_tokens));
        Ok(ChatResponse {
            content: output.content,
            tool_calls: output.tool_calls,
            model,
            provider: self.provider_name(),
            usage: TokenUsage { input_tokens, output_tokens, cost_usd },
            latency,
        })
    }

    /// A streamed chat completion: `Delta`s, then one `Done` with usage. The
    /// call is recorded when the stream ends, or, if the consumer drops it (a
    /// client that went away), as cancelled with the tokens produced so far;
    /// dropping it also drops the upstream request, which stops the model.
    pub async fn chat_stream(
        self: &Arc<Self>,
        ctx: CallContext,
        request: ChatRequest,
    ) -> Result<futures::stream::BoxStream<'static, Result<StreamItem, LlmError>>, LlmError> {
        let model = request.model.clone().unwrap_or_else(|| self.config.chat_model.clone());
        let input_estimate = request.estimated_input_tokens() as u32;
        let reservation = self.reserve(&ctx, || self.chat_estimate(&model, &request)).await?;
        let started = Instant::now();
        // Opening the stream is retried like any call; once it flows, a failure ends it.
        let attempts = self.config.chat_max_attempts;
        let (upstream, _, _, _) = self
            .retrying(&ctx, Operation::Chat, &model, attempts, Pacing::Own, || {
                self.provider.chat_stream(&model, &request)
            })
            .await?;
        let guard = StreamGuard {
            gateway: self.clone(),
            ctx,
            model,
            started,
            input_estimate,
            text: String::new(),
            usage: None,
            finished: false,
            _reservation: reservation,
        };
        Ok(futures::stream::unfold((upstream, guard), |(mut upstream, mut guard)| async move {
            if guard.finished {
                return None;
            }
            loop {
                match upstream.next().await {
                    Some(Ok(delta)) => {
                        if delta.usage.is_some() {
                            guard.usage = delta.usage;
                        }
                        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                            guard.text.push_str(&text);
                            return Some((Ok(StreamItem::Delta(text)), (upstream, guard)));
                        }
                    }
                    Some(Err(err)) => {
                        guard.finished = true;
                        let latency = guard.started.elapsed();
                        guard.gateway.record(&guard.ctx, Attempt::failed(Operation::Chat, &guard.model, latency, &err));
                        return Some((Err(LlmError::Provider(err.to_string())), (upstream, guard)));
                    }
                    None => {
                        guard.finished = true;
                        let response = guard.complete();
                        return Some((Ok(StreamItem::Done(response)), (upstream, guard)));
                    }
                }
            }
        })
        .boxed())
    }

    /// Runs `call` until it succeeds or retrying cannot help, recording each
    /// failed attempt; returns the value, the successful attempt's latency,
    /// the attempts made and the time spent waiting for the shared limiter.
    /// The one retry policy of every model call: a 429 waits
    /// (for embeddings inside the shared limiter, so every caller waits), 5xx
    /// and timeouts back off with jitter, quota and other errors give up at once.
    async fn retrying<T, F, Fut>(
        &self,
        ctx: &CallContext,
        operation: Operation,
        model: &str,
        max_attempts: u32,
        pacing: Pacing,
        mut call: F,
    ) -> Result<(T, Duration, u32, Duration), LlmError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut paced_for = Duration::ZERO;
        for attempt in 0..max_attempts {
            if let Pacing::SharedLimiter { tokens, lane, first_done } = pacing
                && !(first_done && attempt == 0)
            {
                let pacing_started = Instant::now();
                self.limiter.pace(tokens, lane).await?;
                paced_for += pacing_started.elapsed();
            }
            let started = Instant::now();
            let result = call().await;
            let latency = started.elapsed();
            let err = match result {
                Ok(value) => return Ok((value, latency, attempt + 1, paced_for)),
                Err(err) => err,
            };
            self.record(ctx, Attempt::failed(operation, model, latency, &err));
            match err {
                ProviderError::RateLimited { retry_after, .. } => match pacing {
                    // The next `pace` waits out the pause, with the whole fleet.
                    Pacing::SharedLimiter { .. } => {
                        self.limiter.on_throttled(retry_after, attempt).await;
                    }
                    Pacing::Own => {
                        let wait = retry_after.unwrap_or_else(|| crate::infra::retry::backoff(attempt));
                        tokio::time::sleep(crate::infra::retry::at_least(wait)).await
                    }
                },
                ProviderError::Transient(_) => tokio::time::sleep(crate::infra::retry::jittered_backoff(attempt)).await,
                other => return Err(self.give_up(other)),
            }
        }
        Err(LlmError::RateLimited { attempts: max_attempts })
    }

    fn give_up(&self, err: ProviderError) -> LlmError {
        match err {
            ProviderError::QuotaExhausted(message) => {
                tracing::error!(error = %message, "model provider quota exhausted; calls will fail until it is raised");
                *self.quota_exhausted.lock().unwrap() = Some(message.clone());
                LlmError::QuotaExhausted(message)
            }
            ProviderError::Refused(message) => LlmError::Refused(message),
            other => LlmError::Provider(other.to_string()),
        }
    }

    /// Holds room in the tenant's budget for one call, if the tenant has limits
    /// (`estimate` is only worked out then).
    async fn reserve(
        &self,
        ctx: &CallContext,
        estimate: impl FnOnce() -> budget::Estimate,
    ) -> Result<Option<budget::Reservation>, LlmError> {
        match ctx.tenant_id {
            Some(tenant_id) if ctx.budgeted => Ok(Some(self.budgets.reserve(tenant_id, estimate()).await?)),
            _ => Ok(None),
        }
    }

    /// The most a chat call can cost: its input as counted, with a margin, and
    /// its output at `max_tokens`.
    fn chat_estimate(&self, model: &str, request: &ChatRequest) -> budget::Estimate {
        let tools: usize = request
            .tools
            .iter()
            .map(|t| count_tokens(&t.name) + count_tokens(&t.description) + count_tokens(&t.parameters.to_string()))
            .sum();
        let input = ((request.estimated_input_tokens() + tools) as f64 * budget::ESTIMATE_MARGIN).ceil() as u32;
        let output = request.max_tokens.unwrap_or(budget::DEFAULT_OUTPUT_RESERVE);
        budget::Estimate {
            usd: self.config.prices.cost_usd(model, input, output),
            tokens: u64::from(input) + u64::from(output),
        }
    }

    fn embedding_estimate(&self, model: &str, tokens: usize) -> budget::Estimate {
        let input = (tokens as f64 * budget::ESTIMATE_MARGIN).ceil() as u32;
        budget::Estimate { usd: self.config.prices.cost_usd(model, input, 0), tokens: u64::from(input) }
    }

    /// Records one attempt (a `model_calls` row and an EMF log line); returns its cost.
    fn record(&self, ctx: &CallContext, attempt: Attempt<'_>) -> f64 {
        let cost_usd = self.config.prices.cost_usd(attempt.model, attempt.input_tokens, attempt.output_tokens);
        self.recorder.record(ModelCall {
            id: Uuid::now_v7(),
            tenant_id: ctx.tenant_id,
            request_id: ctx.request_id.clone(),
            conversation_id: ctx.conversation_id,
            endpoint: ctx.endpoint.to_string(),
            provider: self.provider_name(),
            model: attempt.model.to_string(),
            operation: attempt.operation,
            input_tokens: attempt.input_tokens,
            output_tokens: attempt.output_tokens,
            latency_ms: attempt.latency.as_secs_f64() * 1000.0,
            wait_ms: attempt.wait.as_secs_f64() * 1000.0,
            cost_usd,
            outcome: attempt.outcome,
            error: attempt.error,
            created_at: chrono::Utc::now(),
        });
        if let Some(meter) = &ctx.meter {
            let mut total = meter.0.lock().expect("meter lock");
            total.input_tokens += attempt.input_tokens;
            total.output_tokens += attempt.output_tokens;
            total.cost_usd += cost_usd;
        }
        cost_usd
    }
}

/// How a call's attempts are paced.
#[derive(Debug, Clone, Copy)]
enum Pacing {
    /// Embeddings: through the fleet's limiter, whose 429 pause every caller
    /// waits out; `first_done` when the caller paced the first attempt itself.
    SharedLimiter { tokens: usize, lane: Lane, first_done: bool },
    /// Chat: each call waits out its own 429s.
    Own,
}

/// Who paces an embedding request's first attempt.
#[derive(Debug, Clone, Copy)]
enum Paced {
    /// The request itself, in the query lane.
    Query,
    /// The request itself, in the bulk lane.
    Bulk,
    /// The batch dispatcher already did (retries pace themselves).
    AlreadyOnce,
}

/// One provider attempt, as it is recorded.
struct Attempt<'a> {
    operation: Operation,
    model: &'a str,
    input_tokens: u32,
    output_tokens: u32,
    latency: Duration,
    /// Time the shared limiter held the call before it was sent.
    wait: Duration,
    outcome: Outcome,
    error: Option<String>,
}

impl<'a> Attempt<'a> {
    fn succeeded(
        operation: Operation,
        model: &'a str,
        latency: Duration,
        input_tokens: u32,
        output_tokens: u32,
    ) -> Self {
        Self {
            operation,
            model,
            input_tokens,
            output_tokens,
            latency,
            wait: Duration::ZERO,
            outcome: Outcome::Ok,
            error: None,
        }
    }

    fn failed(operation: Operation, model: &'a str, latency: Duration, err: &ProviderError) -> Self {
        let outcome = match err {
            ProviderError::RateLimited { .. } => Outcome::RateLimited,
            _ => Outcome::Error,
        };
        let error = Some(err.to_string());
        Self { operation, model, input_tokens: 0, output_tokens: 0, latency, wait: Duration::ZERO, outcome, error }
    }
}

/// One item of a streamed answer.
#[derive(Debug)]
pub enum StreamItem {
    Delta(String),
    Done(ChatResponse),
}

/// Records a streamed call exactly once, however the stream ends.
struct StreamGuard {
    gateway: Arc<Gateway>,
    ctx: CallContext,
    model: String,
    started: Instant,
    input_estimate: u32,
    text: String,
    /// Reported by the provider in the last chunk, when it does.
    usage: Option<(u32, u32)>,
    finished: bool,
    /// Released after the call is recorded (fields drop after `drop` runs).
    _reservation: Option<budget::Reservation>,
}

impl StreamGuard {
    fn tokens(&self) -> (u32, u32) {
        self.usage.unwrap_or((self.input_estimate, count_tokens(&self.text) as u32))
    }

    fn complete(&mut self) -> ChatResponse {
        let (input_tokens, output_tokens) = self.tokens();
        let latency = self.started.elapsed();
        let attempt = Attempt::succeeded(Operation::Chat, &self.model, latency, input_tokens, output_tokens);
        let cost_usd = self.gateway.record(&self.ctx, attempt);
        ChatResponse {
            content: std::mem::take(&mut self.text),
            tool_calls: vec![],
            model: self.model.clone(),
            provider: self.gateway.provider_name(),
            usage: TokenUsage { input_tokens, output_tokens, cost_usd },
            latency,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            let (input_tokens, output_tokens) = self.tokens();
            let latency = self.started.elapsed();
            let attempt = Attempt {
                outcome: Outcome::Error,
                error: Some("cancelled: the client went away".to_string()),
                ..Attempt::succeeded(Operation::Chat, &self.model, latency, input_tokens, output_tokens)
            };
            self.gateway.record(&self.ctx, attempt);
        }
    }
}

/// Usage rows of one batch are per caller: the same tenant, request and purpose.
fn same_caller(a: &CallContext, b: &CallContext) -> bool {
    a.tenant_id == b.tenant_id
        && a.request_id == b.request_id
        && a.conversation_id == b.conversation_id
        && a.endpoint == b.endpoint
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

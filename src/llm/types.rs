//! The gateway's vocabulary: who a call is for, chat messages and requests,
//! what comes back, and what can go wrong.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::accounting::budget;
use super::limiter::{self, cap_wait};
use crate::infra::tokens::count_tokens;

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
pub struct Meter(pub(super) std::sync::Mutex<TokenUsage>);

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

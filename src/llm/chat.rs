//! Chat completions through the gateway, plain and streamed: a stream is
//! recorded exactly once however it ends (`StreamGuard`).

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use super::accounting::budget;
use super::accounting::usage::{Operation, Outcome};
use super::{Attempt, CallContext, ChatRequest, ChatResponse, Gateway, LlmError, Pacing, TokenUsage};
use crate::infra::tokens::count_tokens;

impl Gateway {
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

    /// The most a chat call can cost: its input as counted, with a margin, and
    /// its output at `max_tokens`.
    pub(super) fn chat_estimate(&self, model: &str, request: &ChatRequest) -> budget::Estimate {
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
}

/// One item of a streamed answer.
#[derive(Debug)]
pub enum StreamItem {
    Delta(String),
    Done(ChatResponse),
}

/// Records a streamed call exactly once, however the stream ends.
pub(super) struct StreamGuard {
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
    pub(super) fn tokens(&self) -> (u32, u32) {
        self.usage.unwrap_or((self.input_estimate, count_tokens(&self.text) as u32))
    }

    pub(super) fn complete(&mut self) -> ChatResponse {
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

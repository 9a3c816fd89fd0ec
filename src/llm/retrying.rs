//! The one retry policy of every model call, the budget reservation before it
//! and the record of each attempt after it.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::accounting::budget;
use super::accounting::usage::{ModelCall, Operation, Outcome};
use super::limiter::Lane;
use super::{CallContext, Gateway, LlmError, ProviderError};

impl Gateway {
    /// Runs `call` until it succeeds or retrying cannot help, recording each
    /// failed attempt; returns the value, the successful attempt's latency,
    /// the attempts made and the time spent waiting for the shared limiter.
    /// The one retry policy of every model call: a 429 waits
    /// (for embeddings inside the shared limiter, so every caller waits), 5xx
    /// and timeouts back off with jitter, quota and other errors give up at once.
    pub(super) async fn retrying<T, F, Fut>(
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

    pub(super) fn give_up(&self, err: ProviderError) -> LlmError {
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
    pub(super) async fn reserve(
        &self,
        ctx: &CallContext,
        estimate: impl FnOnce() -> budget::Estimate,
    ) -> Result<Option<budget::Reservation>, LlmError> {
        match ctx.tenant_id {
            Some(tenant_id) if ctx.budgeted => Ok(Some(self.budgets.reserve(tenant_id, estimate()).await?)),
            _ => Ok(None),
        }
    }

    /// Records one attempt (a `model_calls` row and an EMF log line); returns its cost.
    pub(super) fn record(&self, ctx: &CallContext, attempt: Attempt<'_>) -> f64 {
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
pub(super) enum Pacing {
    /// Embeddings: through the fleet's limiter, whose 429 pause every caller
    /// waits out; `first_done` when the caller paced the first attempt itself.
    SharedLimiter { tokens: usize, lane: Lane, first_done: bool },
    /// Chat: each call waits out its own 429s.
    Own,
}

/// Who paces an embedding request's first attempt.
#[derive(Debug, Clone, Copy)]
pub(super) enum Paced {
    /// The request itself, in the query lane.
    Query,
    /// The request itself, in the bulk lane.
    Bulk,
    /// The batch dispatcher already did (retries pace themselves).
    AlreadyOnce,
}

/// One provider attempt, as it is recorded.
pub(super) struct Attempt<'a> {
    pub(super) operation: Operation,
    pub(super) model: &'a str,
    pub(super) input_tokens: u32,
    pub(super) output_tokens: u32,
    pub(super) latency: Duration,
    /// Time the shared limiter held the call before it was sent.
    pub(super) wait: Duration,
    pub(super) outcome: Outcome,
    pub(super) error: Option<String>,
}

impl<'a> Attempt<'a> {
    pub(super) fn succeeded(
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

    pub(super) fn failed(operation: Operation, model: &'a str, latency: Duration, err: &ProviderError) -> Self {
        let outcome = match err {
            ProviderError::RateLimited { .. } => Outcome::RateLimited,
            _ => Outcome::Error,
        };
        let error = Some(err.to_string());
        Self { operation, model, input_tokens: 0, output_tokens: 0, latency, wait: Duration::ZERO, outcome, error }
    }
}

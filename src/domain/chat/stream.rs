//! Streaming chat: the same turn as [`super::respond`], as a stream of
//! [`TurnEvent`]s: deltas as the model writes, then the whole [`ChatReply`]
//! (citations, usage) once the turn is stored, or an error. HTTP handlers map
//! them to their wire format. If the client disconnects, the stream is dropped,
//! which drops the upstream model request: the model stops and the call is
//! recorded as cancelled.

use futures::stream::{BoxStream, StreamExt};

use super::{ChatInput, ChatReply, NOT_FOUND, Prepared};
use crate::domain::error::{DomainError, Result};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::llm::{LlmError, StreamItem, TokenUsage};

pub enum TurnEvent {
    Delta(String),
    Done(Box<ChatReply>),
    /// The turn failed after the stream started; the HTTP layer words it.
    Error(DomainError),
}

struct Turn {
    state: AppState,
    tenant: Tenant,
    question: String,
    prepared: Option<Prepared>,
    upstream: BoxStream<'static, std::result::Result<StreamItem, LlmError>>,
}

pub async fn respond(state: AppState, tenant: Tenant, input: ChatInput) -> Result<BoxStream<'static, TurnEvent>> {
    let prepared = super::prepare(&state, &tenant, &input).await?;
    let upstream = if prepared.prompt.passages.is_empty() {
        // Nothing relevant: say so, without a model call.
        let model = state.gateway.chat_model().to_string();
        let done = crate::llm::ChatResponse {
            content: NOT_FOUND.to_string(),
            tool_calls: vec![],
            model,
            provider: state.gateway.provider_name(),
            usage: TokenUsage { input_tokens: 0, output_tokens: 0, cost_usd: 0.0 },
            latency: std::time::Duration::ZERO,
        };
        futures::stream::iter([Ok(StreamItem::Delta(NOT_FOUND.to_string())), Ok(StreamItem::Done(done))]).boxed()
    } else {
        state.gateway.chat_stream(prepared.ctx.clone(), prepared.request.clone()).await?
    };
    let turn = Turn { state, tenant, question: input.message, prepared: Some(prepared), upstream };
    Ok(futures::stream::unfold(turn, |mut turn| async move {
        // The turn ends after its `done` or `error` event.
        turn.prepared.as_ref()?;
        let next = tokio::select! {
            biased;
            next = turn.upstream.next() => next,
            _ = turn.state.streams_end.cancelled() => {
                // Dropping the upstream stops the model and records the call.
                turn.prepared = None;
                turn.upstream = futures::stream::empty().boxed();
                return Some((TurnEvent::Error(DomainError::shutting_down()), turn));
            }
        };
        match next {
            Some(Ok(StreamItem::Delta(text))) => Some((TurnEvent::Delta(text), turn)),
            Some(Ok(StreamItem::Done(response))) => {
                let mut prepared = turn.prepared.take().expect("checked above");
                prepared.stopwatch.model(response.latency);
                let reply = super::finish(
                    &turn.state,
                    &turn.tenant,
                    &turn.question,
                    prepared,
                    response.content,
                    response.model,
                )
                .await;
                let item = match reply {
                    Ok(reply) => TurnEvent::Done(Box::new(reply)),
                    Err(err) => TurnEvent::Error(err),
                };
                Some((item, turn))
            }
            Some(Err(err)) => {
                turn.prepared = None;
                Some((TurnEvent::Error(err.into()), turn))
            }
            None => None,
        }
    })
    .boxed())
}

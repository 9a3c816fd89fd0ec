//! The one place that knows which provider answers: each call is dispatched
//! here once, and each provider's code lives in its own module (`openai`,
//! `local`). The gateway above sees one interface and owns retries and records.

pub mod local;
pub mod openai;
pub mod sentence_model;

use futures::StreamExt;
use futures::stream::BoxStream;

use std::sync::Arc;

use crate::llm::{ChatOutput, ChatRequest, ProviderError};
use openai::{OpenAiProvider, StreamDelta};
use sentence_model::SentenceModel;

#[allow(clippy::large_enum_variant)] // one per process, never moved around
pub enum Provider {
    OpenAi(OpenAiProvider),
    /// In process; embeds with the sentence model when one is loaded, else hashed vectors.
    Local(Option<Arc<SentenceModel>>),
}

impl Provider {
    /// Vectors in input order, and the input tokens the provider counted
    /// (`estimated_tokens` where it counts none).
    pub async fn embed(
        &self,
        model: &str,
        dims: usize,
        inputs: &[String],
        estimated_tokens: usize,
    ) -> Result<(Vec<Vec<f32>>, u32), ProviderError> {
        match self {
            Provider::OpenAi(p) => p.embed(model, dims, inputs).await,
            Provider::Local(None) => {
                Ok((inputs.iter().map(|t| local::embed(t, dims)).collect(), estimated_tokens as u32))
            }
            Provider::Local(Some(model)) => {
                // CPU-bound: on the blocking pool, so the runtime keeps serving requests.
                let (model, inputs) = (model.clone(), inputs.to_vec());
                let vectors = tokio::task::spawn_blocking(move || model.embed(&inputs))
                    .await
                    .map_err(|e| ProviderError::Fatal(format!("the local embedding model stopped: {e}")))?
                    .map_err(|e| ProviderError::Fatal(format!("the local embedding model failed: {e:#}")))?;
                Ok((vectors, estimated_tokens as u32))
            }
        }
    }

    /// The answer, with input and output tokens.
    pub async fn chat(&self, model: &str, request: &ChatRequest) -> Result<(ChatOutput, u32, u32), ProviderError> {
        match self {
            Provider::OpenAi(p) => p.chat(model, request).await,
            Provider::Local(_) => Ok(local::chat_counted(request)),
        }
    }

    /// A streamed answer: content deltas, usage in the last one when the provider reports it.
    pub async fn chat_stream(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<StreamDelta, ProviderError>>, ProviderError> {
        match self {
            Provider::OpenAi(p) => p.chat_stream(model, request).await,
            Provider::Local(_) => {
                let words: Vec<Result<StreamDelta, ProviderError>> = local::chat(request)
                    .content
                    .split_inclusive(' ')
                    .map(|w| Ok(StreamDelta { content: Some(w.to_string()), usage: None }))
                    .collect();
                Ok(futures::stream::iter(words).boxed())
            }
        }
    }
}

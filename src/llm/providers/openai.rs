//! The `openai` provider: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
//! ...) through async-openai, with our own wire types ("bring your own types")
//! so that servers returning slightly different shapes still work.
//!
//! async-openai's built-in retry is replaced by a plain HTTP service that turns
//! a 429 into a typed error carrying `Retry-After`: the gateway, not the client,
//! decides how to wait, because one throttled call must slow every caller.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::LlmConfig;
use crate::llm::{ChatOutput, ChatRequest, ProviderError, Role, ToolCall};

pub struct OpenAiProvider {
    client: Client<OpenAIConfig>,
}

/// A 429 as the HTTP layer saw it, before async-openai could drop its headers.
#[derive(Debug, thiserror::Error)]
#[error("429 from provider: {message}")]
struct Throttled {
    retry_after: Option<Duration>,
    quota_exhausted: bool,
    message: String,
}

impl OpenAiProvider {
    pub fn new(config: &LlmConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            let http = http.clone();
            async move {
                let request = factory.build().await?;
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                    return Ok(response);
                }
                let retry_after = retry_after(response.headers());
                let body = response.text().await.unwrap_or_default();
                let quota_exhausted = body.contains("insufficient_quota");
                Err(OpenAIError::Boxed(Box::new(Throttled { retry_after, quota_exhausted, message: body })))
            }
        });
        let openai = OpenAIConfig::new()
            .with_api_base(config.base_url.trim_end_matches('/'))
            .with_api_key(config.api_key.clone().unwrap_or_default());
        Ok(Self { client: Client::with_config(openai).with_http_service(service) })
    }

    pub async fn embed(
        &self,
        model: &str,
        dims: usize,
        inputs: &[String],
    ) -> Result<(Vec<Vec<f32>>, u32), ProviderError> {
        // Base64 is a quarter of the bytes of decimal floats and needs no number
        // parsing. OpenAI's own SDKs ask for it by default, so compatible
        // servers accept it; one that answers floats anyway is read as well.
        let mut request = json!({ "model": model, "input": inputs, "encoding_format": "base64" });
        // Only the text-embedding-3 family accepts `dimensions`; other servers may reject it.
        if model.starts_with("text-embedding-3") {
            request["dimensions"] = json!(dims);
        }
        let response: EmbeddingResponse = self.client.embeddings().create_byot(request).await.map_err(classify)?;
        let mut data = response.data;
        data.sort_by_key(|d| d.index);
        if data.len() != inputs.len() {
            return Err(ProviderError::Fatal(format!("asked for {} embeddings, got {}", inputs.len(), data.len())));
        }
        let tokens = response.usage.map_or(0, |u| u.prompt_tokens);
        let vectors = data.into_iter().map(|d| d.embedding.into_floats()).collect::<Result<_, _>>()?;
        Ok((vectors, tokens))
    }

    pub async fn chat(&self, model: &str, request: &ChatRequest) -> Result<(ChatOutput, u32, u32), ProviderError> {
        let body = chat_body(model, request, false);
        let response: ChatResponse = self.client.chat().create_byot(body).await.map_err(classify)?;
        let choice = response
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Fatal("response has no choices".into()))?;
        let usage = response.usage.unwrap_or_default();
        let output = ChatOutput {
            content: choice.message.content.unwrap_or_default(),
            tool_calls: choice
                .message
                .tool_calls
                .into_iter()
                .map(|c| ToolCall { id: c.id, name: c.function.name, arguments: c.function.arguments })
                .collect(),
        };
        Ok((output, usage.prompt_tokens, usage.completion_tokens))
    }
}

impl OpenAiProvider {
    /// Starts a streamed completion: content deltas, and token usage in the final chunk.
    pub async fn chat_stream(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<futures::stream::BoxStream<'static, Result<StreamDelta, ProviderError>>, ProviderError> {
        use futures::StreamExt;
        let body = chat_body(model, request, true);
        let stream = self.client.chat().create_stream_byot::<Value, Value>(body).await.map_err(classify)?;
        Ok(stream
            .map(|item| {
                let chunk = item.map_err(classify)?;
                let content = chunk["choices"][0]["delta"]["content"].as_str().map(str::to_string);
                let usage = chunk.get("usage").filter(|u| u.is_object()).map(|u| {
                    (
                        u["prompt_tokens"].as_u64().unwrap_or(0) as u32,
                        u["completion_tokens"].as_u64().unwrap_or(0) as u32,
                    )
                });
                Ok(StreamDelta { content, usage })
            })
            .boxed())
    }
}

/// One chunk of a streamed completion.
#[derive(Debug, Default)]
pub struct StreamDelta {
    pub content: Option<String>,
    /// (input, output) tokens, in the last chunk when the server reports them.
    pub usage: Option<(u32, u32)>,
}

/// The Chat Completions request body for our message types.
pub fn chat_body(model: &str, request: &ChatRequest, stream: bool) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let mut message = json!({ "role": m.role, "content": m.content });
            if !m.tool_calls.is_empty() {
                message["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect();
            }
            if m.role == Role::Tool {
                message["tool_call_id"] = json!(m.tool_call_id);
            }
            message
        })
        .collect();
    let mut body = json!({ "model": model, "messages": messages, "stream": stream });
    if stream {
        body["stream_options"] = json!({ "include_usage": true });
    }
    if let Some(max_tokens) = request.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
    }
    body
}

/// `Retry-After` in seconds, or OpenAI's `retry-after-ms`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
    header("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| header("retry-after").map(Duration::from_secs_f64))
        .filter(|d| *d <= Duration::from_secs(300))
}

fn classify(err: OpenAIError) -> ProviderError {
    match err {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<Throttled>() {
            Ok(t) if t.quota_exhausted => ProviderError::QuotaExhausted(t.message),
            Ok(t) => ProviderError::RateLimited { retry_after: t.retry_after, message: t.message },
            Err(other) => ProviderError::Transient(other.to_string()),
        },
        OpenAIError::ApiError(api) if api.status_code.is_server_error() => ProviderError::Transient(api.to_string()),
        // About the request's content; 401, 403 and 404 are about our configuration.
        OpenAIError::ApiError(api) if [400, 413, 422].contains(&api.status_code.as_u16()) => {
            ProviderError::Refused(api.to_string())
        }
        OpenAIError::ApiError(api) => ProviderError::Fatal(api.to_string()),
        OpenAIError::Reqwest(e) => ProviderError::Transient(e.to_string()),
        other => ProviderError::Fatal(other.to_string()),
    }
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingData>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct EmbeddingData {
    #[serde(default)]
    index: usize,
    embedding: WireEmbedding,
}

/// An embedding as `encoding_format: base64` sends it (little-endian f32s),
/// or as a plain array from a server that ignores the format.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireEmbedding {
    Floats(Vec<f32>),
    Base64(String),
}

impl WireEmbedding {
    fn into_floats(self) -> Result<Vec<f32>, ProviderError> {
        use base64::Engine;
        match self {
            WireEmbedding::Floats(floats) => Ok(floats),
            WireEmbedding::Base64(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| ProviderError::Fatal(format!("embedding is not valid base64: {e}")))?;
                if bytes.len() % 4 != 0 {
                    return Err(ProviderError::Fatal(format!("base64 embedding of {} bytes is not f32s", bytes.len())));
                }
                Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u32,
    #[serde(default)]
    pub completion_tokens: u32,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
}

#[derive(Deserialize)]
struct ResponseMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    arguments: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_prefers_milliseconds_and_ignores_absurd_values() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut absurd = reqwest::header::HeaderMap::new();
        absurd.insert("retry-after", "86400".parse().unwrap());
        assert_eq!(retry_after(&absurd), None);
    }

    #[test]
    fn embeddings_are_read_as_base64_or_as_floats() {
        let floats = [0.25f32, -1.5, 3.0e-7];
        let encoded: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, encoded);
        let body = format!(
            r#"{{"data":[{{"index":1,"embedding":[0.5,0.75]}},{{"index":0,"embedding":"{encoded}"}}],"usage":null}}"#
        );
        let response: EmbeddingResponse = serde_json::from_str(&body).unwrap();
        let vectors: Vec<Vec<f32>> = response.data.into_iter().map(|d| d.embedding.into_floats().unwrap()).collect();
        assert_eq!(vectors, vec![vec![0.5, 0.75], floats.to_vec()]);
        let truncated: EmbeddingData = serde_json::from_str(r#"{"embedding":"AAAA"}"#).unwrap();
        assert!(truncated.embedding.into_floats().is_err(), "3 bytes are not an f32");
    }
}

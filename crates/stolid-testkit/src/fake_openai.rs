//! A fake OpenAI-compatible server for tests and benchmarks: the only mock in
//! stolid's test suite, and it sits behind real HTTP.
//!
//! - `POST /v1/embeddings` and `POST /v1/chat/completions` (plain, streaming
//!   and tool calls), deterministic, with token usage in every response. Chat
//!   content comes from the local provider's extractive logic, so answers cite
//!   the passages they were given.
//! - An embedding request with an input containing [`POISON`] is refused (400),
//!   as a provider refuses an input it will not embed.
//! - Configurable latency; injected faults for the next requests (429 with
//!   `Retry-After`, `insufficient_quota`, 500, a hang past the client timeout);
//!   optional server-side rate caps that answer 429 like a real provider: a
//!   sliding window of requests, or per-minute request and token caps
//!   enforced as buckets holding one second's worth, as OpenAI enforces them.
//! - Counts everything, and `GET /stats` reports it, so tests and benchmarks can
//!   check how many calls were made and whether any cap was exceeded.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use stolid::config::RateCap;
use stolid::infra::tokens::count_tokens;
use stolid::llm::providers::local;
use stolid::llm::{ChatMessage, ChatRequest, Role, Task, ToolSpec};

/// Text that makes the fake refuse any embedding request carrying it.
pub const POISON: &str = "POISON-INPUT";

#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 `rate_limit_exceeded` with this `Retry-After` (seconds).
    RateLimited { retry_after_secs: f64 },
    /// 429 `insufficient_quota`.
    QuotaExhausted,
    /// 500.
    ServerError,
    /// Never answers (until the client gives up).
    Hang,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub embedding_requests: u64,
    pub embedded_inputs: u64,
    pub embedded_tokens: u64,
    pub chat_requests: u64,
    /// Of the chat requests, those asking to rerank passages.
    pub rerank_requests: u64,
    /// Streams the client closed before the last event.
    pub chat_streams_cancelled: u64,
    pub rate_limited: u64,
    pub max_in_flight: u64,
    /// The largest number of embedding requests seen in any window of the cap's length.
    pub max_embedding_requests_in_window: u64,
    /// Time spent answering requests, summed over them (latency and work): the
    /// model time a client spent waiting on this server.
    pub serving_micros: u64,
}

/// Per-minute caps enforced as token buckets of one second's worth (each
/// starts full and refills continuously), counted from the server's side.
#[derive(Debug, Clone, Copy, Default)]
pub struct BucketCaps {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_second: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn per_minute(limit: u32) -> Self {
        let per_second = limit as f64 / 60.0;
        Self { capacity: per_second, per_second, level: per_second, at: Instant::now() }
    }

    fn refill(&mut self, now: Instant) {
        self.level = (self.level + now.duration_since(self.at).as_secs_f64() * self.per_second).min(self.capacity);
        self.at = now;
    }

    /// Seconds until `n` would fit (0 when it fits now).
    fn wait_for(&self, n: f64) -> f64 {
        ((n - self.level) / self.per_second).max(0.0)
    }
}

/// The request and token buckets of [`BucketCaps`].
#[derive(Debug)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Buckets {
    /// Takes one request of `tokens` tokens from both buckets if both have
    /// room; otherwise takes nothing and returns the seconds until they would.
    fn admit(&mut self, tokens: usize, now: Instant) -> Result<(), f64> {
        let mut both = [(self.requests.as_mut(), 1.0), (self.tokens.as_mut(), tokens as f64)];
        let mut wait: f64 = 0.0;
        for (bucket, n) in both.iter_mut() {
            if let Some(bucket) = bucket {
                bucket.refill(now);
                wait = wait.max(bucket.wait_for(*n));
            }
        }
        if wait > 0.0 {
            return Err(wait);
        }
        for (bucket, n) in both.into_iter() {
            if let Some(bucket) = bucket {
                bucket.level -= n;
            }
        }
        Ok(())
    }
}

/// One embedding request as the server saw it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    /// HTTP status (0 while unanswered).
    pub status: u16,
    pub inputs: u32,
    pub tokens: u32,
}

#[derive(Default)]
struct Shared {
    latency: Duration,
    faults: VecDeque<Fault>,
    cap: Option<RateCap>,
    buckets: Option<Buckets>,
    default_dims: usize,
    /// Pause between streamed chunks.
    stream_gap: Duration,
    /// The messages of the last chat request, as received.
    last_chat_messages: Vec<Value>,
    /// The passage listing of the last rerank request.
    last_rerank_listing: String,
    /// What rerank requests are answered with, instead of the local word-overlap ranking.
    rerank_reply: Option<String>,
    stats: Stats,
    in_flight: u64,
    /// Arrival times of embedding requests that were served.
    embedding_times: Vec<Instant>,
    /// Every embedding request: when it arrived and what it got.
    embedding_arrivals: Vec<Arrival>,
    /// Arrival times of all embedding requests, for the server-side cap.
    recent: VecDeque<Instant>,
}

#[derive(Clone)]
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl FakeOpenAi {
    /// Binds 127.0.0.1 on a free port and serves in the background.
    pub async fn start() -> Self {
        Self::start_on(0).await.expect("binding the fake OpenAI server")
    }

    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared { default_dims: 384, ..Default::default() }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/chat/completions", post(chat))
            .route("/stats", get(stats))
            // Like the real API, accept large batches (axum's default is 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().unwrap().latency = latency;
    }

    /// The next requests (one fault each, in order) fail this way.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.lock().unwrap().faults.extend(faults);
    }

    /// Answer 429 whenever more than `cap.limit` embedding requests arrive within `cap.window`.
    pub fn set_rate_cap(&self, cap: Option<RateCap>) {
        self.shared.lock().unwrap().cap = cap;
    }

    /// Enforce per-minute request and token caps as one-second buckets.
    pub fn set_bucket_caps(&self, caps: BucketCaps) {
        self.shared.lock().unwrap().buckets = Some(Buckets {
            requests: caps.requests_per_minute.map(Bucket::per_minute),
            tokens: caps.tokens_per_minute.map(Bucket::per_minute),
        });
    }

    pub fn set_stream_gap(&self, gap: Duration) {
        self.shared.lock().unwrap().stream_gap = gap;
    }

    /// The messages of the most recent chat request.
    pub fn last_chat_messages(&self) -> Vec<Value> {
        self.shared.lock().unwrap().last_chat_messages.clone()
    }

    /// The passage listing (`Query: ...` then `[n] ...`) of the most recent rerank request.
    pub fn last_rerank_listing(&self) -> String {
        self.shared.lock().unwrap().last_rerank_listing.clone()
    }

    /// Answer rerank requests with `reply` (`None`: rank by word overlap, as the local provider would).
    pub fn set_rerank_reply(&self, reply: Option<&str>) {
        self.shared.lock().unwrap().rerank_reply = reply.map(str::to_string);
    }

    pub fn set_default_dimensions(&self, dims: usize) {
        self.shared.lock().unwrap().default_dims = dims;
    }

    pub fn stats(&self) -> Stats {
        let shared = self.shared.lock().unwrap();
        let mut stats = shared.stats.clone();
        let window = shared.cap.map_or(Duration::from_secs(60), |c| c.window);
        stats.max_embedding_requests_in_window = max_in_window(&shared.embedding_times, window);
        stats
    }

    /// Every embedding request so far: arrival time and HTTP status.
    pub fn embedding_arrivals(&self) -> Vec<(Instant, u16)> {
        self.shared.lock().unwrap().embedding_arrivals.iter().map(|a| (a.at, a.status)).collect()
    }

    /// Every embedding request so far, with its inputs and tokens.
    pub fn embedding_log(&self) -> Vec<Arrival> {
        self.shared.lock().unwrap().embedding_arrivals.clone()
    }

    /// The largest number of served embedding requests in any `window`.
    pub fn max_embedding_requests_in(&self, window: Duration) -> u64 {
        max_in_window(&self.shared.lock().unwrap().embedding_times, window)
    }
}

fn max_in_window(times: &[Instant], window: Duration) -> u64 {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best as u64
}

/// Decrements the in-flight count and adds the time spent serving when a
/// request ends, however it ends.
struct InFlight(Arc<Mutex<Shared>>, Instant);

impl InFlight {
    fn enter(shared: &Arc<Mutex<Shared>>) -> Self {
        let mut s = shared.lock().unwrap();
        s.in_flight += 1;
        s.stats.max_in_flight = s.stats.max_in_flight.max(s.in_flight);
        Self(shared.clone(), Instant::now())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap();
        s.in_flight -= 1;
        s.stats.serving_micros += self.1.elapsed().as_micros() as u64;
    }
}

fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))).into_response()
}

/// Applies a pending fault or the server-side cap; `None` means serve normally.
/// `embedding_tokens` is set for embedding requests.
async fn before_serving(shared: &Arc<Mutex<Shared>>, embedding_tokens: Option<usize>) -> Option<Response> {
    let is_embedding = embedding_tokens.is_some();
    let (fault, latency, over_cap) = {
        let mut s = shared.lock().unwrap();
        let fault = s.faults.pop_front();
        let now = Instant::now();
        let mut over_cap = None;
        if let (Some(tokens), None, Some(buckets)) = (embedding_tokens, &fault, s.buckets.as_mut()) {
            over_cap = buckets.admit(tokens, now).err();
        }
        if is_embedding
            && fault.is_none()
            && over_cap.is_none()
            && let Some(cap) = s.cap
        {
            while s.recent.front().is_some_and(|t| now.duration_since(*t) >= cap.window) {
                s.recent.pop_front();
            }
            if s.recent.len() as u32 >= cap.limit {
                let oldest = *s.recent.front().unwrap();
                over_cap = Some((cap.window - now.duration_since(oldest)).as_secs_f64());
            } else {
                s.recent.push_back(now);
            }
        }
        (fault, s.latency, over_cap)
    };
    if let Some(retry_after) = over_cap {
        shared.lock().unwrap().stats.rate_limited += 1;
        let mut response =
            openai_error(StatusCode::TOO_MANY_REQUESTS, "requests", "rate_limit_exceeded", "Rate limit reached");
        response.headers_mut().insert("retry-after", format!("{:.3}", retry_after.max(0.001)).parse().unwrap());
        return Some(response);
    }
    match fault {
        None => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            None
        }
        Some(Fault::RateLimited { retry_after_secs }) => {
            shared.lock().unwrap().stats.rate_limited += 1;
            let mut response =
                openai_error(StatusCode::TOO_MANY_REQUESTS, "requests", "rate_limit_exceeded", "Rate limit reached");
            response.headers_mut().insert("retry-after", retry_after_secs.to_string().parse().unwrap());
            Some(response)
        }
        Some(Fault::QuotaExhausted) => Some(openai_error(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        )),
        Some(Fault::ServerError) => {
            Some(openai_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "server_error", "boom"))
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
    }
}

#[derive(Deserialize)]
struct EmbeddingBody {
    model: String,
    input: Value,
    dimensions: Option<usize>,
    /// `base64` (OpenAI's SDKs' default) or `float` (the API's default).
    encoding_format: Option<String>,
}

async fn embeddings(State(shared): State<Arc<Mutex<Shared>>>, Json(body): Json<EmbeddingBody>) -> Response {
    let at = Instant::now();
    let inputs: Vec<String> = match body.input {
        Value::String(s) => vec![s],
        Value::Array(items) => items.into_iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
        _ => {
            return openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_input", "bad input");
        }
    };
    if inputs.is_empty() || inputs.len() > 2048 {
        return openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_input", "1 to 2048 inputs");
    }
    let as_base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_value", "encoding_format");
        }
    };
    let tokens: usize = inputs.iter().map(|t| count_tokens(t)).sum();
    let slot = {
        let mut s = shared.lock().unwrap();
        let arrival = Arrival { at, status: 0, inputs: inputs.len() as u32, tokens: tokens as u32 };
        s.embedding_arrivals.push(arrival);
        s.embedding_arrivals.len() - 1
    };
    let response = serve_embeddings(&shared, body.model, body.dimensions, as_base64, inputs, tokens).await;
    shared.lock().unwrap().embedding_arrivals[slot].status = response.status().as_u16();
    response
}

async fn serve_embeddings(
    shared: &Arc<Mutex<Shared>>,
    model: String,
    dimensions: Option<usize>,
    as_base64: bool,
    inputs: Vec<String>,
    tokens: usize,
) -> Response {
    let _in_flight = InFlight::enter(shared);
    if let Some(response) = before_serving(shared, Some(tokens)).await {
        return response;
    }
    if inputs.iter().any(|text| text.contains(POISON)) {
        return openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_input", "input refused");
    }
    let dims = dimensions.unwrap_or_else(|| shared.lock().unwrap().default_dims);
    {
        let mut s = shared.lock().unwrap();
        s.stats.embedding_requests += 1;
        s.stats.embedded_inputs += inputs.len() as u64;
        s.stats.embedded_tokens += tokens as u64;
        s.embedding_times.push(Instant::now());
    }
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = local::embed(text, dims);
            let embedding = if as_base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ChatBody {
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    stream_options: Option<Value>,
    /// Honoured as a provider does: the answer stops there (`finish_reason: length`).
    #[serde(default)]
    max_tokens: Option<usize>,
}

/// The longest run of `text`'s leading words within `max` tokens.
fn truncate_to_tokens(text: &str, max: usize) -> String {
    use stolid::infra::tokens::count_tokens;
    if count_tokens(text) <= max {
        return text.to_string();
    }
    let words: Vec<&str> = text.split(' ').collect();
    let (mut fits, mut too_many) = (0, words.len());
    while too_many - fits > 1 {
        let mid = (fits + too_many) / 2;
        if count_tokens(&words[..mid].join(" ")) <= max { fits = mid } else { too_many = mid }
    }
    words[..fits].join(" ")
}

fn to_request(body: &ChatBody) -> ChatRequest {
    let messages: Vec<ChatMessage> = body
        .messages
        .iter()
        .map(|m| {
            let role = match m["role"].as_str() {
                Some("system") | Some("developer") => Role::System,
                Some("assistant") => Role::Assistant,
                Some("tool") => Role::Tool,
                _ => Role::User,
            };
            let content = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
                _ => String::new(),
            };
            let mut message = ChatMessage::user(content);
            message.role = role;
            message.tool_call_id = m["tool_call_id"].as_str().map(str::to_string);
            message
        })
        .collect();
    let tools = body
        .tools
        .iter()
        .map(|t| ToolSpec {
            name: t["function"]["name"].as_str().unwrap_or_default().to_string(),
            description: String::new(),
            parameters: t["function"]["parameters"].clone(),
        })
        .collect();
    ChatRequest { task: task_of(&messages), messages, tools, ..Default::default() }
}

/// Like a real model, the fake reads what is asked from the prompt: the
/// opening words of stolid's summary, suggestion, query-rewrite and rerank prompts.
fn task_of(messages: &[ChatMessage]) -> Task {
    let system_starts = |words: &str| messages.iter().any(|m| m.role == Role::System && m.content.starts_with(words));
    if system_starts("Summarize the document") {
        Task::Summarize
    } else if system_starts("Suggest follow-up questions") {
        Task::Suggest
    } else if system_starts("You rewrite a user's follow-up question") {
        Task::RewriteQuery
    } else if system_starts("You rank search results") {
        Task::Rerank
    } else {
        Task::Answer
    }
}

async fn chat(State(shared): State<Arc<Mutex<Shared>>>, _headers: HeaderMap, Json(body): Json<ChatBody>) -> Response {
    let in_flight = InFlight::enter(&shared);
    if let Some(response) = before_serving(&shared, None).await {
        return response;
    }
    {
        let mut s = shared.lock().unwrap();
        s.stats.chat_requests += 1;
        s.last_chat_messages = body.messages.clone();
    }
    let request = to_request(&body);
    let (mut output, prompt_tokens, mut completion_tokens) = local::chat_counted(&request);
    let mut truncated = false;
    if let Some(max) = body.max_tokens.filter(|&max| completion_tokens as usize > max) {
        output.content = truncate_to_tokens(&output.content, max);
        completion_tokens = stolid::infra::tokens::count_tokens(&output.content) as _;
        truncated = true;
    }
    if request.task == Task::Rerank {
        let mut s = shared.lock().unwrap();
        s.stats.rerank_requests += 1;
        s.last_rerank_listing = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        if let Some(reply) = &s.rerank_reply {
            output.content = reply.clone();
        }
    }
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let tool_calls: Vec<Value> = output
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect();
    let finish_reason = match (tool_calls.is_empty(), truncated) {
        (false, _) => "tool_calls",
        (true, true) => "length",
        (true, false) => "stop",
    };
    let id = format!("chatcmpl-fake-{}", shared.lock().unwrap().stats.chat_requests);
    if !body.stream {
        let mut message = json!({"role": "assistant", "content": output.content});
        if !tool_calls.is_empty() {
            message["tool_calls"] = json!(tool_calls);
            message["content"] = Value::Null;
        }
        return Json(json!({
            "id": id, "object": "chat.completion", "created": 0, "model": body.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage,
        }))
        .into_response();
    }
    // Streaming: one chunk per word, spaced by the configured latency split over
    // the words, then a finish chunk, the usage chunk if asked for, and [DONE].
    let include_usage = body.stream_options.as_ref().is_some_and(|o| o["include_usage"] == json!(true));
    let words: Vec<String> = output.content.split_inclusive(' ').map(str::to_string).collect();
    let model = body.model.clone();
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events: Vec<Value> = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    if !tool_calls.is_empty() {
        events.push(chunk(json!({"tool_calls": tool_calls}), None));
    }
    events.extend(words.iter().map(|w| chunk(json!({"content": w}), None)));
    events.push(chunk(json!({}), Some(finish_reason)));
    if include_usage {
        let mut last = events.last().unwrap().clone();
        last["choices"] = json!([]);
        last["usage"] = usage;
        events.push(last);
    }
    let gap = shared.lock().unwrap().stream_gap.max(Duration::from_millis(1));
    let stream = async_stream(events, gap, StreamWatch { shared: shared.clone(), done: false, _in_flight: in_flight });
    Sse::new(stream).into_response()
}

/// Counts a stream as cancelled if it is dropped before its last event.
struct StreamWatch {
    shared: Arc<Mutex<Shared>>,
    done: bool,
    _in_flight: InFlight,
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock().unwrap().stats.chat_streams_cancelled += 1;
        }
    }
}

fn async_stream(
    events: Vec<Value>,
    gap: Duration,
    watch: StreamWatch,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> {
    let items = events
        .into_iter()
        .map(|e| Event::default().data(e.to_string()))
        .chain(std::iter::once(Event::default().data("[DONE]")))
        .peekable();
    futures::stream::unfold((items, watch), move |(mut items, mut watch)| async move {
        tokio::time::sleep(gap).await;
        let event = items.next()?;
        watch.done = items.peek().is_none();
        Some((Ok(event), (items, watch)))
    })
}

async fn stats(State(shared): State<Arc<Mutex<Shared>>>) -> Json<Stats> {
    let s = shared.lock().unwrap();
    let mut stats = s.stats.clone();
    let window = s.cap.map_or(Duration::from_secs(60), |c| c.window);
    stats.max_embedding_requests_in_window = max_in_window(&s.embedding_times, window);
    Json(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_count_finds_the_densest_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let times = [at(0), at(100), at(900), at(950), at(1000), at(1050)];
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 5);
        assert_eq!(max_in_window(&[], Duration::from_secs(1)), 0);
    }
}

//! The agent: a bounded tool-using loop over the tenant's documents with the
//! model's function calling. Tools always run inside the caller's scope
//! (tenant, collection, metadata filter): their arguments can narrow a search,
//! never widen it. Every step is a model call recorded under the request id.

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::chat::prompt::{self, Citation};
use crate::domain::error::{DomainError, Result};
use crate::domain::retrieval::{self, Mode};
use crate::domain::signals::Stopwatch;
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::llm::{CallContext, ChatMessage, ChatRequest, Role, TokenUsage, ToolSpec};
use crate::store::conversations::{self, Thread};
use crate::store::documents::{self, DocumentFilter};
use crate::store::search::{Hit, Scope};

const SYSTEM_PROMPT: &str = "You are a research assistant for the user's documents. Use the tools to find \
evidence before answering. Search results are numbered passages like [3]; cite every claim with those numbers. \
If the documents do not contain the answer, say so; do not guess.";

pub fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "search_documents".into(),
            description: "Search the user's documents; returns numbered passages to cite.".into(),
            parameters: json!({"type": "object", "properties": {
                "query": {"type": "string", "description": "what to look for"},
                "k": {"type": "integer", "minimum": 1, "maximum": 10}
            }, "required": ["query"]}),
        },
        ToolSpec {
            name: "get_document".into(),
            description: "Metadata and summary of one document by id.".into(),
            parameters: json!({"type": "object", "properties": {"document_id": {"type": "string"}}, "required": ["document_id"]}),
        },
        ToolSpec {
            name: "list_documents".into(),
            description: "The most recent documents (id, title, status).".into(),
            parameters: json!({"type": "object", "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 50}}}),
        },
    ]
}

pub struct AgentInput {
    pub message: String,
    pub conversation_id: Option<Uuid>,
    pub max_steps: usize,
    pub scope: Scope,
    /// Rerank what each `search_documents` call finds (see `retrieval::rerank`).
    pub rerank: bool,
}

/// One tool call the agent made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TraceStep {
    pub step: usize,
    pub tool: String,
    #[schema(value_type = Object)]
    pub arguments: Value,
    /// A short account of what the tool returned.
    pub result: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentReply {
    pub conversation_id: Uuid,
    pub answer: String,
    pub citations: Vec<Citation>,
    pub trace: Vec<TraceStep>,
    /// Model calls made.
    pub steps: usize,
    /// `answered`, or `max_steps` when the loop was cut off.
    pub stop_reason: &'static str,
    pub usage: TokenUsage,
}

/// Runs the loop. With `progress`, each tool step is also sent there as it happens (streaming).
pub async fn run(
    state: &AppState,
    tenant: &Tenant,
    input: AgentInput,
    progress: Option<tokio::sync::mpsc::Sender<TraceStep>>,
) -> Result<AgentReply> {
    if input.message.trim().is_empty() {
        return Err(DomainError::invalid("message is empty"));
    }
    let mut stopwatch = Stopwatch::start(input.conversation_id.is_none());
    let thread = match input.conversation_id {
        Some(id) => Thread::Existing(
            conversations::get(&state.db, tenant.id, id).await?.ok_or(DomainError::NotFound("conversation"))?.id,
        ),
        None => Thread::start(&input.message),
    };
    let conversation_id = thread.id();
    // Every call of the run, the tools' searches too, counts for the conversation and in `usage`.
    let ctx = tenant.call_context("agent", Some(conversation_id)).metered();
    let mut messages = vec![ChatMessage::system(SYSTEM_PROMPT), ChatMessage::user(input.message.clone())];
    let mut passages: Vec<Hit> = Vec::new();
    let mut trace = Vec::new();
    let mut answer = None;
    let mut steps = 0;
    while steps < input.max_steps {
        steps += 1;
        let request = ChatRequest {
            messages: messages.clone(),
            tools: tools(),
            temperature: Some(0.2),
            // Bounded like chat's answers, which also bounds what a step reserves of a budget.
            max_tokens: Some(state.config.chat.max_answer_tokens),
            ..Default::default()
        };
        let response = state.gateway.chat(&ctx, &request).await?;
        stopwatch.model(response.latency);
        if response.tool_calls.is_empty() {
            answer = Some(response.content);
            break;
        }
        if steps == input.max_steps {
            // No step is left to read what the tools would return: they are
            // shown in the trace, not run (a search would cost a rerank call).
            for call in &response.tool_calls {
                let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
                let step = TraceStep {
                    step: steps,
                    tool: call.name.clone(),
                    arguments,
                    result: "not run: no step left".into(),
                };
                report(&progress, &mut trace, step).await;
            }
            break;
        }
        messages.push(ChatMessage {
            role: Role::Assistant,
            content: response.content.clone(),
            tool_calls: response.tool_calls.clone(),
            tool_call_id: None,
        });
        for call in &response.tool_calls {
            let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
            let (output, summary, timings) =
                run_tool(state, tenant, &ctx, &input.scope, input.rerank, &call.name, &arguments, &mut passages)
                    .await?;
            stopwatch.retrieved(timings);
            let step = TraceStep { step: steps, tool: call.name.clone(), arguments, result: summary };
            report(&progress, &mut trace, step).await;
            messages.push(ChatMessage::tool(&call.id, output));
        }
    }
    let (answer, stop_reason) = match answer {
        Some(answer) => (answer, "answered"),
        None => (format!("I stopped after {steps} steps without reaching an answer."), "max_steps"),
    };
    let citations = prompt::citations(&answer, &passages);
    let usage = ctx.metered_usage();
    let assistant = crate::domain::chat::answer_message(&answer, &citations, &usage);
    conversations::add_turn(&state.db, tenant.id, &thread, &input.message, assistant).await?;
    stopwatch.record(state, tenant, "agent", Some(conversation_id));
    Ok(AgentReply { conversation_id, answer, citations, trace, steps, stop_reason, usage })
}

/// Adds a step to the trace and, when streaming, sends it as it happens.
async fn report(progress: &Option<tokio::sync::mpsc::Sender<TraceStep>>, trace: &mut Vec<TraceStep>, step: TraceStep) {
    if let Some(progress) = progress {
        // A closed receiver (client gone) is handled by the caller, which drops this future.
        let _ = progress.send(step.clone()).await;
    }
    trace.push(step);
}

/// Runs one tool inside the caller's scope. Returns what the model sees and a
/// one-line summary for the trace. Bad arguments are reported to the model, not
/// raised: it can correct itself on the next step.
#[allow(clippy::too_many_arguments)] // the run's state, each borrowed as it is
async fn run_tool(
    state: &AppState,
    tenant: &Tenant,
    ctx: &CallContext,
    scope: &Scope,
    rerank: bool,
    name: &str,
    arguments: &Value,
    passages: &mut Vec<Hit>,
) -> Result<(String, String, retrieval::Timings)> {
    let none = retrieval::Timings::default();
    match name {
        "search_documents" => {
            let Some(query) = arguments["query"].as_str().filter(|q| !q.trim().is_empty()) else {
                return Ok(("error: `query` is required".into(), "invalid arguments".into(), none));
            };
            let k = arguments["k"].as_u64().unwrap_or(5).clamp(1, 10) as usize;
            let search = retrieval::Query {
                text: query,
                k,
                mode: Mode::Hybrid,
                scope: scope.clone(),
                min_similarity: Some(state.config.chat.min_similarity),
                rerank,
                demote_aggregates: true,
            };
            let retrieved = retrieval::search(state, ctx, search).await?;
            let (hits, timings) = (retrieved.hits, retrieved.timings);
            if hits.is_empty() {
                return Ok(("no matching passages".into(), "0 passages".into(), timings));
            }
            let mut output = String::new();
            for hit in &hits {
                passages.push(hit.clone());
                output.push_str(&format!("[{}] {}\n{}\n\n", passages.len(), hit.title, hit.content));
            }
            Ok((output.trim_end().to_string(), format!("{} passages", hits.len()), timings))
        }
        "get_document" => {
            let Some(id) = arguments["document_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else {
                return Ok(("error: `document_id` must be a document id".into(), "invalid arguments".into(), none));
            };
            let filter =
                DocumentFilter { collection: scope.collection.clone(), ids: Some(vec![id]), ..Default::default() };
            let found = documents::list(&state.db, tenant.id, &filter, None, 1).await?.into_iter().next();
            let in_scope =
                found.filter(|d| scope.metadata_any.iter().all(|any| any.iter().any(|m| contains(&d.metadata, m))));
            Ok(match in_scope {
                Some(doc) => {
                    let value = json!({"id": doc.id, "title": doc.title, "collection": doc.collection, "status": doc.status,
                        "metadata": doc.metadata, "summary": doc.summary, "chunk_count": doc.chunk_count});
                    (value.to_string(), format!("document {}", doc.title), none)
                }
                None => ("error: no such document".into(), "not found".into(), none),
            })
        }
        "list_documents" => {
            let limit = arguments["limit"].as_i64().unwrap_or(20).clamp(1, 50);
            let filter = DocumentFilter { collection: scope.collection.clone(), ..Default::default() };
            let docs: Vec<Value> = documents::list(&state.db, tenant.id, &filter, None, limit * 4)
                .await?
                .into_iter()
                .filter(|d| scope.metadata_any.iter().all(|any| any.iter().any(|m| contains(&d.metadata, m))))
                .take(limit as usize)
                .map(|d| json!({"id": d.id, "title": d.title, "status": d.status}))
                .collect();
            let summary = format!("{} documents", docs.len());
            Ok((Value::Array(docs).to_string(), summary, none))
        }
        other => Ok((format!("error: unknown tool `{other}`"), "unknown tool".into(), none)),
    }
}

/// JSON containment for one-level objects, as Postgres `@>` does for metadata filters.
fn contains(metadata: &Value, wanted: &Value) -> bool {
    wanted.as_object().is_some_and(|w| w.iter().all(|(k, v)| metadata.get(k) == Some(v)))
}

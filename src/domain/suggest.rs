//! Suggest: fast, grounded follow-up questions (or completions) while a person
//! types or between turns. One retrieval round trip, a small prompt, a small
//! output; a suggestion is kept only if it cites a retrieved passage, so every
//! suggestion is something the tenant's documents can answer.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::error::{DomainError, Result};
use crate::domain::retrieval::{self, Mode};
use crate::domain::signals::Stopwatch;
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::infra::tokens::count_tokens;
use crate::llm::{ChatMessage, ChatRequest, Task, TokenUsage};
use crate::store::conversations;
use crate::store::search::{Hit, Scope};

/// Passage text sent per suggestion request at most, in tokens: suggestions need gist, not detail.
const CONTEXT_BUDGET: usize = 900;
/// A passage shows the model its first this many characters.
const SNIPPET_CHARS: usize = 600;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Suggestion {
    pub text: String,
    pub document_id: Uuid,
    pub title: String,
    pub chunk_id: Uuid,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SuggestReply {
    pub suggestions: Vec<Suggestion>,
    pub usage: TokenUsage,
}

pub struct SuggestInput {
    pub text: String,
    pub conversation_id: Option<Uuid>,
    pub n: usize,
    pub scope: Scope,
    pub rerank: bool,
}

pub async fn suggest(state: &AppState, tenant: &Tenant, input: SuggestInput) -> Result<SuggestReply> {
    let mut stopwatch = Stopwatch::start(input.conversation_id.is_none());
    // Between turns the text may be empty: the conversation's last message is the topic.
    let mut topic = input.text.trim().to_string();
    if let Some(id) = input.conversation_id {
        conversations::get(&state.db, tenant.id, id).await?.ok_or(DomainError::NotFound("conversation"))?;
        if topic.is_empty() {
            let messages = conversations::messages(&state.db, tenant.id, id).await?;
            topic = messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()).unwrap_or_default();
        }
    }
    if topic.is_empty() {
        return Err(DomainError::invalid("give `text`, or a `conversation_id` with messages"));
    }
    // `usage` is what every call cost: the query embedding and rerank with the suggestion.
    let ctx = tenant.call_context("suggest", input.conversation_id).metered();
    let query = retrieval::Query {
        text: &topic,
        k: input.n * 2,
        mode: Mode::Hybrid,
        scope: input.scope,
        min_similarity: Some(state.config.chat.min_similarity),
        rerank: input.rerank,
        demote_aggregates: true,
    };
    let retrieved = retrieval::search(state, &ctx, query).await?;
    stopwatch.retrieved(retrieved.timings);
    let hits = retrieved.hits;
    let mut passages: Vec<Hit> = Vec::new();
    let mut context = String::new();
    let mut used = 0;
    for hit in hits {
        let snippet: String = hit.content.chars().take(SNIPPET_CHARS).collect();
        let header = format!("[{}] {}: ", passages.len() + 1, hit.title);
        // A whole passage's count is kept since indexing; only a cut one is counted.
        let snippet_tokens =
            if snippet.len() == hit.content.len() { hit.token_count as usize } else { count_tokens(&snippet) };
        let tokens = count_tokens(&header) + snippet_tokens + 1;
        let block = format!("{header}{snippet}\n");
        if used + tokens > CONTEXT_BUDGET {
            break;
        }
        used += tokens;
        context.push_str(&block);
        passages.push(hit);
    }
    if passages.is_empty() {
        stopwatch.record(state, tenant, "suggest", input.conversation_id);
        return Ok(SuggestReply { suggestions: vec![], usage: ctx.metered_usage() });
    }
    let request = ChatRequest {
        task: Task::Suggest,
        messages: vec![
            ChatMessage::system(format!(
                "Suggest follow-up questions that the passages below can answer, at most {n}, one per line, each under 15 words \
                 and ending with the number of the passage that answers it, like [2]. Nothing else.\n\n{context}",
                n = input.n
            )),
            ChatMessage::user(topic),
        ],
        max_tokens: Some(40 * input.n as u32),
        temperature: Some(0.3),
        ..Default::default()
    };
    let response = state.gateway.chat(&ctx, &request).await?;
    stopwatch.model(response.latency);
    let suggestions = parse(&response.content, &passages, input.n);
    stopwatch.record(state, tenant, "suggest", input.conversation_id);
    Ok(SuggestReply { suggestions, usage: ctx.metered_usage() })
}

/// Lines ending in a valid `[n]` become suggestions; anything else is dropped.
fn parse(output: &str, passages: &[Hit], n: usize) -> Vec<Suggestion> {
    let mut suggestions: Vec<Suggestion> = Vec::new();
    for line in output.lines() {
        let line =
            line.trim().trim_start_matches(|c: char| c == '-' || c == '*' || c.is_ascii_digit() || c == '.').trim();
        let Some((text, marker)) = line.rsplit_once('[') else { continue };
        let Some(number) =
            marker.trim_end_matches(']').trim().parse::<usize>().ok().filter(|n| (1..=passages.len()).contains(n))
        else {
            continue;
        };
        let text = text.trim().to_string();
        if text.is_empty() || suggestions.iter().any(|s| s.text == text) {
            continue;
        }
        let hit = &passages[number - 1];
        suggestions.push(Suggestion {
            text,
            document_id: hit.document_id,
            title: hit.title.clone(),
            chunk_id: hit.chunk_id,
        });
        if suggestions.len() == n {
            break;
        }
    }
    suggestions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u128) -> Hit {
        Hit {
            chunk_id: Uuid::from_u128(id),
            document_id: Uuid::from_u128(id + 10),
            title: format!("doc {id}"),
            collection: "default".into(),
            content: String::new(),
            heading_path: vec![],
            start_offset: 0,
            end_offset: 0,
            token_count: 0,
            score: 1.0,
            also_in: vec![],
            aggregate: false,
            document_tokens: 0,
        }
    }

    #[test]
    fn only_lines_citing_a_passage_become_suggestions() {
        let output =
            "1. How do I build? [2]\n- Unfounded idea\nWhat about [9]\n* How do I test? [1]\nHow do I build? [2]";
        let suggestions = parse(output, &[hit(1), hit(2)], 5);
        let texts: Vec<&str> = suggestions.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["How do I build?", "How do I test?"]);
        assert_eq!(suggestions[0].chunk_id, Uuid::from_u128(2));
        assert_eq!(parse(output, &[hit(1), hit(2)], 1).len(), 1);
    }
}

//! Prompt building and citation parsing for retrieval-augmented chat: pure
//! functions, unit-tested beside the code.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::infra::tokens::count_tokens;
use crate::llm::{ChatMessage, ChatRequest, Role, Task};
use crate::store::search::Hit;

pub const SYSTEM_PROMPT: &str = "You answer questions using only the numbered context passages below. \
Cite every claim with the passage number in square brackets, like [1] or [2][3]. \
If the passages do not contain the answer, say that the documents do not cover it; do not guess.";

/// Budgets in tokens for the two parts of the prompt that grow.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub context_tokens: usize,
    pub history_tokens: usize,
}

/// A past turn of the conversation.
#[derive(Debug, Clone)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

/// The messages to send, and the passages that made it into the prompt (passage
/// `n` is `passages[n - 1]`).
pub struct Prompt {
    pub messages: Vec<ChatMessage>,
    pub passages: Vec<Hit>,
    pub history_turns: usize,
}

/// Context: passages in the order given (retrieval's rank, or the reranker's)
/// until the context budget is spent.
/// History: newest turns first until the history budget is spent (so the oldest go).
pub fn build(hits: &[Hit], history: &[Turn], question: &str, budget: Budget) -> Prompt {
    let mut passages = Vec::new();
    let mut context = String::new();
    let mut used = 0;
    for hit in hits {
        let header = format!("\n[{}] {}\n", passages.len() + 1, hit.source_label());
        // The passage's own count, kept since indexing: counting it again was
        // ~9% of the server's CPU per chat. The final newline is one more.
        let tokens = count_tokens(&header) + hit.token_count as usize + 1;
        if used + tokens > budget.context_tokens {
            continue; // a smaller, lower-ranked passage may still fit
        }
        used += tokens;
        context.push_str(&header);
        context.push_str(&hit.content);
        context.push('\n');
        passages.push(hit.clone());
    }
    let system = if passages.is_empty() {
        format!("{SYSTEM_PROMPT}\n\nContext: (no passages)")
    } else {
        format!("{SYSTEM_PROMPT}\n\nContext:{context}")
    };
    let mut kept = Vec::new();
    let mut history_used = 0;
    for turn in history.iter().rev() {
        let tokens = count_tokens(&turn.content) + 4;
        if history_used + tokens > budget.history_tokens {
            break;
        }
        history_used += tokens;
        kept.push(turn);
    }
    kept.reverse();
    let mut messages = vec![ChatMessage::system(system)];
    messages.extend(kept.iter().map(|t| match t.role {
        Role::Assistant => ChatMessage::assistant(t.content.clone()),
        _ => ChatMessage::user(t.content.clone()),
    }));
    messages.push(ChatMessage::user(question));
    Prompt { messages, passages, history_turns: kept.len() }
}

/// Turns of the conversation shown to the query rewrite: the latest few are what
/// a follow-up leans on, and the call must stay small.
const REWRITE_TURNS: usize = 4;
const REWRITE_TURN_CHARS: usize = 500;

/// A small, cheap call that turns a follow-up into a standalone search query,
/// so retrieval looks for what the question is about rather than its pronouns.
pub fn rewrite_request(history: &[Turn], question: &str) -> ChatRequest {
    let system = "You rewrite a user's follow-up question into a standalone search query for their documents. \
                  Use the conversation to replace pronouns and references with what they refer to. \
                  Keep the user's words where you can. Reply with the query only, on one line, without quotes.";
    let mut messages = vec![ChatMessage::system(system)];
    let recent = &history[history.len().saturating_sub(REWRITE_TURNS)..];
    messages.extend(recent.iter().map(|t| {
        let content: String = t.content.chars().take(REWRITE_TURN_CHARS).collect();
        match t.role {
            Role::Assistant => ChatMessage::assistant(content),
            _ => ChatMessage::user(content),
        }
    }));
    messages.push(ChatMessage::user(question));
    ChatRequest {
        messages,
        max_tokens: Some(64),
        temperature: Some(0.0),
        task: Task::RewriteQuery,
        ..Default::default()
    }
}

/// A source the answer cites, numbered as in the answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq)]
pub struct Citation {
    /// The `[n]` marker in the answer.
    pub number: usize,
    pub chunk_id: Uuid,
    pub document_id: Uuid,
    pub title: String,
    pub heading_path: Vec<String>,
    /// The start of the cited passage.
    pub snippet: String,
}

/// The passages the answer actually cites, in order of first mention. Markers
/// that point at no passage are ignored: only retrieved chunks can be cited.
pub fn citations(answer: &str, passages: &[Hit]) -> Vec<Citation> {
    let mut numbers: Vec<usize> = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        if let Ok(n) = rest[..close].trim().parse::<usize>()
            && (1..=passages.len()).contains(&n)
            && !numbers.contains(&n)
        {
            numbers.push(n);
        }
        rest = &rest[close..];
    }
    numbers
        .into_iter()
        .map(|n| {
            let hit = &passages[n - 1];
            Citation {
                number: n,
                chunk_id: hit.chunk_id,
                document_id: hit.document_id,
                title: hit.title.clone(),
                heading_path: hit.heading_path.clone(),
                snippet: hit.content.chars().take(200).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rewrite_sees_the_latest_turns_cut_short_then_the_follow_up() {
        let history: Vec<Turn> = (0..6)
            .map(|i| Turn {
                role: if i % 2 == 0 { Role::User } else { Role::Assistant },
                content: format!("{i} {}", "x".repeat(900)),
            })
            .collect();
        let request = rewrite_request(&history, "and then?");
        assert_eq!(request.task, Task::RewriteQuery);
        assert_eq!(request.messages.len(), 1 + REWRITE_TURNS + 1);
        assert!(request.messages[1].content.starts_with("2 "), "the oldest turns are left out");
        assert!(request.messages[1..=REWRITE_TURNS].iter().all(|m| m.content.chars().count() == REWRITE_TURN_CHARS));
        assert_eq!(request.messages.last().unwrap().content, "and then?");
    }

    fn hit(id: u128, content: &str, score: f64) -> Hit {
        Hit {
            chunk_id: Uuid::from_u128(id),
            document_id: Uuid::from_u128(id + 100),
            title: format!("doc {id}"),
            collection: "default".into(),
            content: content.into(),
            heading_path: vec![],
            start_offset: 0,
            end_offset: content.len() as i32,
            token_count: count_tokens(content) as i32,
            score,
            also_in: vec![],
            aggregate: false,
            document_tokens: 0,
        }
    }

    fn turn(role: Role, content: &str) -> Turn {
        Turn { role, content: content.into() }
    }

    #[test]
    fn context_is_filled_in_rank_order_within_the_budget() {
        // A reranked list: its order, not the retrieval scores, is the rank.
        let hits = [hit(2, "best passage", 0.5), hit(1, &"long ".repeat(50), 0.9), hit(3, "second passage", 0.1)];
        let prompt = build(&hits, &[], "q", Budget { context_tokens: 30, history_tokens: 100 });
        let ids: Vec<u128> = prompt.passages.iter().map(|h| h.chunk_id.as_u128()).collect();
        assert_eq!(ids, [2, 3], "the long passage does not fit; the next one that fits does");
        assert!(prompt.messages[0].content.contains("[1] doc 2\nbest passage"));
    }

    #[test]
    fn history_is_trimmed_oldest_first() {
        let history = [
            turn(Role::User, &"old question ".repeat(20)),
            turn(Role::Assistant, "old answer"),
            turn(Role::User, "recent question"),
            turn(Role::Assistant, "recent answer"),
        ];
        let prompt = build(&[], &history, "now?", Budget { context_tokens: 100, history_tokens: 30 });
        assert_eq!(prompt.history_turns, 3);
        let contents: Vec<&str> = prompt.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(&contents[1..], ["old answer", "recent question", "recent answer", "now?"]);
    }

    #[test]
    fn citations_follow_the_answer_and_ignore_unknown_markers() {
        let passages = [hit(1, "a", 0.9), hit(2, "b", 0.8), hit(3, "c", 0.7)];
        let cited = citations("First [3], then [1][3], not [7] nor [x].", &passages);
        let numbers: Vec<usize> = cited.iter().map(|c| c.number).collect();
        assert_eq!(numbers, [3, 1]);
        assert_eq!(cited[0].chunk_id, Uuid::from_u128(3));
    }
}

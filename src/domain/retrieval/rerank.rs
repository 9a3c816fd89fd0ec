//! Reranking: the chat model reorders the best fused candidates by how well
//! each answers the query, before they reach chat, suggest or the agent.
//!
//! Retrieval ranks by proxies (cosine similarity, term weights); a language
//! model reading the query next to each passage tells an answer from a passage
//! that merely shares its words. One listwise call sees the top
//! `RERANK_CANDIDATES` (20) passages, each cut to a short snippet, and replies
//! with their numbers best first: a prompt of up to ~3k tokens (twenty
//! snippets of 500 characters) and a reply of a few, metered like every model
//! call (endpoint `rerank`, with the caller's request and conversation ids).
//!
//! The reranker can only promote: passages it leaves out keep their retrieval
//! order after the ones it named, so a terse or garbled reply never loses
//! context, and a failed call leaves the retrieval order as it was. The local
//! provider has no language model, so nothing is reranked there (see
//! `Gateway::has_language_model`); no cross-encoder weights are published on the package
//! registries this project can fetch from, so there is no local reranker yet.

use crate::domain::state::AppState;
use crate::llm::{CallContext, ChatMessage, ChatRequest, Task};
use crate::store::search::Hit;

/// Characters of each passage shown to the reranker: enough to judge it, short
/// enough that twenty of them stay a cheap call.
const SNIPPET_CHARS: usize = 500;

pub const SYSTEM_PROMPT: &str = "You rank search results. Given a query and numbered passages, reply with the \
     numbers of the passages that help answer the query, most helpful first, separated by commas (for example: \
     4, 1, 7). Leave out passages that do not help. Reply with the numbers only.";

/// The listwise prompt over `hits`, numbered from 1 in their retrieval order.
pub fn request(query: &str, hits: &[Hit], model: Option<String>) -> ChatRequest {
    let mut listing = format!("Query: {}\n\nPassages:\n", query.trim());
    for (i, hit) in hits.iter().enumerate() {
        let snippet: String = hit.content.chars().take(SNIPPET_CHARS).collect();
        listing.push_str(&format!("[{}] {}\n{}\n\n", i + 1, hit.source_label(), snippet.trim()));
    }
    ChatRequest {
        task: Task::Rerank,
        messages: vec![ChatMessage::system(SYSTEM_PROMPT), ChatMessage::user(listing.trim_end())],
        max_tokens: Some(100),
        temperature: Some(0.0),
        model,
        ..Default::default()
    }
}

/// The passage numbers of a reply, best first: each number from 1 to `count`
/// once, in the order given; anything else in the reply is ignored.
pub fn parse(reply: &str, count: usize) -> Vec<usize> {
    let mut order = Vec::new();
    for number in reply.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<usize>().ok()) {
        if (1..=count).contains(&number) && !order.contains(&number) {
            order.push(number);
        }
    }
    order
}

/// `hits` in the reranker's order: the named ones first, then the others as they were.
pub fn reorder(hits: Vec<Hit>, order: &[usize]) -> Vec<Hit> {
    let mut slots: Vec<Option<Hit>> = hits.into_iter().map(Some).collect();
    let mut out: Vec<Hit> = order.iter().filter_map(|n| slots[n - 1].take()).collect();
    out.extend(slots.into_iter().flatten());
    out
}

/// Reorders the first `candidates` of `hits` with one model call. Returns the
/// hits and whether the model's order was applied.
pub async fn rerank(state: &AppState, ctx: &CallContext, query: &str, mut hits: Vec<Hit>) -> (Vec<Hit>, bool) {
    let candidates = state.config.rerank.candidates.min(hits.len());
    if candidates < 2 {
        return (hits, false);
    }
    let rest = hits.split_off(candidates);
    let ctx = CallContext { endpoint: "rerank", ..ctx.clone() };
    let request = request(query, &hits, state.config.rerank.model.clone());
    let (mut hits, applied) = match state.gateway.chat(&ctx, &request).await {
        Ok(response) => {
            let order = parse(&response.content, hits.len());
            if order.is_empty() {
                tracing::warn!(reply = %response.content, "the reranker named no passage; keeping the retrieval order");
                (hits, false)
            } else {
                (reorder(hits, &order), true)
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "reranking failed; keeping the retrieval order");
            (hits, false)
        }
    };
    hits.extend(rest);
    (hits, applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn hit(id: u128) -> Hit {
        Hit {
            chunk_id: Uuid::from_u128(id),
            document_id: Uuid::nil(),
            title: format!("doc{id}"),
            collection: String::new(),
            content: "x".repeat(2_000),
            heading_path: vec!["Intro".into()],
            start_offset: 0,
            end_offset: 0,
            token_count: crate::infra::tokens::count_tokens(&"x".repeat(2_000)) as i32,
            score: 0.0,
            also_in: vec![],
            aggregate: false,
            document_tokens: 0,
        }
    }

    #[test]
    fn the_reply_is_read_as_passage_numbers_in_order_once_each_within_range() {
        assert_eq!(parse("3, 1, 7", 5), vec![3, 1]);
        assert_eq!(parse("[2] then [2] and 4.", 5), vec![2, 4]);
        assert_eq!(parse("none of them", 5), Vec::<usize>::new());
        assert_eq!(parse("0, 5", 5), vec![5]);
    }

    #[test]
    fn named_passages_come_first_and_the_rest_keep_their_order() {
        let ids = |hits: Vec<Hit>| hits.iter().map(|h| h.chunk_id.as_u128()).collect::<Vec<_>>();
        assert_eq!(ids(reorder(vec![hit(1), hit(2), hit(3), hit(4)], &[3, 1])), vec![3, 1, 2, 4]);
        assert_eq!(ids(reorder(vec![hit(1), hit(2)], &[])), vec![1, 2]);
    }

    #[test]
    fn the_prompt_numbers_passages_with_their_source_and_a_short_snippet() {
        let request = request("what is x?", &[hit(1), hit(2)], None);
        let listing = &request.messages[1].content;
        assert!(listing.starts_with("Query: what is x?\n\nPassages:\n[1] doc1 › Intro\n"), "{listing}");
        assert!(listing.contains("\n[2] doc2 › Intro\n"), "{listing}");
        assert!(listing.len() < 2 * (SNIPPET_CHARS + 40) + 40, "snippets are cut: {} chars", listing.len());
        assert_eq!(request.task, Task::Rerank);
    }
}

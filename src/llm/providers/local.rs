//! The local provider: in-process, deterministic, offline, and genuinely useful.
//!
//! - Embeddings hash words and character trigrams into a fixed number of signed
//!   buckets (the "hashing trick") and L2-normalise, so cosine similarity tracks
//!   lexical overlap: retrieval works, just without semantics.
//! - Chat answers extractively: it picks the sentences of the numbered context
//!   passages (`[n] ...`) that best overlap the question and cites them, or says
//!   that the documents do not cover it. With tools offered and no tool result
//!   yet, it asks for one `search_documents` call first, so the agent loop runs.

use crate::infra::tokens::count_tokens;
use crate::llm::{ChatMessage, ChatOutput, ChatRequest, Role, Task, ToolCall};

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in", "is", "it",
    "of", "on", "or", "that", "the", "this", "to", "was", "what", "when", "where", "which", "who", "why", "will",
    "with", "you", "your",
];

/// Lowercased alphanumeric words, without stopwords.
pub fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

fn add_feature(vector: &mut [f32], feature: &[u8], weight: f32) {
    let h = fnv1a(feature);
    let bucket = (h % vector.len() as u64) as usize;
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    vector[bucket] += sign * weight;
}

/// A unit vector of `dims` dimensions for `text`.
pub fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut vector = vec![0.0f32; dims];
    for word in content_words(text) {
        add_feature(&mut vector, word.as_bytes(), 1.0);
        let padded: Vec<char> = format!("^{word}$").chars().collect();
        for gram in padded.windows(3) {
            let gram: String = gram.iter().collect();
            add_feature(&mut vector, format!("#{gram}").as_bytes(), 0.3);
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        // Cosine distance is undefined for a zero vector; give empty text a fixed direction.
        vector[0] = 1.0;
    } else {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// A numbered passage the local chat can quote: `[n] text`.
struct Passage<'a> {
    number: &'a str,
    text: &'a str,
}

impl<'a> Passage<'a> {
    /// The passage without its source line (`[n] title › headings`, as chat and
    /// the agent write it): a file name or heading path is no statement to quote.
    fn body(&self) -> &'a str {
        self.text.split_once('\n').map_or(self.text, |(_, body)| body)
    }
}

/// The numbered passages of a prompt: each starts on a line `[n] ...`, and runs
/// to the next passage's line. Passages are numbered in order, so only the
/// next number starts one: a line of a passage's own text that opens with a
/// bracket (the Reference's `[type.numeric.int]` rule anchors, a footnote
/// `[2]`) stays part of it.
fn passages(text: &str) -> Vec<Passage<'_>> {
    let mut out: Vec<Passage<'_>> = Vec::new();
    let mut current: Option<(&str, usize)> = None; // (number, where its text starts)
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let number = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .map(|(number, _)| number)
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        let follows = |n: &str| match current {
            None => true,
            Some((previous, _)) => previous.parse::<u64>().ok().map(|p| p + 1) == n.parse().ok(),
        };
        if let Some(number) = number.filter(|n| follows(n)) {
            if let Some((previous, start)) = current {
                out.push(Passage { number: previous, text: text[start..offset].trim() });
            }
            current = Some((number, offset + number.len() + 2));
        }
        offset += line.len();
    }
    if let Some((number, start)) = current {
        out.push(Passage { number, text: text[start..].trim() });
    }
    out
}

/// Sentences worth quoting: Markdown heading lines name a topic, they state nothing.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(['.', '?', '!', '\n']).map(str::trim).filter(|s| s.len() > 2 && !s.starts_with('#'))
}

fn stem(word: &str) -> &str {
    word.strip_suffix('s').filter(|w| w.len() > 2).unwrap_or(word)
}

/// The content words of `text`, stemmed.
fn stems(text: &str) -> Vec<String> {
    content_words(text).map(|w| stem(&w).to_string()).collect()
}

/// How many of `wanted` (stems) occur in `text`.
fn overlap(wanted: &[String], text: &str) -> usize {
    let words = stems(text);
    wanted.iter().filter(|w| words.contains(w)).count()
}

/// [`chat`] with token counts as a remote provider would report them.
pub fn chat_counted(request: &ChatRequest) -> (ChatOutput, u32, u32) {
    let output = chat(request);
    let input_tokens = request.estimated_input_tokens();
    let output_tokens =
        count_tokens(&output.content) + output.tool_calls.iter().map(|c| count_tokens(&c.arguments)).sum::<usize>();
    (output, input_tokens as u32, output_tokens as u32)
}

pub fn chat(request: &ChatRequest) -> ChatOutput {
    match request.task {
        Task::Summarize => return ChatOutput { content: lead_summary(&request.messages), tool_calls: vec![] },
        Task::Suggest => return ChatOutput { content: suggested_questions(&request.messages), tool_calls: vec![] },
        Task::RewriteQuery => return ChatOutput { content: standalone_query(&request.messages), tool_calls: vec![] },
        Task::Rerank => return ChatOutput { content: rank_by_overlap(&request.messages), tool_calls: vec![] },
        Task::Answer => {}
    }
    let question =
        request.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.as_str()).unwrap_or("");
    let last_user = request.messages.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
    let has_tool_result = request.messages[last_user..].iter().any(|m| m.role == Role::Tool);
    if let Some(tool) = request.tools.iter().find(|t| t.name == "search_documents")
        && !has_tool_result
    {
        return ChatOutput {
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: format!("call_local_{}", request.messages.len()),
                name: tool.name.clone(),
                arguments: serde_json::json!({ "query": question }).to_string(),
            }],
        };
    }
    ChatOutput { content: extractive_answer(question, &request.messages), tool_calls: vec![] }
}

/// The last user message, followed by the content words of the user message
/// before it that it does not repeat: a follow-up ("and how do I undo it?")
/// then still carries what "it" was about. Without an earlier question, the
/// message as it is. Chat never asks the local provider for this (see
/// `Gateway::has_language_model`); the fake server answers rewrite prompts with it.
fn standalone_query(messages: &[ChatMessage]) -> String {
    let mut asked = messages.iter().rev().filter(|m| m.role == Role::User).map(|m| m.content.as_str());
    let question = asked.next().unwrap_or_default();
    let Some(previous) = asked.next() else { return question.to_string() };
    let mut words: Vec<String> = content_words(question).collect();
    let mut query = question.trim().to_string();
    for word in content_words(previous) {
        if !words.contains(&word) {
            query.push(' ');
            query.push_str(&word);
            words.push(word);
        }
    }
    query
}

/// The numbers of the listed passages (`Query: ...` then `[n] ...`) that share a
/// word with the query, most shared words first. Chat never asks the local
/// provider for this (see `Gateway::has_language_model`); the fake server answers rerank
/// prompts with it.
fn rank_by_overlap(messages: &[ChatMessage]) -> String {
    let listing = messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str());
    let (query, rest) = listing.split_once("\n").unwrap_or((listing, ""));
    let wanted = stems(query.trim_start_matches("Query:"));
    let mut ranked: Vec<(usize, &str)> = passages(rest)
        .into_iter()
        .map(|p| (overlap(&wanted, p.text), p.number))
        .filter(|(shared, _)| *shared > 0)
        .collect();
    // Stable: ties keep the listing's order.
    ranked.sort_by_key(|(shared, _)| std::cmp::Reverse(*shared));
    ranked.iter().map(|(_, number)| *number).collect::<Vec<_>>().join(", ")
}

/// An extractive "lead" summary: the opening sentences (two per passage, three in all).
fn lead_summary(messages: &[ChatMessage]) -> String {
    let leads: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .flat_map(|m| passages(&m.content))
        .flat_map(|p| sentences(p.text).filter(|s| !s.starts_with('#') && s.split_whitespace().count() > 3).take(2))
        .take(3)
        .collect();
    if leads.is_empty() {
        return "The document has no summarizable text.".into();
    }
    leads.join(" ")
}

/// One question per passage about its most frequent content word, cited.
fn suggested_questions(messages: &[ChatMessage]) -> String {
    let mut lines = Vec::new();
    for message in messages.iter().filter(|m| m.role == Role::System) {
        for passage in passages(&message.content) {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for word in content_words(passage.text).filter(|w| w.len() > 3 && w.chars().all(char::is_alphabetic)) {
                match counts.iter_mut().find(|(w, _)| *w == word) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((word, 1)),
                }
            }
            // Most frequent first; ties keep the order of appearance.
            counts.sort_by_key(|c| std::cmp::Reverse(c.1));
            if let Some((topic, _)) = counts.first() {
                lines.push(format!("What do the documents say about {topic}? [{}]", passage.number));
            }
        }
    }
    lines.join("\n")
}

/// The sentences of the context that best overlap the question, each cited,
/// at most one from each passage: three passages that each touch the question
/// say more than three sentences of one.
fn extractive_answer(question: &str, messages: &[ChatMessage]) -> String {
    let wanted = stems(question);
    // Passages arrive best first, ranked by more than word overlap: the answer
    // leads with the first passage about the question (by its text, or by the
    // title and headings of its source line), quoting its best sentence or,
    // when only its headings match, its first; then the best sentences of the
    // other passages, best overlap first.
    let mut lead: Option<(String, &str)> = None;
    let mut others: Vec<(usize, String, &str)> = Vec::new(); // (overlap, sentence, number), in passage order
    let context = messages.iter().filter(|m| matches!(m.role, Role::System | Role::Tool));
    for message in context {
        for passage in passages(&message.content) {
            let body: Vec<&str> = sentences(passage.body()).collect();
            let mut best: Option<(usize, &str)> = None;
            for sentence in &body {
                let score = overlap(&wanted, sentence);
                if score > 0 && best.is_none_or(|(top, _)| score > top) {
                    best = Some((score, sentence));
                }
            }
            if lead.is_none()
                && overlap(&wanted, passage.text) > 0
                && let Some(sentence) = best.map(|(_, s)| s).or(body.first().copied())
            {
                lead = Some((sentence.to_string(), passage.number));
            } else if let Some((score, sentence)) = best {
                others.push((score, sentence.to_string(), passage.number));
            }
        }
    }
    // Stable: equal overlaps keep the passages' order.
    others.sort_by_key(|(score, _, _)| std::cmp::Reverse(*score));
    let mut seen = Vec::new();
    let mut answer = Vec::new();
    for (sentence, number) in lead.into_iter().chain(others.into_iter().map(|(_, s, n)| (s, n))) {
        if answer.len() == 3 {
            break;
        }
        if seen.contains(&sentence) {
            continue;
        }
        answer.push(format!("{sentence} [{number}]"));
        seen.push(sentence);
    }
    if answer.is_empty() {
        return "I could not find anything about this in the provided documents.".into();
    }
    answer.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolSpec;

    /// The local answer to `question` over a chat prompt holding `context`.
    fn answer(context: &str, question: &str) -> String {
        extractive_answer(question, &[ChatMessage::system(context), ChatMessage::user(question)])
    }

    #[test]
    fn neither_the_source_line_nor_headings_are_quoted_as_answers() {
        let context = "[1] handbook.md › Vacation days\n## Vacation\n\nStaff receive twenty-five vacation days.\n\n## Sick days\n\nCall in.";
        assert_eq!(
            answer(context, "How many vacation days do staff get?"),
            "Staff receive twenty-five vacation days. [1]"
        );
    }

    #[test]
    fn a_passage_whose_headings_match_leads_the_answer_with_its_first_sentence() {
        let context = "[1] book › Slices\nThey reference a run of elements.\n\n[2] notes\nA slice of cake is nice.";
        assert_eq!(
            answer(context, "what are slices?"),
            "They reference a run of elements. [1] A slice of cake is nice. [2]"
        );
    }

    #[test]
    fn a_bracketed_line_inside_a_passage_does_not_end_it() {
        let context = "Context:\n[1] numeric.html › Machine-dependent integer types\n[type.numeric.int.size]\nThe usize type has as many bits as a pointer.\n[3] not a passage: 2 comes first\n\n[2] other.html\nSomething else.";
        let parsed: Vec<(&str, &str)> = passages(context).iter().map(|p| (p.number, p.body())).collect();
        assert_eq!(
            parsed,
            [
                (
                    "1",
                    "[type.numeric.int.size]\nThe usize type has as many bits as a pointer.\n[3] not a passage: 2 comes first"
                ),
                ("2", "Something else.")
            ]
        );
    }

    #[test]
    fn the_answer_quotes_one_sentence_of_each_passage() {
        let context = "[1] a\nBorrowing is checked. Borrowing rules bind references. Borrowing ends at last use.\n\n[2] b\nA borrow ends early.";
        assert_eq!(
            answer(context, "when does borrowing end?"),
            "Borrowing ends at last use. [1] A borrow ends early. [2]"
        );
    }

    #[test]
    fn a_follow_up_carries_the_words_of_the_question_before_it() {
        let messages = [
            ChatMessage::system("rewrite"),
            ChatMessage::user("How do I make a git commit?"),
            ChatMessage::assistant("Run git commit [1]."),
            ChatMessage::user("and how do I undo it?"),
        ];
        assert_eq!(standalone_query(&messages), "and how do I undo it? make git commit");
        assert_eq!(standalone_query(&messages[..2]), "How do I make a git commit?", "nothing to lean on");
    }

    #[test]
    fn the_rerank_stand_in_names_passages_sharing_query_words_most_first() {
        let listing = "Query: lighthouse lamp keeper\n\nPassages:\n[1] a\nA lighthouse.\n\n[2] b\nNothing here.\n\n[3] c\nThe keeper lights the lighthouse lamp.";
        let messages =
            [ChatMessage::system(crate::domain::retrieval::rerank::SYSTEM_PROMPT), ChatMessage::user(listing)];
        assert_eq!(rank_by_overlap(&messages), "3, 1");
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embeddings_are_unit_length_and_deterministic() {
        let a = embed("Ownership rules in Rust", 384);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(a, embed("Ownership rules in Rust", 384));
    }

    #[test]
    fn lexically_related_texts_are_closer_than_unrelated_ones() {
        let query = embed("how does borrowing work", 384);
        let related = embed("Borrowing lets code use a value without taking ownership.", 384);
        let unrelated = embed("Cargo downloads crates from the registry.", 384);
        assert!(cosine(&query, &related) > cosine(&query, &unrelated) + 0.1);
    }

    #[test]
    fn chat_quotes_and_cites_the_best_matching_passage() {
        let request = ChatRequest {
            messages: vec![
                ChatMessage::system(
                    "Context:\n[1] Cargo builds crates.\n[2] The borrow checker enforces borrowing rules. It runs at compile time.",
                ),
                ChatMessage::user("When does the borrow checker run?"),
            ],
            ..Default::default()
        };
        let answer = chat(&request).content;
        assert!(answer.contains("[2]"), "{answer}");
        assert!(!answer.contains("[1]"), "{answer}");
    }

    #[test]
    fn chat_says_so_when_the_context_does_not_cover_the_question() {
        let request = ChatRequest {
            messages: vec![ChatMessage::system("[1] Cargo builds crates."), ChatMessage::user("Weather in Paris?")],
            ..Default::default()
        };
        assert!(chat(&request).content.contains("could not find"));
    }

    #[test]
    fn with_tools_it_searches_first_then_answers_from_the_result() {
        let mut request = ChatRequest {
            messages: vec![ChatMessage::user("What builds crates?")],
            tools: vec![ToolSpec {
                name: "search_documents".into(),
                description: String::new(),
                parameters: serde_json::json!({}),
            }],
            ..Default::default()
        };
        let first = chat(&request);
        assert_eq!(first.tool_calls.len(), 1);
        request.messages.push(ChatMessage::tool(&first.tool_calls[0].id, "[1] Cargo builds crates."));
        let second = chat(&request);
        assert!(second.tool_calls.is_empty());
        assert!(second.content.contains("[1]"), "{}", second.content);
    }
}

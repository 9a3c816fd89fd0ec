//! Token-aware chunking that respects structure. Markdown (and HTML, extracted
//! to Markdown) is split by text-splitter's Markdown splitter, which prefers
//! heading, code-block and paragraph boundaries; plain text by its text
//! splitter (paragraphs, sentences, words). Sizes are cl100k tokens, so a chunk
//! never exceeds the embedding model's per-input limit.

use sha2::{Digest, Sha256};
use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};

use crate::llm::{TokenCounter, count_tokens};

#[derive(Debug, Clone, Copy)]
pub struct ChunkSettings {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkSettings {
    fn default() -> Self {
        Self { max_tokens: 400, overlap_tokens: 50 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ordinal: i32,
    pub content: String,
    /// SHA-256 of `content`: embeddings are reused across re-indexing by it.
    pub content_hash: String,
    pub token_count: i32,
    /// The Markdown headings this chunk sits under, outermost first.
    pub heading_path: Vec<String>,
    /// Byte offsets into the extracted text.
    pub start_offset: i32,
    pub end_offset: i32,
}

pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub fn chunk(text: &str, markdown: bool, settings: ChunkSettings) -> Vec<Chunk> {
    let overlap = settings.overlap_tokens.min(settings.max_tokens.saturating_sub(1));
    let config = ChunkConfig::new(settings.max_tokens)
        .with_sizer(TokenCounter)
        .with_overlap(overlap)
        .expect("overlap is below the chunk size");
    let pieces: Vec<(usize, &str)> = if markdown {
        MarkdownSplitter::new(config).chunk_indices(text).collect()
    } else {
        TextSplitter::new(config).chunk_indices(text).collect()
    };
    let headings = if markdown { headings(text) } else { Vec::new() };
    pieces
        .into_iter()
        .enumerate()
        .map(|(ordinal, (offset, content))| Chunk {
            ordinal: ordinal as i32,
            content: content.to_string(),
            content_hash: content_hash(content),
            token_count: count_tokens(content) as i32,
            heading_path: heading_path_at(&headings, offset),
            start_offset: offset as i32,
            end_offset: (offset + content.len()) as i32,
        })
        .collect()
}

/// (byte offset, level, title) of each ATX heading outside code fences.
fn headings(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            let level = trimmed.chars().take_while(|c| *c == '#').count();
            if (1..=6).contains(&level) && trimmed[level..].starts_with(' ') {
                out.push((offset, level, trimmed[level..].trim().to_string()));
            }
        }
        offset += line.len();
    }
    out
}

fn heading_path_at(headings: &[(usize, usize, String)], offset: usize) -> Vec<String> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (at, level, title) in headings.iter().take_while(|(at, _, _)| *at <= offset) {
        let _ = at;
        while stack.last().is_some_and(|(l, _)| *l >= *level) {
            stack.pop();
        }
        stack.push((*level, title));
    }
    stack.into_iter().map(|(_, t)| t.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_within_the_token_budget_and_cover_the_text() {
        let text = "Sentence number one is here. ".repeat(400);
        let chunks = chunk(&text, false, ChunkSettings { max_tokens: 100, overlap_tokens: 10 });
        assert!(chunks.len() > 5);
        for c in &chunks {
            assert!(c.token_count <= 100, "{}", c.token_count);
            assert_eq!(&text[c.start_offset as usize..c.end_offset as usize], c.content);
        }
        assert_eq!(chunks.last().unwrap().end_offset as usize, text.trim_end().len());
    }

    #[test]
    fn markdown_chunks_carry_their_heading_path() {
        let text = "# Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n### Linux\n\nUse apt.\n\n## Usage\n\nCall it.\n";
        let chunks = chunk(text, true, ChunkSettings { max_tokens: 8, overlap_tokens: 0 });
        let linux = chunks.iter().find(|c| c.content.contains("Use apt")).unwrap();
        assert_eq!(linux.heading_path, ["Guide", "Install", "Linux"]);
        let usage = chunks.iter().find(|c| c.content.contains("Call it")).unwrap();
        assert_eq!(usage.heading_path, ["Guide", "Usage"]);
    }

    #[test]
    fn code_fences_are_not_headings() {
        let text = "# Real\n\n```sh\n# not a heading\n```\n";
        assert_eq!(headings(text).len(), 1);
    }

    #[test]
    fn identical_text_hashes_identically() {
        let a = chunk("Same words.", false, ChunkSettings::default());
        let b = chunk("Same words.", false, ChunkSettings::default());
        assert_eq!(a[0].content_hash, b[0].content_hash);
    }
}

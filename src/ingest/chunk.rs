//! Token-aware chunking that respects structure. Markdown (and HTML, extracted
//! to Markdown) is split by text-splitter's Markdown splitter, which prefers
//! heading, code-block and paragraph boundaries; plain text by its text
//! splitter (paragraphs, sentences, words). Sizes are cl100k tokens, so a chunk
//! never exceeds the embedding model's per-input limit.

use sha2::{Digest, Sha256};
use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};

pub use crate::config::ChunkSettings;
use crate::infra::tokens::SliceCounter;

pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Text-splitter searches for the best split point over the text it is given,
/// which grows faster than the text (1 MB without whitespace took 47 s). The
/// text is first cut into segments of at most this many bytes, at the strongest
/// boundary near the end of each, and each segment is chunked on its own: the
/// whole is then linear in the input. Segments hold dozens of chunks, so the
/// forced boundaries are rare and fall on headings or paragraphs when there are any.
const SEGMENT_BYTES: usize = 32 * 1024;

/// A chunk of a document's extracted text, as chunking makes it; `store::chunks` stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ordinal: i32,
    pub content: String,
    /// The document title and heading path this chunk sits under, embedded and
    /// keyword-indexed with it ("Title > Chapter > Section").
    pub context: String,
    /// SHA-256 of the embedded text (context and content): embeddings are reused
    /// across re-indexing by it.
    pub content_hash: String,
    pub token_count: i32,
    /// The Markdown headings this chunk sits under, outermost first.
    pub heading_path: Vec<String>,
    /// Byte offsets into the extracted text.
    pub start_offset: i32,
    pub end_offset: i32,
    /// A sample of the content's word shingles (`ingest::shingles::sampled`):
    /// where else the passage occurs.
    pub shingles: Vec<i64>,
}

/// Chunks `text` of the document titled `title`. Each chunk carries its context
/// (the title and the headings it sits under), which is embedded and
/// keyword-indexed with it: a passage that never names its topic is still found
/// by it.
pub fn chunk(text: &str, markdown: bool, settings: ChunkSettings, title: &str) -> Vec<Chunk> {
    let overlap = settings.overlap_tokens.min(settings.max_tokens.saturating_sub(1));
    // A splitter per segment: its sizer pre-tokenizes the segment once, and
    // then also gives each chunk's token count.
    let pieces = split_segments(text, |segment| {
        let counter = SliceCounter::new(segment);
        let config = ChunkConfig::new(settings.max_tokens)
            .with_sizer(&counter)
            .with_overlap(overlap)
            .expect("overlap is below the chunk size");
        let chunks: Vec<(usize, &str)> = if markdown {
            MarkdownSplitter::new(config).chunk_indices(segment).collect()
        } else {
            TextSplitter::new(config).chunk_indices(segment).collect()
        };
        chunks.into_iter().map(|(offset, piece)| (offset, piece, counter.count(piece))).collect()
    });
    let headings = if markdown { headings(text) } else { Vec::new() };
    let mut paths = HeadingPaths::new(&headings);
    let title = readable_title(title);
    pieces
        .into_iter()
        .enumerate()
        .map(|(ordinal, (offset, content, tokens))| {
            let heading_path = paths.at(offset);
            let context = std::iter::once(title.as_str())
                .chain(heading_path.iter().map(String::as_str))
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(" > ");
            Chunk {
                ordinal: ordinal as i32,
                content_hash: content_hash(&embedding_text(&context, content)),
                content: content.to_string(),
                shingles: super::shingles::sampled(content),
                token_count: tokens as i32,
                context,
                heading_path,
                start_offset: offset as i32,
                end_offset: (offset + content.len()) as i32,
            }
        })
        .collect()
}

/// What is embedded for a chunk: its context line, then its text.
pub fn embedding_text(context: &str, content: &str) -> String {
    if context.is_empty() { content.to_string() } else { format!("{context}\n\n{content}") }
}

/// A title as words: an uploaded file's name (`ch09-02-recoverable-errors.html`)
/// loses its extension and separators, which full-text search would otherwise
/// keep as one opaque token.
fn readable_title(title: &str) -> String {
    let stem = match title.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty() && (1..=5).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            stem
        }
        _ => title,
    };
    if stem.contains(' ') { stem.to_string() } else { stem.replace(['-', '_'], " ") }
}

/// Runs `split` on each segment of `text`: (offset, chunk, tokens), with
/// offsets into the whole text.
fn split_segments<'t>(
    text: &'t str,
    split: impl Fn(&'t str) -> Vec<(usize, &'t str, usize)>,
) -> Vec<(usize, &'t str, usize)> {
    segments(text, SEGMENT_BYTES)
        .into_iter()
        .flat_map(|(start, segment)| {
            split(segment).into_iter().map(move |(offset, piece, tokens)| (start + offset, piece, tokens))
        })
        .collect()
}

/// Cuts `text` into consecutive (offset, segment) pieces of at most `max` bytes
/// each (past a char boundary when one character is larger), cutting in the
/// second half of each window before a Markdown heading, else after a blank
/// line, a line, a sentence or a space, else at any character boundary.
fn segments(text: &str, max: usize) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    while text.len() - start > max {
        let window_end = text.floor_char_boundary(start + max);
        let window = &text[start..window_end];
        let half = window.len() / 2;
        let cut = [
            window.rfind("\n#").map(|i| i + 1),
            window.rfind("\n\n").map(|i| i + 2),
            window.rfind('\n').map(|i| i + 1),
            window.rfind(". ").map(|i| i + 2),
            window.rfind(' ').map(|i| i + 1),
        ]
        .into_iter()
        .flatten()
        .find(|&cut| cut > half)
        .unwrap_or(window.len());
        let cut = if cut == 0 { text.ceil_char_boundary(start + 1) - start } else { cut };
        out.push((start, &text[start..start + cut]));
        start += cut;
    }
    if start < text.len() {
        out.push((start, &text[start..]));
    }
    out
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

/// The heading path at each chunk's offset, for offsets given in increasing
/// order: one pass over the headings for all chunks, not one per chunk.
struct HeadingPaths<'a> {
    headings: &'a [(usize, usize, String)],
    next: usize,
    stack: Vec<(usize, &'a str)>,
}

impl<'a> HeadingPaths<'a> {
    fn new(headings: &'a [(usize, usize, String)]) -> Self {
        Self { headings, next: 0, stack: Vec::new() }
    }

    fn at(&mut self, offset: usize) -> Vec<String> {
        while let Some((at, level, title)) = self.headings.get(self.next)
            && *at <= offset
        {
            while self.stack.last().is_some_and(|(l, _)| *l >= *level) {
                self.stack.pop();
            }
            self.stack.push((*level, title));
            self.next += 1;
        }
        self.stack.iter().map(|(_, t)| t.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::tokens::count_tokens;

    #[test]
    fn chunks_stay_within_the_token_budget_and_cover_the_text() {
        let text = "Sentence number one is here. ".repeat(400);
        let chunks = chunk(&text, false, ChunkSettings { max_tokens: 100, overlap_tokens: 10 }, "");
        assert!(chunks.len() > 5);
        for c in &chunks {
            assert!(c.token_count <= 100, "{}", c.token_count);
            assert_eq!(c.token_count as usize, count_tokens(&c.content));
            assert_eq!(&text[c.start_offset as usize..c.end_offset as usize], c.content);
        }
        assert_eq!(chunks.last().unwrap().end_offset as usize, text.trim_end().len());
    }

    #[test]
    fn markdown_chunks_carry_their_heading_path() {
        let text = "# Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n### Linux\n\nUse apt.\n\n## Usage\n\nCall it.\n";
        let chunks = chunk(text, true, ChunkSettings { max_tokens: 8, overlap_tokens: 0 }, "");
        let linux = chunks.iter().find(|c| c.content.contains("Use apt")).unwrap();
        assert_eq!(linux.heading_path, ["Guide", "Install", "Linux"]);
        let usage = chunks.iter().find(|c| c.content.contains("Call it")).unwrap();
        assert_eq!(usage.heading_path, ["Guide", "Usage"]);
    }

    #[test]
    fn a_chunk_is_embedded_under_its_title_and_headings_but_returned_as_itself() {
        let text = "# Errors\n\n## The ? operator\n\nIt returns early with the Err value.\n";
        let chunks =
            chunk(text, true, ChunkSettings { max_tokens: 10, overlap_tokens: 0 }, "ch09-02-recoverable-errors.html");
        let last = chunks.last().unwrap();
        assert_eq!(last.context, "ch09 02 recoverable errors > Errors > The ? operator");
        assert_eq!(last.content, "It returns early with the Err value.");
        assert_eq!(last.content_hash, content_hash(&embedding_text(&last.context, &last.content)));
        let retitled = chunk(text, true, ChunkSettings { max_tokens: 10, overlap_tokens: 0 }, "Error handling");
        assert_eq!(retitled.last().unwrap().context, "Error handling > Errors > The ? operator");
        assert_ne!(retitled.last().unwrap().content_hash, last.content_hash, "another context is another embedding");
    }

    #[test]
    fn segments_cover_the_text_in_order_and_prefer_structural_boundaries() {
        let text = format!("{}\n\n# Next\n\n{}", "word ".repeat(30), "x".repeat(700));
        let parts = segments(&text, 256);
        let mut expected_start = 0;
        for (start, part) in &parts {
            assert_eq!(*start, expected_start);
            assert!(part.len() <= 256 || part.chars().count() == 1, "{}", part.len());
            expected_start += part.len();
        }
        assert_eq!(expected_start, text.len());
        assert!(parts[1].1.starts_with("# Next"), "cut before the heading: {:?}", parts[1].1);
        // Multi-byte characters are never split.
        let wide = "é".repeat(1000);
        assert!(segments(&wide, 101).iter().all(|(_, p)| p.len() <= 101));
    }

    #[test]
    fn a_long_document_without_whitespace_is_chunked_whole() {
        let text = "abcdefghij".repeat(20_000);
        let chunks = chunk(&text, false, ChunkSettings::default(), "");
        let covered: usize = chunks.iter().map(|c| c.content.len()).sum();
        assert!(covered >= text.len(), "{covered} of {}", text.len());
        assert_eq!((chunks[0].start_offset, chunks.last().unwrap().end_offset as usize), (0, text.len()));
        assert!(chunks.iter().all(|c| c.token_count <= 400));
    }

    #[test]
    fn the_slice_counter_cuts_exactly_where_exact_counting_would() {
        struct Exact;
        impl text_splitter::ChunkSizer for Exact {
            fn size(&self, chunk: &str) -> usize {
                count_tokens(chunk)
            }
        }
        let section = "Ownership moves a value; borrowing lends it. `let r = &v;` takes a reference. ";
        let text = (0..40)
            .map(|i| format!("## Part {i}\n\n{}\n\n```rust\nfn f{i}() {{}}\n```\n\n", section.repeat(i % 9 + 1)))
            .collect::<String>();
        for max_tokens in [3, 40, 400] {
            let config = || ChunkConfig::new(max_tokens).with_overlap(max_tokens / 4).unwrap();
            let sliced: Vec<_> =
                MarkdownSplitter::new(config().with_sizer(SliceCounter::new(&text))).chunk_indices(&text).collect();
            let exact: Vec<_> = MarkdownSplitter::new(config().with_sizer(Exact)).chunk_indices(&text).collect();
            assert_eq!(sliced, exact, "max_tokens {max_tokens}");
        }
    }

    #[test]
    fn code_fences_are_not_headings() {
        let text = "# Real\n\n```sh\n# not a heading\n```\n";
        assert_eq!(headings(text).len(), 1);
    }

    #[test]
    fn identical_text_hashes_identically() {
        let a = chunk("Same words.", false, ChunkSettings::default(), "notes.txt");
        let b = chunk("Same words.", false, ChunkSettings::default(), "notes.txt");
        assert_eq!(a[0].content_hash, b[0].content_hash);
    }
}

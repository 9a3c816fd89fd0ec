//! Token counting, as OpenAI's current models count (cl100k_base): prompt and
//! context budgets, embedding batches, chunk sizes. A leaf: it imports nothing
//! of stolid's, so the model gateway, chunking and prompt building all share it.

/// Longest whitespace-free run counted in one piece. BPE merging is quadratic in
/// the length of a piece, so one pathological "word" (a 300 kB line of
/// box-drawing characters, a base64 blob) would otherwise stall a worker for minutes.
const MAX_RUN_CHARS: usize = 256;

/// Tokens as OpenAI's current models count them (cl100k_base); close enough for
/// budgets and batching with other providers. Very long runs without whitespace
/// are counted in slices, which can overcount them slightly, never undercount much.
///
/// Counted with `bpe-openai` (GitHub's linear-time BPE), not `tiktoken-rs`:
/// chunking asks for thousands of counts per document, and tiktoken's regex
/// cache pool made that half of a worker's CPU. The counts are the same (a
/// test checks them against tiktoken).
pub fn count_tokens(text: &str) -> usize {
    count_tokens_up_to(text, usize::MAX)
}

/// [`count_tokens`], but it stops once the count passes `limit` and then
/// returns `limit + 1`: the chunker asks "does this fit?" of many candidates
/// far larger than a chunk, and only the answer matters for those.
pub fn count_tokens_up_to(text: &str, limit: usize) -> usize {
    let tokenizer = bpe_openai::cl100k_base();
    PIECE_COUNTS.with_borrow_mut(|cache| {
        if cache.len() > MAX_CACHED_PIECES {
            cache.clear();
        }
        let mut count = 0usize;
        for piece in tokenizer.split(text) {
            count += piece_count(tokenizer, cache, piece);
            if count > limit {
                return limit.saturating_add(1);
            }
        }
        count
    })
}

/// Pre-tokenized pieces are mostly words, and the same few thousand words
/// recur on every page: a lookup is several times cheaper than encoding one.
const MAX_CACHED_PIECE_BYTES: usize = 24;
const MAX_CACHED_PIECES: usize = 200_000;

thread_local! {
    static PIECE_COUNTS: std::cell::RefCell<rustc_hash::FxHashMap<Box<str>, usize>> = Default::default();
}

fn piece_count(
    tokenizer: &bpe_openai::Tokenizer,
    cache: &mut rustc_hash::FxHashMap<Box<str>, usize>,
    piece: &str,
) -> usize {
    if piece.len() > MAX_RUN_CHARS {
        let chars: Vec<char> = piece.chars().collect();
        return chars
            .chunks(MAX_RUN_CHARS)
            .map(|slice| tokenizer.bpe.count(slice.iter().collect::<String>().as_bytes()))
            .sum();
    }
    if piece.len() > MAX_CACHED_PIECE_BYTES {
        return tokenizer.bpe.count(piece.as_bytes());
    }
    if let Some(count) = cache.get(piece) {
        return *count;
    }
    let count = tokenizer.bpe.count(piece.as_bytes());
    cache.insert(piece.into(), count);
    count
}

/// [`count_tokens`] as a text-splitter chunk sizer for chunks of at most
/// `max_tokens`. Text-splitter compares sizes with the chunk size and, to
/// probe, with a quarter more; any count past that answers the same, so
/// counting stops there.
pub struct TokenCounter {
    pub max_tokens: usize,
}

impl text_splitter::ChunkSizer for TokenCounter {
    fn size(&self, chunk: &str) -> usize {
        count_tokens_up_to(chunk, self.max_tokens + self.max_tokens / 4 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_match_tiktoken() {
        let samples = [
            "Ownership is Rust's most unique feature, and it has deep implications.",
            "fn main() {\n    let v: Vec<i32> = (0..10).map(|x| x * 2).collect();\n    println!(\"{v:?}\");\n}\n",
            "Les élèves ont lu « Le Petit Prince » à l'école ; 東京は日本の首都です。 Ünïcödé — ✓ 🚀",
            "  leading spaces,\ttabs\n\n\nnewlines   and 12345678901234567890 digits, URLs https://example.com/a?b=c",
        ];
        let tiktoken = tiktoken_rs::cl100k_base_singleton();
        for text in samples {
            assert_eq!(count_tokens(text), tiktoken.encode_ordinary(text).len(), "{text:?}");
        }
    }

    #[test]
    fn counting_up_to_a_limit_stops_just_past_it() {
        let text = "Each value in Rust has an owner, and there can only be one owner at a time. ".repeat(20);
        let exact = count_tokens(&text);
        assert_eq!(count_tokens_up_to(&text, exact), exact);
        assert_eq!(count_tokens_up_to(&text, exact - 1), exact);
        assert_eq!(count_tokens_up_to(&text, 10), 11);
        // Cached word counts answer as the encoder does, however often asked.
        assert_eq!(count_tokens(&text), exact);
    }

    #[test]
    fn pathological_runs_are_counted_in_slices() {
        // Counted whole, this run takes minutes (quadratic BPE merging); sliced,
        // its count stays within a few percent of the exact rate measured on a short run.
        let exact_per_char =
            tiktoken_rs::cl100k_base_singleton().encode_ordinary(&"─".repeat(2_560)).len() as f64 / 2_560.0;
        let counted = count_tokens(&"─".repeat(200_000)) as f64;
        let expected = exact_per_char * 200_000.0;
        assert!((counted - expected).abs() / expected < 0.05, "{counted} vs {expected}");
    }
}

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
    let bpe = bpe_openai::cl100k_base();
    let has_long_run = text.split(char::is_whitespace).any(|run| run.len() > MAX_RUN_CHARS);
    if !has_long_run {
        return bpe.count(text);
    }
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            if word.len() <= MAX_RUN_CHARS {
                return bpe.count(word);
            }
            let chars: Vec<char> = word.chars().collect();
            chars.chunks(MAX_RUN_CHARS).map(|slice| bpe.count(slice.iter().collect::<String>().as_str())).sum()
        })
        .sum()
}

/// [`count_tokens`] as a text-splitter chunk sizer.
pub struct TokenCounter;

impl text_splitter::ChunkSizer for TokenCounter {
    fn size(&self, chunk: &str) -> usize {
        count_tokens(chunk)
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

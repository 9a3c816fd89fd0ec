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
    let tokenizer = bpe_openai::cl100k_base();
    PIECE_COUNTS.with_borrow_mut(|cache| count_pieces(tokenizer, cache, text))
}

/// The tokens of `text`, pre-tokenized afresh.
fn count_pieces(
    tokenizer: &bpe_openai::Tokenizer,
    cache: &mut rustc_hash::FxHashMap<Box<str>, usize>,
    text: &str,
) -> usize {
    tokenizer.split(text).map(|piece| piece_count(tokenizer, cache, piece)).sum()
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
    if cache.len() > MAX_CACHED_PIECES {
        cache.clear();
    }
    let count = tokenizer.bpe.count(piece.as_bytes());
    cache.insert(piece.into(), count);
    count
}

/// [`count_tokens`] of any slice of one text, as text-splitter's chunk sizer.
///
/// Text-splitter sizes many overlapping candidate slices of the text it
/// splits, and pre-tokenizing each of them again was most of the chunker's
/// time. The whole text is pre-tokenized once, with the tokens before each
/// piece boundary; a slice is then counted as (a) its own first pieces, up to
/// the first that ends where a piece of the whole text ends, (b) the whole
/// text's pieces from there, by difference, and (c) its last stretch counted
/// afresh, from the last boundary before its trailing whitespace. The
/// pre-tokenizer has no look-behind, so from a shared boundary a slice splits
/// as the whole text does, except where it sees its own end: the trailing
/// whitespace (`\s+$`, the one-character look-ahead) and the piece its end
/// cuts. The counts are the same as counting the slice alone (a test checks
/// it on thousands of slices).
pub struct SliceCounter<'t> {
    text: &'t str,
    /// At each byte offset where a piece of `text` ends (and at 0): the tokens before it.
    tokens_before: Vec<u32>,
}

const NOT_A_BOUNDARY: u32 = u32::MAX;

impl<'t> SliceCounter<'t> {
    pub fn new(text: &'t str) -> Self {
        let tokenizer = bpe_openai::cl100k_base();
        let mut tokens_before = vec![NOT_A_BOUNDARY; text.len() + 1];
        tokens_before[0] = 0;
        PIECE_COUNTS.with_borrow_mut(|cache| {
            let (mut end, mut total) = (0usize, 0u32);
            for piece in tokenizer.split(text) {
                end += piece.len();
                total += piece_count(tokenizer, cache, piece) as u32;
                tokens_before[end] = total;
            }
        });
        Self { text, tokens_before }
    }

    pub fn count(&self, slice: &str) -> usize {
        let start = (slice.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        if start > self.text.len() || self.text.len() - start < slice.len() {
            return count_tokens(slice); // not a slice of this text
        }
        let end = start + slice.len();
        let tokenizer = bpe_openai::cl100k_base();
        PIECE_COUNTS.with_borrow_mut(|cache| {
            let mut count = 0usize;
            let mut shared = start;
            if self.tokens_before[start] == NOT_A_BOUNDARY {
                for piece in tokenizer.split(slice) {
                    shared += piece.len();
                    count += piece_count(tokenizer, cache, piece);
                    if self.tokens_before[shared] != NOT_A_BOUNDARY {
                        break;
                    }
                }
                if shared == end {
                    return count;
                }
            }
            let trailing_space = slice.len() - slice.trim_end().len();
            let mut tail = (end - trailing_space).max(shared);
            while self.tokens_before[tail] == NOT_A_BOUNDARY {
                tail -= 1;
            }
            count += (self.tokens_before[tail] - self.tokens_before[shared]) as usize;
            count + count_pieces(tokenizer, cache, &self.text[tail..end])
        })
    }
}

impl text_splitter::ChunkSizer for SliceCounter<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.count(chunk)
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
    fn any_slice_counts_as_counting_it_alone() {
        // Prose, code, numbers, contractions, runs of spaces and newlines (CRLF too), other scripts.
        let text = format!(
            "{}{}",
            "# Ownership\n\nEach value in Rust has an owner.  There can only be one owner at a time; it's dropped \
             when they'll go out of scope.\r\n\r\n    let s1 = String::from(\"hello\");\n\tlet n = 1234567;   \n\n\n\
             * Ünïcödé — 東京は日本の首都です。 ✓ 🚀   ",
            "word ".repeat(40)
        );
        let counter = SliceCounter::new(&text);
        let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let (a, b) = (boundaries[next(boundaries.len())], boundaries[next(boundaries.len())]);
            let slice = &text[a.min(b)..a.max(b)];
            assert_eq!(counter.count(slice), count_tokens(slice), "{slice:?}");
        }
        // Trimmed slices, as text-splitter asks for them.
        for &a in &boundaries {
            let slice = text[a..].trim();
            assert_eq!(counter.count(slice), count_tokens(slice), "{slice:?}");
        }
        assert_eq!(counter.count("not from the text"), count_tokens("not from the text"));
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

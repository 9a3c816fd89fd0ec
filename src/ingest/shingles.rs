//! Word shingles: how stolid recognises the same passage in two documents
//! whose chunks are cut differently (a book's chapter and its all-in-one print
//! page, a mirrored copy, a concatenated export).
//!
//! A shingle is a run of [`SHINGLE_WORDS`] consecutive words, lower-cased,
//! punctuation and markup dropped, hashed to 64 bits. Two texts share a passage
//! when a large part of the shorter one's shingles occur in the other
//! ([`containment`]): unlike a hash of the whole chunk, this survives
//! different chunk boundaries, headings and whitespace.
//!
//! Every chunk stores a *sample* of its shingles ([`sampled`]): those whose
//! hash is divisible by [`SAMPLE_ONE_IN`]. The sample is chosen by value, not
//! by position, so a shingle two documents share is sampled in both, and
//! shares measured on samples estimate shares of the whole (Broder's
//! mod-sampling). The samples are what indexing compares across a collection
//! to recognise aggregate documents, and what search looks up to send a
//! citation to the most specific page.
//!
//! The hash is this module's own (FNV-1a per word, then a SplitMix64 finish
//! per shingle): stored samples must not change with a Rust or crate release.

/// Words per shingle: long enough that stock phrases ("in this chapter we
/// will") do not make two different passages look alike.
pub const SHINGLE_WORDS: usize = 8;

/// One shingle in this many is kept in a chunk's stored sample: about 19 of a
/// 400-token chunk's ~300 shingles, enough to find where a passage also
/// occurs, at ~150 bytes per chunk.
pub const SAMPLE_ONE_IN: u64 = 16;

/// The shingles of `text`, every one, sorted and distinct (so that two sets
/// are compared in one merge, without hashing them again). A text shorter than
/// a shingle is one shingle of all its words; a text without words has none.
pub fn shingles(text: &str) -> Vec<u64> {
    let words: Vec<u64> = words(text).map(word_hash).collect();
    if words.is_empty() {
        return Vec::new();
    }
    let mut all: Vec<u64> = words.windows(SHINGLE_WORDS.min(words.len())).map(shingle_hash).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The stored sample of `text`'s shingles: those divisible by
/// [`SAMPLE_ONE_IN`], distinct and sorted, as Postgres `bigint`s.
pub fn sampled(text: &str) -> Vec<i64> {
    let mut kept: Vec<i64> = shingles(text).into_iter().filter(|h| is_sampled(*h)).map(|h| h as i64).collect();
    kept.sort_unstable();
    kept
}

pub fn is_sampled(hash: u64) -> bool {
    hash.is_multiple_of(SAMPLE_ONE_IN)
}

/// How much of the smaller set the larger holds, 0 to 1 (0 when either is
/// empty): 1 when one passage contains the other, whatever else surrounds it.
/// Both sorted and distinct, as [`shingles`] makes them.
pub fn containment(a: &[u64], b: &[u64]) -> f64 {
    if a.len() <= b.len() { contained(a, b) } else { contained(b, a) }
}

/// How much of `part` occurs in `whole`, 0 to 1 (0 when `part` is empty).
/// Both sorted and distinct, as [`shingles`] makes them.
pub fn contained(part: &[u64], whole: &[u64]) -> f64 {
    if part.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut shared) = (0, 0, 0usize);
    while i < part.len() && j < whole.len() {
        match part[i].cmp(&whole[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                i += 1;
                j += 1;
            }
        }
    }
    shared as f64 / part.len() as f64
}

/// Words as shingles see them: runs of letters and digits (hashed lower-cased).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

/// FNV-1a over the word's lower-cased UTF-8, without allocating it.
fn word_hash(word: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut buffer = [0u8; 4];
    word.chars()
        .flat_map(char::to_lowercase)
        .fold(OFFSET, |h, c| c.encode_utf8(&mut buffer).bytes().fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME)))
}

fn shingle_hash(words: &[u64]) -> u64 {
    let folded = words.iter().fold(0u64, |h, w| h.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(*w));
    splitmix64(folded)
}

/// SplitMix64's finaliser: every input bit moves every output bit, so the low
/// bits that decide sampling are as random as the rest.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSAGE: &str = "Rust's ownership rules: each value in Rust has an owner. There can only be one owner \
        at a time. When the owner goes out of scope, the value will be dropped. Ownership is a set of rules \
        that govern how a Rust program manages memory.";

    #[test]
    fn the_same_passage_cut_and_formatted_differently_is_contained() {
        let chapter = shingles(PASSAGE);
        let print_page = shingles(&format!(
            "# The Rust Programming Language\n\nEarlier text about cargo and crates, unrelated to this.\n\n\
             ## Ownership\n\n{}\n\nLater text about borrowing and references follows here.",
            PASSAGE.replace(". ", ".\n").to_uppercase()
        ));
        assert_eq!(containment(&chapter, &print_page), 1.0);
        let other = shingles(
            "Each value in a Vec is stored next to the others in memory, and a vector can only store \
             values of the same type; use an enum to store several types.",
        );
        assert_eq!(containment(&chapter, &other), 0.0, "shared stock words are not a shared passage");
    }

    #[test]
    fn half_a_passage_is_half_contained() {
        let words: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let whole = shingles(&words.join(" "));
        let later_half = shingles(&words[100..].join(" "));
        assert_eq!(containment(&whole, &later_half), 1.0);
        // 50 shared words of 150 and 100: 43 shared shingles of the shorter's 93.
        let (front, back) = (shingles(&words[..150].join(" ")), shingles(&words[100..].join(" ")));
        let share = containment(&front, &back);
        assert!((share - 43.0 / 93.0).abs() < 1e-9, "{share}");
    }

    #[test]
    fn short_and_empty_texts() {
        assert_eq!(shingles("only three words").len(), 1);
        assert!(shingles(" -- ").is_empty());
        assert_eq!(containment(&shingles(""), &shingles(PASSAGE)), 0.0);
        assert_eq!(containment(&shingles("Only three words!"), &shingles("only three words")), 1.0);
    }

    #[test]
    fn samples_are_chosen_by_value_so_shared_shingles_are_sampled_in_both() {
        let words: Vec<String> = (0..5_000).map(|i| format!("word{i}")).collect();
        let text = words.join(" ");
        let sample = sampled(&text);
        let expected = (5_000 - SHINGLE_WORDS + 1) as f64 / SAMPLE_ONE_IN as f64;
        assert!((sample.len() as f64 - expected).abs() < expected * 0.2, "{} samples, ~{expected}", sample.len());
        let part = sampled(&words[1_000..2_000].join(" "));
        assert!(!part.is_empty());
        assert!(part.iter().all(|h| sample.binary_search(h).is_ok()), "a part's samples are the whole's");
        assert!(sample.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
    }

    #[test]
    fn hashes_are_stable_across_releases() {
        // Stored samples are compared with samples computed later: this value
        // (checked against an independent implementation) must never change.
        assert_eq!(shingle_hash(&["a", "b"].map(word_hash)), 0x2189_8ce3_e685_b891);
        assert_eq!(word_hash("Straße"), word_hash("STRASSE".to_lowercase().replace("ss", "ß").as_str()));
    }
}

//! The same passage, once: folders as users bring them hold text more than
//! once (a book's chapters and its all-in-one print page, mirrored copies,
//! concatenated exports), and a result list that shows a passage twice, or
//! from the 300k-token print page, is no use to a reader.
//!
//! Three steps, after fusion and before reranking:
//! - [`demote`]: hits of aggregate documents (`store::aggregates`) score less;
//! - [`collapse`]: near-duplicate hits of different documents (most of the
//!   smaller one's word shingles in the other, `ingest::shingles`) are folded
//!   into one, shown from the most specific document, the others listed in
//!   `also_in`;
//! - [`cite_specific_pages`]: a hit still from an aggregate document is
//!   replaced by the chunk of a non-aggregate document that holds its passage,
//!   found through the stored shingle samples, when there is one.
//!
//! Compared on the candidates' text, not on stored signatures: the candidates
//! are few (tens), their text is at hand, and a chunk's full set of shingles
//! tells overlap far better than its sample.

use std::collections::HashSet;

use crate::ingest::shingles::{self, contained, containment};
use crate::store::search::{AlsoIn, Hit, Scope};

/// Two passages are the same when at least this share of the shorter one's
/// shingles occur in the other: a chunk cut at other boundaries still shares
/// well over half of its text with the copy that holds it.
pub const NEAR_DUPLICATE: f64 = 0.5;

/// A copy is the more specific when its document is at least this many times
/// shorter than the better-ranked copy's.
const MORE_SPECIFIC: i64 = 4;

/// Rows read when looking up where aggregate hits' passages also occur.
const HOLDING_ROWS: i64 = 200;

/// Multiplies the scores of aggregate documents' hits by `factor` (0 to 1)
/// and orders the hits again, ties kept in their order.
pub fn demote(hits: &mut [Hit], factor: f64) {
    if factor >= 1.0 || !hits.iter().any(|h| h.aggregate) {
        return;
    }
    for hit in hits.iter_mut().filter(|h| h.aggregate) {
        hit.score *= factor;
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
}

/// Folds near-duplicate hits of different documents into one, in rank order:
/// each hit joins the first group holding a near-duplicate of it and no chunk
/// of its own document (two chunks of one document are two passages), else
/// starts a group. A group is shown where its best hit ranked, with that
/// hit's score, from its most specific copy among those that hold the best
/// hit's passage (most of its shingles: a short page folded into a long chunk
/// does not stand for it): not from an aggregate document when another copy
/// is not; then from the best-ranked copy, unless a copy's document is at
/// least [`MORE_SPECIFIC`] times shorter (a chapter against an unmarked
/// concatenation), when the shortest is shown. Copies of about the same size
/// (a translation that kept the code, a mirrored version) keep the ranking's
/// choice. The other copies are listed in `also_in`.
pub fn collapse(hits: Vec<Hit>) -> Vec<Hit> {
    let sets: Vec<Vec<u64>> = hits.iter().map(|h| shingles::shingles(&h.content)).collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..hits.len() {
        let joins = groups.iter().position(|group| {
            group.iter().all(|&j| hits[j].document_id != hits[i].document_id)
                && group.iter().any(|&j| containment(&sets[i], &sets[j]) >= NEAR_DUPLICATE)
        });
        match joins {
            Some(g) => groups[g].push(i),
            None => groups.push(vec![i]),
        }
    }
    let mut slots: Vec<Option<Hit>> = hits.into_iter().map(Some).collect();
    groups
        .into_iter()
        .map(|group| {
            let best = group[0];
            let best_score = slots[best].as_ref().map_or(0.0, |h| h.score);
            let hit = |i: usize| slots[i].as_ref().expect("each hit is in one group");
            let holders: Vec<usize> = group
                .iter()
                .copied()
                .filter(|&i| i == best || contained(&sets[best], &sets[i]) >= NEAR_DUPLICATE)
                .collect();
            let pool: Vec<usize> = match holders.iter().copied().filter(|&i| !hit(i).aggregate).collect::<Vec<_>>() {
                plain if !plain.is_empty() => plain,
                _ => holders,
            };
            let first = pool[0];
            let shortest = *pool.iter().min_by_key(|&&i| (hit(i).document_tokens, i)).expect("not empty");
            let much_shorter =
                i64::from(hit(shortest).document_tokens) * MORE_SPECIFIC <= i64::from(hit(first).document_tokens);
            let shown = if much_shorter { shortest } else { first };
            let mut hit = slots[shown].take().expect("each hit is in one group");
            for i in group.into_iter().filter(|&i| i != shown) {
                let copy = slots[i].take().expect("each hit is in one group");
                hit.also_in.push(AlsoIn { document_id: copy.document_id, title: copy.title, chunk_id: copy.chunk_id });
                hit.also_in.extend(copy.also_in);
            }
            hit.score = best_score;
            hit
        })
        .collect()
}

/// Sends hits that are still from aggregate documents to the most specific
/// page holding their passage: among the chunks of non-aggregate documents in
/// the scope and the hit's collection that share shingle samples with it, the
/// one that holds most of the hit's text (at least [`NEAR_DUPLICATE`] of its shingles),
/// shorter documents first on a tie. The hit keeps its place and score; the
/// aggregate document goes to `also_in`. A page already shown is not shown
/// twice: the hit folds into it. One query for all of them.
pub async fn cite_specific_pages(db: &sqlx::PgPool, scope: &Scope, hits: Vec<Hit>) -> sqlx::Result<Vec<Hit>> {
    let sets = aggregate_shingles(&hits);
    let samples: Vec<i64> = sets
        .iter()
        .flatten()
        .flatten()
        .filter(|h| shingles::is_sampled(**h))
        .map(|h| *h as i64)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if samples.is_empty() {
        return Ok(hits);
    }
    let holders = crate::store::search::holding_any(db, scope, &samples, HOLDING_ROWS).await?;
    Ok(replace_with_specific(hits, sets, holders))
}

/// The shingles of each aggregate hit's text (`None` for the others).
fn aggregate_shingles(hits: &[Hit]) -> Vec<Option<Vec<u64>>> {
    hits.iter().map(|h| h.aggregate.then(|| shingles::shingles(&h.content))).collect()
}

/// [`cite_specific_pages`] once the chunks holding the samples are read;
/// `sets` are the hits' [`aggregate_shingles`].
fn replace_with_specific(hits: Vec<Hit>, sets: Vec<Option<Vec<u64>>>, holders: Vec<Hit>) -> Vec<Hit> {
    let holder_sets: Vec<Vec<u64>> = holders.iter().map(|h| shingles::shingles(&h.content)).collect();
    let mut out: Vec<Hit> = Vec::with_capacity(hits.len());
    for (hit, set) in hits.into_iter().zip(sets) {
        let specific = if let Some(set) = set {
            holders
                .iter()
                .zip(&holder_sets)
                .filter(|(holder, _)| holder.collection == hit.collection && holder.document_id != hit.document_id)
                .map(|(holder, holder_set)| (holder, contained(&set, holder_set)))
                .filter(|(_, share)| *share >= NEAR_DUPLICATE)
                .max_by(|(a, sa), (b, sb)| sa.total_cmp(sb).then(b.document_tokens.cmp(&a.document_tokens)))
                .map(|(holder, _)| holder.clone())
        } else {
            None
        };
        let Some(mut specific) = specific else {
            out.push(hit);
            continue;
        };
        specific.score = hit.score;
        specific.also_in = hit.also_in;
        specific.also_in.retain(|a| a.document_id != specific.document_id);
        specific.also_in.insert(0, AlsoIn { document_id: hit.document_id, title: hit.title, chunk_id: hit.chunk_id });
        match out.iter_mut().find(|shown| shown.chunk_id == specific.chunk_id) {
            Some(shown) => {
                let known: HashSet<_> = shown.also_in.iter().map(|a| a.chunk_id).collect();
                shown.also_in.extend(specific.also_in.into_iter().filter(|a| !known.contains(&a.chunk_id)));
            }
            None => out.push(specific),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    const OWNERSHIP: &str = "Each value in Rust has an owner. There can only be one owner at a time. When the owner \
        goes out of scope, the value will be dropped. Ownership is a set of rules that govern how a Rust program \
        manages memory. Some languages have garbage collection that regularly looks for no-longer-used memory.";
    const VECTORS: &str = "Vectors allow you to store more than one value in a single data structure that puts \
        all the values next to each other in memory. Vectors can only store values of the same type. They are \
        useful when you have a list of items, such as the lines of text in a file.";

    fn hit(doc: u128, chunk: u128, content: &str, aggregate: bool, document_tokens: i32, score: f64) -> Hit {
        Hit {
            chunk_id: Uuid::from_u128(chunk),
            document_id: Uuid::from_u128(doc),
            title: format!("doc {doc}"),
            collection: "book".into(),
            content: content.into(),
            heading_path: vec![],
            start_offset: 0,
            end_offset: 0,
            token_count: 0,
            score,
            also_in: vec![],
            aggregate,
            document_tokens,
        }
    }

    /// [`replace_with_specific`] as [`cite_specific_pages`] calls it.
    fn cite(hits: Vec<Hit>, holders: Vec<Hit>) -> Vec<Hit> {
        let sets = aggregate_shingles(&hits);
        replace_with_specific(hits, sets, holders)
    }

    fn chunks(hits: &[Hit]) -> Vec<u128> {
        hits.iter().map(|h| h.chunk_id.as_u128()).collect()
    }

    #[test]
    fn a_passage_from_the_print_page_and_its_chapter_is_shown_once_from_the_chapter() {
        let print_page = format!("# Ownership\n\n{OWNERSHIP}\n\nWhat follows is about references and borrowing.");
        let hits = vec![
            hit(1, 10, &print_page, false, 300_000, 0.9),
            hit(2, 20, VECTORS, false, 4_000, 0.8),
            hit(3, 30, OWNERSHIP, false, 3_000, 0.7),
        ];
        let collapsed = collapse(hits);
        assert_eq!(chunks(&collapsed), [30, 20], "the chapter's copy, where the print page ranked");
        assert_eq!(collapsed[0].score, 0.9);
        assert_eq!(
            collapsed[0].also_in,
            [AlsoIn { document_id: Uuid::from_u128(1), title: "doc 1".into(), chunk_id: Uuid::from_u128(10) }]
        );
        assert!(collapsed[1].also_in.is_empty());
    }

    #[test]
    fn two_passages_of_one_document_are_never_folded_together() {
        // A print-page chunk spanning two chunks of a chapter folds the first
        // only; it stays shown itself, as neither chunk holds most of it.
        let print_page = format!("{OWNERSHIP} {VECTORS}");
        let hits = vec![
            hit(1, 10, &print_page, true, 300_000, 0.9),
            hit(3, 30, OWNERSHIP, false, 3_000, 0.8),
            hit(3, 31, VECTORS, false, 3_000, 0.7),
        ];
        let collapsed = collapse(hits);
        assert_eq!(chunks(&collapsed), [10, 31]);
        assert_eq!(collapsed[0].also_in[0].chunk_id, Uuid::from_u128(30));
    }

    #[test]
    fn a_short_page_inside_a_long_best_hit_does_not_stand_for_it() {
        let long = format!("{VECTORS} {OWNERSHIP} {}", VECTORS.to_uppercase().replace("VECTORS", "ARRAYS"));
        let hits = vec![hit(1, 10, &long, true, 300_000, 0.9), hit(3, 30, OWNERSHIP, false, 3_000, 0.8)];
        let collapsed = collapse(hits);
        assert_eq!(chunks(&collapsed), [10], "folded, shown from the chunk that matched");
        assert_eq!(collapsed[0].also_in[0].chunk_id, Uuid::from_u128(30));
        let kept = cite(collapsed, vec![hit(3, 30, OWNERSHIP, false, 3_000, 0.0)]);
        assert_eq!(chunks(&kept), [10], "nor is the hit sent to it");
    }

    #[test]
    fn copies_of_about_the_same_size_keep_the_rankings_choice() {
        let hits = vec![hit(1, 10, OWNERSHIP, false, 3_500, 0.9), hit(2, 20, OWNERSHIP, false, 3_000, 0.8)];
        assert_eq!(chunks(&collapse(hits)), [10], "a translation a little shorter is not more specific");
        let hits = vec![hit(1, 10, OWNERSHIP, false, 12_000, 0.9), hit(2, 20, OWNERSHIP, false, 3_000, 0.8)];
        assert_eq!(chunks(&collapse(hits)), [20], "four times shorter is");
    }

    #[test]
    fn an_aggregate_copy_yields_to_a_larger_page_that_is_not_one() {
        let hits = vec![hit(1, 10, OWNERSHIP, false, 9_000, 0.9), hit(2, 20, OWNERSHIP, true, 5_000, 0.8)];
        assert_eq!(chunks(&collapse(hits)), [10]);
    }

    #[test]
    fn demotion_reorders_aggregates_below_and_one_turns_it_off() {
        let mut hits = vec![hit(1, 10, OWNERSHIP, true, 9_000, 0.9), hit(2, 20, VECTORS, false, 5_000, 0.6)];
        demote(&mut hits, 1.0);
        assert_eq!(chunks(&hits), [10, 20]);
        demote(&mut hits, 0.5);
        assert_eq!(chunks(&hits), [20, 10]);
        assert!((hits[1].score - 0.45).abs() < 1e-12);
    }

    #[test]
    fn an_aggregate_hit_is_sent_to_the_page_that_holds_its_passage() {
        let print_chunk = format!("{OWNERSHIP} And then some words that the chapter splits differently.");
        let hits = vec![hit(1, 10, &print_chunk, true, 300_000, 0.9), hit(2, 20, VECTORS, false, 4_000, 0.8)];
        let holders = vec![
            hit(4, 40, "Unrelated text sharing one shingle by chance.", false, 100, 0.0),
            hit(3, 30, OWNERSHIP, false, 3_000, 0.0),
        ];
        let cited = cite(hits, holders);
        assert_eq!(chunks(&cited), [30, 20]);
        assert_eq!(cited[0].score, 0.9);
        assert_eq!(cited[0].also_in[0].chunk_id, Uuid::from_u128(10));
        let other_collection = Hit { collection: "reference".into(), ..hit(3, 30, OWNERSHIP, false, 3_000, 0.0) };
        let kept = cite(vec![hit(1, 10, &print_chunk, true, 300_000, 0.9)], vec![other_collection]);
        assert_eq!(chunks(&kept), [10], "a page of another collection is not where this passage comes from");
    }

    #[test]
    fn a_page_already_shown_absorbs_the_aggregate_hit_sent_to_it() {
        let hits = vec![hit(3, 30, OWNERSHIP, false, 3_000, 0.9), hit(1, 10, OWNERSHIP, true, 300_000, 0.8)];
        let cited = cite(hits, vec![hit(3, 30, OWNERSHIP, false, 3_000, 0.0)]);
        assert_eq!(chunks(&cited), [30]);
        assert_eq!(cited[0].also_in.len(), 1);
    }
}

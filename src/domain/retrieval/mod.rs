//! Retrieval: turn a query into ranked chunks. `vector` (HNSW cosine),
//! `keyword` (Postgres full-text) or `hybrid` (both, fused by a convex
//! combination of their normalised scores), then optionally reranked by the
//! chat model (see [`rerank`]). Used by `/v1/search`, chat, suggest and the agent.
//!
//! The two halves of a hybrid search run side by side, each on a connection of
//! its own held only for its queries: the keyword half is done while the query
//! is still being embedded, and no connection waits on a model.

pub mod duplicates;
pub mod rerank;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::error::{DomainError, Result};
use crate::domain::state::AppState;
use crate::llm::CallContext;
use crate::store::search::{self, Hit, Scope};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Vector,
    Keyword,
    #[default]
    Hybrid,
}

/// The constant of reciprocal rank fusion: 60, as in the original paper.
const RRF_K: f64 = 60.0;

/// The vector list's share of a hybrid score; the keyword list has the rest.
/// Equal shares did best in `make eval` (0.4 to 0.6 all beat rank fusion).
const VECTOR_WEIGHT: f64 = 0.5;

/// The rank whose score normalises to 0 in hybrid fusion, and below which a
/// list adds nothing: a fixed rank, not the list's last, so that the fused
/// order does not depend on how deep the caller asked (normalised over the
/// whole list, `k: 50` ranked the top 5 differently from `k: 8`).
const FUSION_FLOOR_RANK: usize = 20;

/// Keys a metadata filter may name.
pub const MAX_FILTER_KEYS: usize = 16;
/// Values one `in` may list.
pub const MAX_FILTER_IN_VALUES: usize = 100;
/// The whole filter as JSON: every value is matched inside the SQL, so a filter
/// is held to what a person writes, not what a script can send.
pub const MAX_FILTER_BYTES: usize = 4096;

/// Parses a metadata filter: `{"key": value}` for equality, `{"key": {"in": [v1, v2]}}`
/// for membership. Every key must match. Bounded by [`MAX_FILTER_KEYS`],
/// [`MAX_FILTER_IN_VALUES`] and [`MAX_FILTER_BYTES`].
pub fn parse_filter(filter: &serde_json::Value) -> Result<Vec<Vec<serde_json::Value>>> {
    let object = filter.as_object().ok_or_else(|| DomainError::invalid("filter must be a JSON object"))?;
    if object.len() > MAX_FILTER_KEYS {
        return Err(DomainError::invalid(format!("filter names {} keys; at most {MAX_FILTER_KEYS}", object.len())));
    }
    let size = filter.to_string().len();
    if size > MAX_FILTER_BYTES {
        return Err(DomainError::invalid(format!("filter is {size} bytes as JSON; at most {MAX_FILTER_BYTES}")));
    }
    object
        .iter()
        .map(|(key, condition)| match condition {
            serde_json::Value::Object(op) if op.contains_key("in") => {
                let values = op["in"]
                    .as_array()
                    .filter(|v| !v.is_empty() && op.len() == 1)
                    .ok_or_else(|| DomainError::invalid(format!("filter.{key}.in must be a non-empty array")))?;
                if values.len() > MAX_FILTER_IN_VALUES {
                    return Err(DomainError::invalid(format!(
                        "filter.{key}.in lists {} values; at most {MAX_FILTER_IN_VALUES}",
                        values.len()
                    )));
                }
                Ok(values.iter().map(|v| serde_json::json!({ key: v })).collect())
            }
            serde_json::Value::Object(_) => {
                Err(DomainError::invalid(format!("filter.{key}: only equality and `in` are supported")))
            }
            value => Ok(vec![serde_json::json!({ key: value })]),
        })
        .collect()
}

/// The scope of a request: the tenant always, and the collection and metadata
/// filter the caller gave. Every retrieval (search, chat, suggest, agent tools) runs inside it.
pub fn scope(tenant_id: Uuid, collection: Option<String>, filter: Option<&serde_json::Value>) -> Result<Scope> {
    let metadata_any = filter.map(parse_filter).transpose()?.unwrap_or_default();
    Ok(Scope { tenant_id, collection, metadata_any })
}

/// Fuses the vector and keyword lists of a hybrid search: each hit scores
/// `w * v + (1 - w) * k`, where `v` and `k` are its scores normalised within
/// their own list, 1 for the list's best and 0 for its 20th
/// ([`FUSION_FLOOR_RANK`]) and below, or when absent. Hits tied there (none
/// in either list's top 20) are ordered by reciprocal rank fusion.
///
/// Unlike rank fusion, this keeps how far apart the scores are: a passage only
/// one list finds, far ahead in it, beats two weak matches that both lists rank
/// mid-table. On the labelled set (`make eval`) it put the answering page first
/// for about 0.65 of the questions against 0.60 with reciprocal rank fusion,
/// hit@5 0.90 either way and hit@10 0.97 against 0.93.
pub fn score_fusion(vector: Vec<Hit>, keyword: Vec<Hit>, k: usize) -> Vec<Hit> {
    // Per chunk: the hit, its fused score, its rank-fusion score.
    let mut fused: HashMap<Uuid, (Hit, f64)> = HashMap::new();
    for (list, weight) in [(vector, VECTOR_WEIGHT), (keyword, 1.0 - VECTOR_WEIGHT)] {
        let Some(best) = list.first().map(|h| h.score) else { continue };
        let floor = list[list.len().min(FUSION_FLOOR_RANK) - 1].score;
        for (rank, hit) in list.into_iter().enumerate() {
            let normalised = if best > floor { ((hit.score - floor) / (best - floor)).max(0.0) } else { 1.0 };
            let (score, by_rank) = (weight * normalised, 1.0 / (RRF_K + rank as f64 + 1.0));
            fused
                .entry(hit.chunk_id)
                .and_modify(|(h, r)| {
                    h.score += score;
                    *r += by_rank;
                })
                .or_insert((Hit { score, ..hit }, by_rank));
        }
    }
    let mut hits: Vec<(Hit, f64)> = fused.into_values().collect();
    hits.sort_by(|(a, ra), (b, rb)| {
        b.score.total_cmp(&a.score).then(rb.total_cmp(ra)).then(a.chunk_id.cmp(&b.chunk_id))
    });
    hits.into_iter().take(k).map(|(hit, _)| hit).collect()
}

/// Fuses ranked lists whose scores are not comparable (one per embedding model
/// during a re-index): each hit scores the sum of 1 / (60 + rank) over the lists it is in.
pub fn reciprocal_rank_fusion(lists: Vec<Vec<Hit>>, k: usize) -> Vec<Hit> {
    let mut fused: HashMap<Uuid, Hit> = HashMap::new();
    for list in lists {
        for (rank, hit) in list.into_iter().enumerate() {
            let score = 1.0 / (RRF_K + rank as f64 + 1.0);
            fused.entry(hit.chunk_id).and_modify(|h| h.score += score).or_insert(Hit { score, ..hit });
        }
    }
    let mut hits: Vec<Hit> = fused.into_values().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.chunk_id.cmp(&b.chunk_id)));
    hits.truncate(k);
    hits
}

/// How deep each list of a hybrid search is read to return `wanted` hits. A list
/// adds nothing below its [`FUSION_FLOOR_RANK`]th hit, so fusion needs it that
/// deep and no deeper: more would only order hits that neither list ranks, and a
/// deeper keyword list costs more rescoring.
pub fn hybrid_depth(wanted: usize) -> usize {
    wanted.max(FUSION_FLOOR_RANK)
}

pub struct Query<'a> {
    pub text: &'a str,
    pub k: usize,
    pub mode: Mode,
    pub scope: Scope,
    /// Drop vector hits less similar than this (cosine): nearest neighbours always
    /// exist, relevant ones may not. Chat uses it to say "not found" honestly.
    pub min_similarity: Option<f64>,
    /// Let the chat model reorder the best candidates (when the provider has one
    /// and `RERANK_CANDIDATES` is not zero).
    pub rerank: bool,
    /// Rank aggregate documents' passages lower (by `AGGREGATE_DEMOTION`).
    pub demote_aggregates: bool,
}

pub struct Retrieved {
    pub hits: Vec<Hit>,
    /// Whether the reranker's order was applied.
    pub reranked: bool,
    pub timings: Timings,
}

/// Where a search's time went (for the ops signals): the two halves' own
/// queries, and the model calls (query embedding, reranking) they waited for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub vector: Duration,
    pub keyword: Duration,
    pub model: Duration,
}

impl std::ops::AddAssign for Timings {
    fn add_assign(&mut self, other: Self) {
        self.vector += other.vector;
        self.keyword += other.keyword;
        self.model += other.model;
    }
}

/// How many times `wanted` the candidate lists are read first, and at most:
/// duplicates folded at query time leave fewer than were read, and a folder
/// of mirrored copies can fold most of them, so a search that comes up short
/// reads again, as much deeper as the share of distinct passages it found
/// says it needs (with a quarter more), up to [`MAX_DEPTH`] times `wanted`, in
/// at most [`READS`] reads.
const FIRST_DEPTH: usize = 2;
const MAX_DEPTH: usize = 8;
const READS: usize = 3;

pub async fn search(state: &AppState, ctx: &CallContext, query: Query<'_>) -> Result<Retrieved> {
    let rerank = query.rerank && state.config.rerank.candidates > 0 && state.gateway.has_language_model();
    // The reranker sees more candidates than most callers keep.
    let wanted = if rerank { query.k.max(state.config.rerank.candidates) } else { query.k };
    let (mut hits, mut timings, mut depth) = (Vec::new(), Timings::default(), FIRST_DEPTH * wanted);
    for read in 1..=READS {
        let (candidates, exhausted, spent) = candidates(state, ctx, &query, depth).await?;
        timings += spent;
        hits = candidates;
        if query.demote_aggregates {
            duplicates::demote(&mut hits, state.config.aggregate_demotion);
        }
        hits = duplicates::collapse(hits);
        if hits.len() >= wanted || exhausted || read == READS || depth >= MAX_DEPTH * wanted {
            break;
        }
        depth = deeper(depth, wanted, hits.len(), MAX_DEPTH * wanted);
    }
    hits.truncate(wanted);
    let hits = duplicates::cite_specific_pages(&state.db, &query.scope, hits).await?;
    let reranking = Instant::now();
    let (mut hits, reranked) = if rerank { rerank::rerank(state, ctx, query.text, hits).await } else { (hits, false) };
    if rerank {
        timings.model += reranking.elapsed();
    }
    hits.truncate(query.k);
    Ok(Retrieved { hits, reranked, timings })
}

/// How deep to read next when a read of `depth` folded into `distinct`
/// passages and `wanted` are needed: in proportion, a quarter more, deeper
/// than before and no deeper than `max`.
pub fn deeper(depth: usize, wanted: usize, distinct: usize, max: usize) -> usize {
    (depth * wanted * 5).div_ceil(distinct.max(1) * 4).clamp(depth + 1, max.max(depth + 1))
}

/// The candidates of a search, `depth` of each list read (hybrid: at least
/// [`FUSION_FLOOR_RANK`]), fused, without those below `min_similarity`; and
/// whether every list came back shorter than asked (there is nothing deeper).
async fn candidates(
    state: &AppState,
    ctx: &CallContext,
    query: &Query<'_>,
    depth: usize,
) -> Result<(Vec<Hit>, bool, Timings)> {
    let depth = if query.mode == Mode::Hybrid { hybrid_depth(depth) } else { depth } as i64;
    // The halves run side by side: keyword search does not wait for the query
    // embedding, and each half holds a connection only for its own queries.
    let vector = async {
        match query.mode {
            Mode::Keyword => Ok::<_, DomainError>((Vec::new(), HashSet::new(), Timings::default())),
            _ => vector_half(state, ctx, query, depth).await,
        }
    };
    let keyword = async {
        match query.mode {
            Mode::Vector => Ok::<_, DomainError>((Vec::new(), Duration::ZERO)),
            _ => {
                let started = Instant::now();
                let hits = search::keyword(
                    &mut *state.db.acquire().await?,
                    &query.scope,
                    query.text,
                    depth,
                    state.config.keyword_term_postings,
                )
                .await?;
                Ok((hits, started.elapsed()))
            }
        }
    };
    let ((vector_hits, mut too_far, mut timings), (keyword_hits, keyword_time)) = tokio::try_join!(vector, keyword)?;
    timings.keyword = keyword_time;
    let exhausted = vector_hits.len() < depth as usize && keyword_hits.len() < depth as usize;
    // A passage keyword search found stays, however far its vector.
    for hit in &keyword_hits {
        too_far.remove(&hit.chunk_id);
    }
    let mut hits = match query.mode {
        Mode::Vector => vector_hits,
        Mode::Keyword => keyword_hits,
        Mode::Hybrid => score_fusion(vector_hits, keyword_hits, usize::MAX),
    };
    hits.retain(|hit| !too_far.contains(&hit.chunk_id));
    Ok((hits, exhausted, timings))
}

/// The vector half: the query embedded, then the nearest chunks, and those of
/// them less similar than the query's `min_similarity`. These are dropped only
/// after fusion, so that the rest rank as they do without the threshold (chat
/// shows the passages in the order `/v1/search` would). Documents still
/// indexed with an earlier model (a re-index in progress) are searched with the
/// query embedded by that model too, so they stay findable; which models those
/// are is looked up while the current model embeds.
async fn vector_half(
    state: &AppState,
    ctx: &CallContext,
    query: &Query<'_>,
    depth: i64,
) -> Result<(Vec<Hit>, HashSet<Uuid>, Timings)> {
    let gateway = &state.gateway;
    let (model, dims) = (gateway.embedding_model(), gateway.embedding_dimensions());
    let embedding_started = Instant::now();
    let (embedding, others) = tokio::try_join!(
        async { Ok::<_, DomainError>(gateway.embed_query(ctx, model, dims, query.text).await?) },
        async { Ok(search::other_models(&state.db, query.scope.tenant_id, model).await?) },
    )?;
    let mut embedded = vec![(model.to_string(), dims, embedding)];
    for (model, dims) in others {
        let embedding = gateway.embed_query(ctx, &model, dims as usize, query.text).await?;
        embedded.push((model, dims as usize, embedding));
    }
    let model_time = embedding_started.elapsed();
    let searching = Instant::now();
    let (mut lists, mut too_far) = (Vec::with_capacity(embedded.len()), HashSet::new());
    for (model, dims, embedding) in &embedded {
        let hits = search::vector(&state.db, &query.scope, model, *dims, embedding, depth).await?;
        let below = |hit: &&Hit| query.min_similarity.is_some_and(|min| hit.score < min);
        too_far.extend(hits.iter().filter(below).map(|hit| hit.chunk_id));
        lists.push(hits);
    }
    let hits =
        if lists.len() == 1 { lists.pop().unwrap_or_default() } else { reciprocal_rank_fusion(lists, depth as usize) };
    Ok((hits, too_far, Timings { vector: searching.elapsed(), keyword: Duration::ZERO, model: model_time }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(id: u128, score: f64) -> Hit {
        Hit { score, ..hit(id) }
    }

    #[test]
    fn score_fusion_keeps_a_strong_match_of_one_list_above_weak_matches_of_both() {
        // 1 is far ahead in the vector list only; 2 and 3 are middling in both.
        let vector = vec![scored(1, 0.9), scored(2, 0.5), scored(3, 0.45), scored(4, 0.4)];
        let keyword = vec![scored(5, 12.0), scored(2, 7.0), scored(3, 6.5), scored(6, 1.0)];
        let fused = score_fusion(vector.clone(), keyword.clone(), 10);
        let ids: Vec<u128> = fused.iter().map(|h| h.chunk_id.as_u128()).collect();
        assert_eq!(ids[..4], [1, 5, 2, 3], "each list's best first (tied, by id), then the middling pair");
        assert!((fused[0].score - 0.5).abs() < 1e-12, "best of one list, absent from the other");
        let by_rank = reciprocal_rank_fusion(vec![vector, keyword], 10);
        assert_eq!(by_rank[0].chunk_id.as_u128(), 2, "rank fusion prefers the middling match found twice");
        let single = score_fusion(vec![scored(7, 0.3)], vec![], 10);
        assert_eq!(single[0].score, 0.5, "a list of one is its own best");
    }

    #[test]
    fn score_fusion_ranks_the_top_the_same_however_deep_the_lists_are() {
        // A flat vector list (cosine) and a steep keyword list (BM25), in different orders.
        let lists = |depth: usize| {
            let vector = (0..40).map(|i| scored(i, 0.8 - 0.01 * i as f64)).take(depth).collect();
            let keyword = (0..40).map(|r| scored((r * 7) % 40, 12.0 / (r + 1) as f64)).take(depth).collect();
            (vector, keyword)
        };
        let top = |(vector, keyword): (Vec<Hit>, Vec<Hit>)| -> Vec<u128> {
            score_fusion(vector, keyword, 5).iter().map(|h| h.chunk_id.as_u128()).collect()
        };
        assert_eq!(top(lists(20)), [0, 7, 2, 1, 3]);
        assert_eq!(top(lists(40)), [0, 7, 2, 1, 3], "min-max over the whole list put 14 fifth here");
        let deep = score_fusion(lists(40).0, lists(40).1, 40);
        let unranked: Vec<u128> = deep.iter().filter(|h| h.score == 0.0).map(|h| h.chunk_id.as_u128()).collect();
        assert!(unranked.len() > 1, "{unranked:?}");
        let by_rank: Vec<u128> = reciprocal_rank_fusion(vec![lists(40).0, lists(40).1], 40)
            .iter()
            .map(|h| h.chunk_id.as_u128())
            .filter(|id| unranked.contains(id))
            .collect();
        assert_eq!(unranked, by_rank, "below both floors, rank fusion orders them");
    }

    fn hit(id: u128) -> Hit {
        Hit {
            chunk_id: Uuid::from_u128(id),
            document_id: Uuid::nil(),
            title: String::new(),
            collection: String::new(),
            content: String::new(),
            heading_path: vec![],
            start_offset: 0,
            end_offset: 0,
            token_count: 0,
            score: 0.0,
            also_in: vec![],
            aggregate: false,
            document_tokens: 0,
        }
    }

    #[test]
    fn a_short_read_reads_as_much_deeper_as_it_was_short() {
        assert_eq!(deeper(20, 10, 7, 80), 36, "a third of the passages were copies");
        assert_eq!(deeper(20, 10, 9, 80), 28);
        assert_eq!(deeper(20, 10, 1, 80), 80, "no deeper than the cap");
        assert_eq!(deeper(20, 10, 0, 80), 80);
        assert_eq!(deeper(40, 10, 50, 80), 41, "always deeper than before");
    }

    #[test]
    fn fusion_rewards_hits_found_by_both_lists() {
        let fused = reciprocal_rank_fusion(vec![vec![hit(1), hit(2), hit(3)], vec![hit(3), hit(4)]], 10);
        assert_eq!(fused[0].chunk_id, Uuid::from_u128(3), "in both lists beats first in one");
        assert_eq!(fused.len(), 4);
        assert!((fused[0].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
    }

    #[test]
    fn filters_support_equality_and_in() {
        let parsed = parse_filter(&serde_json::json!({"lang": "en", "tier": {"in": ["gold", "silver"]}})).unwrap();
        assert!(parsed.contains(&vec![serde_json::json!({"lang": "en"})]));
        assert!(parsed.contains(&vec![serde_json::json!({"tier": "gold"}), serde_json::json!({"tier": "silver"})]));
        assert!(parse_filter(&serde_json::json!({"n": {"gt": 1}})).is_err());
        assert!(parse_filter(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn filters_are_bounded_in_keys_values_and_size() {
        let values = |n: usize| (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>();
        assert!(parse_filter(&serde_json::json!({"t": {"in": values(MAX_FILTER_IN_VALUES)}})).is_ok());
        let err = parse_filter(&serde_json::json!({"t": {"in": values(MAX_FILTER_IN_VALUES + 1)}})).unwrap_err();
        assert!(err.to_string().contains("at most 100"), "{err}");
        let keys: serde_json::Map<String, serde_json::Value> =
            (0..=MAX_FILTER_KEYS).map(|i| (format!("k{i}"), serde_json::json!(1))).collect();
        assert!(parse_filter(&serde_json::Value::Object(keys)).is_err());
        let long = "x".repeat(MAX_FILTER_BYTES);
        assert!(parse_filter(&serde_json::json!({"t": long})).is_err());
        let long_values: Vec<String> = (0..50).map(|i| format!("{i:0>100}")).collect();
        assert!(parse_filter(&serde_json::json!({"t": {"in": long_values}})).is_err(), "50 values of 100 bytes");
    }
}

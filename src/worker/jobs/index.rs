//! `index_document`: fetch the original from S3, extract, chunk, embed (only
//! what is not already embedded), write the chunks in slices as their vectors
//! arrive, under this attempt's generation, and then switch the document to
//! that generation in one short transaction.
//!
//! Safe under at-least-once delivery and concurrent deletes:
//! - a document already indexed with the current model is skipped;
//! - search and listings show only the generation the document points at, so a
//!   half-written attempt is never seen, and its vectors are reused by the next;
//! - the final write locks the document row first: if the document was deleted
//!   meanwhile, nothing is written (no resurrection; slices written before are
//!   deleted with it); otherwise the other generations are deleted, so two
//!   deliveries leave exactly one set.

use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use pgvector::Vector;
use uuid::Uuid;

use super::JobError;
use crate::domain::state::AppState;
use crate::infra::tokens::count_tokens;
use crate::ingest::{chunk, extract};
use crate::llm::limiter::cap_wait::CapWait;
use crate::llm::{CallContext, LlmError};
use crate::store::{aggregates, chunks, documents};

pub async fn run(
    state: &AppState,
    tenant_id: Uuid,
    document_id: Uuid,
    last_attempt: bool,
    cap_wait: &Arc<CapWait>,
) -> Result<(), JobError> {
    match index(state, tenant_id, document_id, cap_wait).await {
        Ok(()) => Ok(()),
        Err(Failure::OverBudget(exceeded)) => {
            // Nothing is lost: the document waits, `queued` with the reason,
            // and the sweeper sends its job again when there is room.
            let reason = if exceeded.larger_than_limit() {
                format!(
                    "paused: embedding it needs {}, more than the whole {} limit of {}; \
                     indexing resumes when the limit is raised",
                    exceeded.amount(exceeded.needed),
                    exceeded.period,
                    exceeded.amount(exceeded.limit)
                )
            } else {
                format!("paused: {exceeded}; indexing resumes then, or when the limit is raised")
            };
            tracing::info!(reason, "indexing paused by the tenant's budget");
            documents::pause(&state.db, tenant_id, document_id, &reason, exceeded.resets_at)
                .await
                .context("pausing the document")?;
            Ok(())
        }
        Err(Failure::Permanent(reason)) => {
            tracing::warn!(reason, "document cannot be indexed");
            documents::mark_failed(&state.db, tenant_id, document_id, &reason).await.context("marking failed")?;
            Err(JobError::Unprocessable(reason))
        }
        Err(Failure::Transient(err)) => {
            if last_attempt {
                super::give_up(state, tenant_id, document_id, format!("{err:#}")).await.context("marking failed")?;
            }
            Err(JobError::Retry(err))
        }
    }
}

enum Failure {
    /// Retrying cannot help: bad content, exhausted quota.
    Permanent(String),
    /// The tenant's budget has no room for the embeddings until it resets or is raised.
    OverBudget(Box<crate::llm::accounting::budget::Exceeded>),
    Transient(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Transient(err)
    }
}

impl From<crate::infra::blob::StorageError> for Failure {
    fn from(err: crate::infra::blob::StorageError) -> Self {
        Failure::Transient(err.into())
    }
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        // Class 22 (data exception: a character Postgres cannot store, a value
        // out of range) comes from the content itself; another delivery would
        // fail the same way after embedding it all again.
        let data_exception = err.as_database_error().and_then(|e| e.code()).is_some_and(|code| code.starts_with("22"));
        if data_exception {
            Failure::Permanent(format!("the document's content cannot be stored: {err}"))
        } else {
            Failure::Transient(err.into())
        }
    }
}

async fn index(state: &AppState, tenant_id: Uuid, document_id: Uuid, cap_wait: &Arc<CapWait>) -> Result<(), Failure> {
    let gateway = &state.gateway;
    let model = gateway.embedding_model().to_string();
    let Some(doc) = documents::get(&state.db, tenant_id, document_id).await? else {
        tracing::info!("document no longer exists; nothing to do");
        return Ok(());
    };
    if doc.status == documents::DocumentStatus::Indexed && doc.embedding_model.as_deref() == Some(model.as_str()) {
        tracing::info!("already indexed with this model; skipping");
        return Ok(());
    }
    // A message left over (a sweeper's re-send, a redelivery) must not undo a
    // `failed`: only a re-index request retries the document.
    let Some(generation) = documents::start_attempt(&state.db, tenant_id, document_id).await? else {
        tracing::info!("document is failed or gone; not retried unless a re-index is asked");
        return Ok(());
    };
    let Some(bytes) = state.blobs.get(&doc.s3_key).await? else {
        if documents::get(&state.db, tenant_id, document_id).await?.is_none() {
            return Ok(()); // deleted while we looked
        }
        documents::mark_original_missing(&state.db, tenant_id, document_id).await?;
        return Err(Failure::Permanent("the original is missing from S3".into()));
    };
    let format = extract::Format::from_content_type(&doc.content_type)
        .ok_or_else(|| Failure::Permanent(format!("unsupported content type {}", doc.content_type)))?;
    let settings = state.config.chunking;
    let max_text = state.config.worker.max_extracted_bytes;
    let title = doc.title.clone();
    let pieces = tokio::task::spawn_blocking(move || {
        extract::extract(format, &bytes, max_text).map(|e| chunk::chunk(&e.text, e.markdown, settings, &title))
    })
    .await
    .context("chunking task")?
    .map_err(|e| Failure::Permanent(e.to_string()))?;

    // Spend nothing twice: reuse this tenant's vectors for identical chunk text
    // (other documents', or what an earlier attempt at this one got through).
    let hashes: Vec<String> = pieces.iter().map(|c| c.content_hash.clone()).collect();
    let mut known = chunks::embeddings_by_hash(&state.db, tenant_id, &model, &hashes).await?;
    // Each slice embeds the texts first seen in it; later slices reuse them.
    let plan: Vec<(&[chunk::Chunk], Vec<&chunk::Chunk>)> = {
        let mut seen = std::collections::HashSet::new();
        pieces
            .chunks(WRITE_SLICE_CHUNKS)
            .map(|slice| {
                let missing = slice
                    .iter()
                    .filter(|c| !known.contains_key(&c.content_hash) && seen.insert(c.content_hash.as_str()))
                    .collect();
                (slice, missing)
            })
            .collect()
    };
    // The chunker counted every chunk's own tokens already; only the short context line is new.
    let tokens: Vec<Vec<usize>> = plan
        .iter()
        .map(|(_, missing)| missing.iter().map(|c| c.token_count as usize + count_tokens(&c.context) + 1).collect())
        .collect();
    let embedded_count: usize = plan.iter().map(|(_, missing)| missing.len()).sum();
    let mut ctx = CallContext {
        tenant_id: Some(tenant_id),
        request_id: None,
        conversation_id: None,
        endpoint: "worker.index",
        budgeted: embedded_count > 0 && crate::llm::accounting::budget_rows::is_budgeted(&state.db, tenant_id).await?,
        meter: None,
        cap_wait: Some(cap_wait.clone()),
    };
    // The document's embeddings fit the tenant's budget as a whole or not at
    // all: slices reserving one by one would spend a day's budget on part of
    // a document too large for it, and again the next day.
    let total_tokens = tokens.iter().flatten().sum();
    let _reservation = gateway.reserve_embedding(&ctx, total_tokens).await.map_err(embedding_failure)?;
    ctx.budgeted = false;
    // Every slice's inputs go to the batcher at once (it fills requests across
    // documents); the answers are taken in order, and each slice is written as
    // soon as its vectors are in, while the later ones are still being embedded.
    // Built before the stream: a lazily mapped borrow of `plan` would make the job's future not `Send`.
    let requests: Vec<_> = plan
        .iter()
        .zip(tokens)
        .map(|((_, missing), tokens)| {
            let texts: Vec<String> = missing.iter().map(|c| chunk::embedding_text(&c.context, &c.content)).collect();
            let (gateway, ctx) = (gateway.clone(), ctx.clone());
            async move {
                if texts.is_empty() {
                    return Ok(Vec::new());
                }
                gateway.embed_counted(&ctx, &texts, tokens).await.map(|embedded| embedded.vectors)
            }
        })
        .collect();
    let mut answers = futures::stream::iter(requests).buffered(plan.len().max(1));

    let attempt = Attempt {
        tenant_id,
        document_id,
        generation,
        model: &model,
        pieces: &pieces,
        embedded: embedded_count,
        sliced: plan.len() > 1,
    };
    if plan.is_empty() {
        return publish(state, &attempt, &[], Vec::new()).await;
    }
    let last = plan.len() - 1;
    for (i, (slice, missing)) in plan.iter().enumerate() {
        let vectors = answers.next().await.expect("one answer per slice").map_err(embedding_failure)?;
        for (chunk, vector) in missing.iter().zip(vectors) {
            known.insert(chunk.content_hash.clone(), Vector::from(vector));
        }
        let vectors: Vec<Vector> = slice.iter().map(|c| known[&c.content_hash].clone()).collect();
        if i == last {
            return publish(state, &attempt, slice, vectors).await;
        }
        let mut tx = state.db.begin().await?;
        let written = async {
            chunks::open_generation(&mut *tx, document_id, generation).await?;
            chunks::insert(&mut tx, tenant_id, document_id, generation, &model, slice, vectors).await
        };
        match written.await {
            Err(err) if is_foreign_key_violation(&err) => {
                tracing::info!("document deleted during indexing; discarding the result");
                return Ok(());
            }
            written => written?,
        }
        tx.commit().await?;
    }
    unreachable!("the last slice publishes")
}

/// A large document's chunks are written this many at a time as their
/// embeddings arrive, rather than all together after the last one: its row and
/// vector-index inserts then overlap the embedding of the rest, and the
/// document's final step is short.
const WRITE_SLICE_CHUNKS: usize = 128;

fn embedding_failure(err: LlmError) -> Failure {
    match err {
        LlmError::QuotaExhausted(m) => Failure::Permanent(format!("embedding quota exhausted: {m}")),
        LlmError::BudgetExceeded(exceeded) => Failure::OverBudget(exceeded),
        LlmError::InputTooLong { .. } | LlmError::Refused(_) => Failure::Permanent(err.to_string()),
        other => Failure::Transient(other.into()),
    }
}

/// The chunks' document is gone (the insert's reference to it failed).
fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "23503")
}

/// One attempt at indexing a document, as its last step needs it.
struct Attempt<'a> {
    tenant_id: Uuid,
    document_id: Uuid,
    generation: i64,
    model: &'a str,
    pieces: &'a [chunk::Chunk],
    /// How many of the pieces needed a new embedding (the rest were reused).
    embedded: usize,
    /// Earlier slices were committed (and the generation opened) before this step.
    sliced: bool,
}

/// Writes the last slice and makes the attempt's generation the document's,
/// in one transaction that first locks the document row: a document deleted
/// meanwhile gets nothing (no resurrection), and of two deliveries of its job
/// the first to publish wins while the other's chunks are dropped.
async fn publish(
    state: &AppState,
    attempt: &Attempt<'_>,
    last_slice: &[chunk::Chunk],
    vectors: Vec<Vector>,
) -> Result<(), Failure> {
    let Attempt { tenant_id, document_id, generation, model, pieces, embedded, sliced } = *attempt;
    let mut tx = state.db.begin().await?;
    let Some(current) = documents::lock(&mut *tx, tenant_id, document_id).await? else {
        tracing::info!("document deleted during indexing; discarding the result");
        return Ok(());
    };
    if current.status == documents::DocumentStatus::Indexed
        && current.embedding_model.as_deref() == Some(model)
        && current.chunk_generation != generation
    {
        tracing::info!("another delivery of this job indexed the document first; discarding this one's chunks");
        chunks::delete_other_generations(&mut *tx, document_id, current.chunk_generation).await?;
        if sliced {
            chunks::close_generation(&mut *tx, generation).await?;
        }
        tx.commit().await?;
        return Ok(());
    }
    chunks::insert(&mut tx, tenant_id, document_id, generation, model, last_slice, vectors).await?;
    // Only committed earlier slices can have been removed by another delivery;
    // a single slice's rows are the ones just inserted under the row lock.
    if sliced {
        let written = chunks::count_generation(&mut *tx, document_id, generation).await?;
        if written != pieces.len() as i64 {
            // Another delivery published meanwhile (deleting this one's earlier
            // slices) and the document was queued again since: start over.
            return Err(Failure::Transient(anyhow::anyhow!(
                "{written} of this attempt's {} chunks remain; another delivery replaced them",
                pieces.len()
            )));
        }
    }
    chunks::delete_other_generations(&mut *tx, document_id, generation).await?;
    if sliced {
        chunks::close_generation(&mut *tx, generation).await?;
    }
    let tokens: i32 = pieces.iter().map(|c| c.token_count).sum();
    documents::mark_indexed(&mut *tx, document_id, generation, pieces.len() as i32, tokens, model).await?;
    aggregates::mark_stale(&mut *tx, tenant_id, &current.collection).await?;
    tx.commit().await?;
    let reused = pieces.len() - embedded;
    tracing::info!(chunks = pieces.len(), tokens, embeddings_reused = reused, "document indexed");
    // The document is searchable already; if this fails, the sweeper measures.
    crate::domain::documents::measure_aggregates(&state.db, tenant_id, &current.collection).await;
    Ok(())
}

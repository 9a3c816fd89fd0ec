//! `index_document`: fetch the original from S3, extract, chunk, embed (only
//! what is not already embedded), and replace the document's chunks in one
//! transaction.
//!
//! Safe under at-least-once delivery and concurrent deletes:
//! - a document already indexed with the current model is skipped;
//! - the final write locks the document row first: if the document was deleted
//!   meanwhile, nothing is written (no resurrection); otherwise the old chunks are
//!   replaced, so two deliveries leave exactly one set.

use anyhow::Context;
use pgvector::Vector;
use uuid::Uuid;

use super::JobError;
use crate::ingest::{chunk, extract};
use crate::llm::{CallContext, LlmError};
use crate::state::AppState;
use crate::store::{chunks, documents};
use crate::tokens::count_tokens;

pub async fn run(state: &AppState, tenant_id: Uuid, document_id: Uuid, last_attempt: bool) -> Result<(), JobError> {
    match index(state, tenant_id, document_id).await {
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
    OverBudget(Box<crate::llm::budget::Exceeded>),
    Transient(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Transient(err)
    }
}

impl From<crate::blob::StorageError> for Failure {
    fn from(err: crate::blob::StorageError) -> Self {
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

async fn index(state: &AppState, tenant_id: Uuid, document_id: Uuid) -> Result<(), Failure> {
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
    documents::mark_processing(&state.db, tenant_id, document_id).await?;
    let Some(bytes) = state.blobs.get(&doc.s3_key).await? else {
        if documents::get(&state.db, tenant_id, document_id).await?.is_none() {
            return Ok(()); // deleted while we looked
        }
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

    // Spend nothing twice: reuse this tenant's vectors for identical chunk text.
    let hashes: Vec<String> = pieces.iter().map(|c| c.content_hash.clone()).collect();
    let mut known = chunks::embeddings_by_hash(&state.db, tenant_id, &model, &hashes).await?;
    let missing: Vec<&chunk::Chunk> = {
        let mut seen = std::collections::HashSet::new();
        pieces.iter().filter(|c| !known.contains_key(&c.content_hash) && seen.insert(&c.content_hash)).collect()
    };
    let reused = pieces.len() - missing.len();
    if !missing.is_empty() {
        let ctx = CallContext {
            tenant_id: Some(tenant_id),
            request_id: None,
            conversation_id: None,
            endpoint: "worker.index",
            budgeted: crate::store::budgets::is_budgeted(&state.db, tenant_id).await?,
            meter: None,
        };
        // The chunker counted every chunk's own tokens already; only the short context line is new.
        let texts: Vec<String> = missing.iter().map(|c| chunk::embedding_text(&c.context, &c.content)).collect();
        let tokens: Vec<usize> =
            missing.iter().map(|c| c.token_count as usize + count_tokens(&c.context) + 1).collect();
        let embedded = gateway.embed_counted(&ctx, &texts, tokens).await.map_err(|err| match err {
            LlmError::QuotaExhausted(m) => Failure::Permanent(format!("embedding quota exhausted: {m}")),
            LlmError::BudgetExceeded(exceeded) => Failure::OverBudget(exceeded),
            LlmError::InputTooLong { .. } | LlmError::Refused(_) => Failure::Permanent(err.to_string()),
            other => Failure::Transient(other.into()),
        })?;
        for (chunk, vector) in missing.iter().zip(embedded.vectors) {
            known.insert(chunk.content_hash.clone(), Vector::from(vector));
        }
    }
    let vectors: Vec<Vector> = pieces.iter().map(|c| known[&c.content_hash].clone()).collect();

    let mut tx = state.db.begin().await?;
    if documents::lock(&mut *tx, tenant_id, document_id).await?.is_none() {
        tracing::info!("document deleted during indexing; discarding the result");
        return Ok(());
    }
    chunks::replace(&mut tx, tenant_id, document_id, &model, &pieces, vectors).await?;
    let tokens: i32 = pieces.iter().map(|c| c.token_count).sum();
    documents::mark_indexed(&mut *tx, document_id, pieces.len() as i32, tokens, &model).await?;
    tx.commit().await?;
    tracing::info!(chunks = pieces.len(), tokens, embeddings_reused = reused, "document indexed");
    Ok(())
}

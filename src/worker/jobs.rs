//! The jobs workers run, one variant per kind of SQS message. Handlers must be
//! idempotent: SQS delivers at least once.

use std::sync::Arc;

use tracing::Instrument;

use crate::llm::limiter::cap_wait::CapWait;

use crate::domain::state::AppState;
use crate::infra::queue::{Job, Received};
use crate::store::documents;

pub mod index;
pub mod summarize;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another delivery (the redrive policy bounds how many).
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
    /// Can never succeed (e.g. a malformed message): delete it, do not retry.
    #[error("{0}")]
    Unprocessable(String),
    /// Cannot run yet (its tenant's budget is spent): sent again to run after
    /// `delay`, so waiting does not use up the deliveries the redrive policy allows.
    #[error("{reason}")]
    Deferred { delay: std::time::Duration, reason: String },
}

/// After a job was stopped before finishing (shutdown, or its deadline): the
/// document goes back to `queued` with the reason, since the message will be
/// delivered again; on the last delivery the document is marked failed instead.
pub async fn interrupted(state: &AppState, message: &Received, reason: &str, last_attempt: bool) {
    let Ok(Job::IndexDocument { tenant_id, document_id }) = serde_json::from_str(&message.body) else {
        return;
    };
    let result = if last_attempt {
        give_up(state, tenant_id, document_id, reason).await
    } else {
        documents::requeue(&state.db, tenant_id, document_id, Some(reason)).await
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, %document_id, "could not record the interrupted job on its document");
    }
}

/// On the last delivery the queue allows, records on the document why it will
/// not be indexed, before SQS moves the message to the dead-letter queue.
pub async fn give_up(
    state: &AppState,
    tenant_id: uuid::Uuid,
    document_id: uuid::Uuid,
    reason: impl std::fmt::Display,
) -> sqlx::Result<()> {
    let reason = format!("gave up after repeated failures: {reason}");
    documents::mark_failed(&state.db, tenant_id, document_id, &reason).await
}

/// Runs the message's job. `last_attempt` is set on the final delivery before
/// the message is dead-lettered, so the job can record its failure for good.
/// `cap_wait` clocks its embeddings' wait for the fleet's cap.
pub async fn handle(
    state: &AppState,
    message: &Received,
    last_attempt: bool,
    cap_wait: &Arc<CapWait>,
) -> Result<(), JobError> {
    let job: Job =
        serde_json::from_str(&message.body).map_err(|e| JobError::Unprocessable(format!("not a job: {e}")))?;
    match job {
        Job::IndexDocument { tenant_id, document_id } => {
            let span = tracing::info_span!("index_document", tenant_id = %tenant_id, document_id = %document_id);
            index::run(state, tenant_id, document_id, last_attempt, cap_wait).instrument(span).await
        }
        Job::SummarizeDocument { tenant_id, document_id } => {
            let span = tracing::info_span!("summarize_document", tenant_id = %tenant_id, document_id = %document_id);
            summarize::run(state, tenant_id, document_id).instrument(span).await
        }
    }
}

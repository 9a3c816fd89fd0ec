//! The jobs workers run, one variant per kind of SQS message. Handlers must be
//! idempotent: SQS delivers at least once.

use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::queue::Received;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another delivery (the redrive policy bounds how many).
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
    /// Can never succeed (e.g. a malformed message): delete it, do not retry.
    #[error("{0}")]
    Unprocessable(String),
}

/// A queued job, as JSON: `{"type": "...", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Job {}

pub async fn handle(_state: &AppState, message: &Received) -> Result<(), JobError> {
    let job: Job = serde_json::from_str(&message.body)
        .map_err(|e| JobError::Unprocessable(format!("not a job: {e}")))?;
    match job {}
}

//! What the domain's operations (retrieval, chat, suggest, agent) can fail
//! with, in the domain's words. The HTTP layer turns these into responses
//! (`crate::api::error`, the one place with status codes); the domain never sees HTTP.

use crate::llm::LlmError;

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The caller's input cannot be acted on (a bad filter, an empty message).
    #[error("{0}")]
    Invalid(String),
    /// Something the caller named does not exist for this tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller may not name this (another tenant's object, say).
    #[error("{0}")]
    Forbidden(String),
    /// The state of things does not allow it (retrying may).
    #[error("{0}")]
    Conflict(String),
    /// An input is larger than the deployment accepts (`MAX_BODY_BYTES`).
    #[error("too large")]
    TooLarge,
    /// An input's type is not one stolid can read.
    #[error("{0}")]
    Unsupported(String),
    /// What the caller named existed and is gone for good (`code` says what).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// A dependency (the queue) refused; nothing was left half-done.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] crate::infra::blob::StorageError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl DomainError {
    pub fn invalid(message: impl Into<String>) -> Self {
        DomainError::Invalid(message.into())
    }

    /// A stream ended by a shutdown (503 `unavailable`): the turn was not
    /// stored, and asking again reaches a task that is not stopping.
    pub fn shutting_down() -> Self {
        DomainError::Unavailable("the server is shutting down; ask again".into())
    }
}

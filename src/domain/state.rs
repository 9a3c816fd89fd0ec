//! The state every handler and job shares, built once by [`crate::app`]: the
//! pool, the S3 and SQS clients, the model gateway and the config. Every room
//! of the house imports this; it imports only the rooms it holds.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Config;
use crate::infra::blob::Blobs;
use crate::infra::queue::Queue;
use crate::llm::Gateway;
use tokio_util::sync::CancellationToken;

/// Everything a handler or job needs; cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub blobs: Blobs,
    pub queue: Queue,
    pub gateway: Arc<Gateway>,
    pub config: Arc<Config>,
    /// Cancelled half way through a shutdown's deadline: streams still open
    /// (chat, agent) then stop their model call and end with an `error` event
    /// saying so, so every client sees a clean end and every call's usage is
    /// stored before the process exits.
    pub streams_end: CancellationToken,
}

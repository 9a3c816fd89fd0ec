//! The domain: what stolid does for a tenant, in its own words, with no HTTP
//! and no SQS in sight. The API and the workers call it; it calls the model
//! gateway (`llm`), the tables (`store`), the pure `ingest` functions and the
//! infrastructure.
//!
//! - [`state`]: the handles every operation works with; [`tenant`]: the caller;
//!   [`error`]: what an operation can fail with.
//! - [`documents`]: upload, import, dedupe, re-index, delete (the life cycle;
//!   the index job in `worker::jobs` runs its slow half).
//! - [`retrieval`]: search (vector, keyword, hybrid, folding of duplicates, rerank).
//! - [`chat`], [`suggest`], [`agent`]: the model-facing features, built on retrieval.
//! - [`signals`]: where the time goes, and the signals an operator watches.

pub mod agent;
pub mod chat;
pub mod documents;
pub mod error;
pub mod retrieval;
pub mod signals;
pub mod state;
pub mod suggest;
pub mod tenant;

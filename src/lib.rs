//! stolid: a boring, reliable backend for an AI product.
//!
//! A tour, in the order a request or a job meets the code:
//! - [`config`]: typed settings from the environment, checked once at start.
//! - [`app`]: builds the shared [`state::AppState`] and runs the API and/or workers until shutdown.
//! - [`http`]: the axum API, one module per resource; [`error`] turns failures into JSON;
//!   [`tenant`]: the caller, which `http::auth` builds from the API key.
//! - [`worker`]: SQS receive loops, visibility heartbeats, and the jobs they run.
//! - [`llm`]: the model gateway; every chat and embedding call, its rate limiting and its usage record;
//!   [`pricing`]: what a call costs.
//! - [`store`]: SQL by table; [`blob`] and [`queue`]: thin S3 and SQS wrappers (the queue also
//!   holds the job contract), built from [`aws`]'s shared settings and deadlines.
//! - [`telemetry`]: JSON logs for CloudWatch; [`tokens`]: token counting (cl100k); [`retry`]: the
//!   one backoff policy. These three import nothing of stolid's.
//! - `testkit` (cargo feature `testkit`, not in the product): the fake OpenAI-compatible
//!   server, throwaway infrastructure and a fault proxy for tests, benchmarks and `make chaos`.

pub mod agent;
pub mod app;
pub mod aws;
pub mod blob;
pub mod chat;
pub mod cli;
pub mod config;
pub mod documents;
pub mod domain_error;
pub mod error;
pub mod http;
pub mod ingest;
pub mod llm;
pub mod pricing;
pub mod queue;
pub mod retrieval;
pub mod retry;
pub mod state;
pub mod store;
pub mod suggest;
pub mod telemetry;
pub mod tenant;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tokens;
pub mod worker;

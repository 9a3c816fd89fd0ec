//! stolid: a boring, reliable backend for an AI product.
//!
//! A tour, in the order a request or a job meets the code (the README's
//! "Layout" draws the same rooms by floor; imports only go down):
//! - [`cli`] parses the command line; [`app`] builds the shared [`state::AppState`] once and runs
//!   the API and/or the workers until shutdown; [`config`] is every setting, checked at start.
//! - [`http`]: the axum API, one module per resource, which parses, calls the domain and answers;
//!   [`error`] is the one place failures become status codes and JSON; [`tenant`] is the caller,
//!   which `http::auth` builds from the API key.
//! - [`worker`]: SQS receive loops, heartbeats and deadlines, the jobs they run, batched deletes,
//!   and the sweeper.
//! - The domain: [`documents`] (upload, dedupe, re-index, delete), [`retrieval`] (search),
//!   [`chat`], [`suggest`] and [`agent`]; they fail with [`domain_error::DomainError`].
//!   [`signals`]: where their time goes, and the three signals an operator watches.
//! - [`ingest`]: extraction and chunking, pure functions the index job runs on blocking threads.
//! - [`llm`]: the model gateway; every chat and embedding call, its retries, its usage record, the
//!   fleet-wide embedding cap (`llm::limiter`, state in Postgres) and the cross-document batcher;
//!   [`pricing`]: what a call costs.
//! - [`store`]: SQL by table; [`blob`] and [`queue`]: thin S3 and SQS wrappers (the queue also holds
//!   the job contract), built from [`aws`]'s shared settings and deadlines.
//! - Leaves that import nothing of stolid's: [`tokens`] (cl100k counting), [`retry`] (the one
//!   backoff policy), [`telemetry`] (JSON logs for CloudWatch).
//! - Not in this crate: test support (`crates/stolid-testkit`: the fake OpenAI-compatible
//!   server, throwaway infrastructure, a fault proxy) and the harnesses (`tools/`: benchmarks,
//!   chaos, eval), crates of their own in the workspace.

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
pub mod signals;
pub mod state;
pub mod store;
pub mod suggest;
pub mod telemetry;
pub mod tenant;
pub mod tokens;
pub mod worker;

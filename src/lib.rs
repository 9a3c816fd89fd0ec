//! stolid: a boring, reliable backend for an AI product.
//!
//! A tour, in the order a request or a job meets the code. Each folder is one
//! room of the architecture, and imports only go down the floors
//! (`docs/architecture.md` draws them; `tests/api/layout.rs` checks them):
//!
//! - [`app`]: the process. Parses the command line (`app::cli`), builds the shared
//!   state once and runs the API and/or the workers until shutdown.
//! - [`api`]: the axum API, one module per resource, which parses, calls the domain
//!   and answers; `api::error` is the one place failures become status codes and JSON;
//!   `api::views` are the public types, apart from the tables' rows.
//! - [`worker`]: SQS receive loops, heartbeats and deadlines, the jobs they run,
//!   batched deletes, and the sweeper.
//! - [`domain`]: what stolid does for a tenant: documents (their whole life cycle),
//!   retrieval, chat, suggest, agent, signals; the state and the caller they work with.
//! - [`llm`]: the model gateway; every chat and embedding call, its retries, the
//!   providers, the fleet-wide embedding cap (`llm::limiter`, state in Postgres) and
//!   the books (`llm::accounting`: usage records and budgets, with their SQL).
//! - [`ingest`]: extraction and chunking, pure functions the index job runs on blocking
//!   threads.
//! - [`store`]: the SQL of the domain's tables.
//! - [`infra`]: thin wrappers over S3 and SQS and their shared AWS settings, token
//!   counting, the one backoff policy, the JSON logs.
//! - [`config`]: every setting, read from the environment and checked at start, prices per
//!   model among them.
//!
//! Not in this crate: test support (`crates/stolid-testkit`: the fake OpenAI-compatible
//! server, throwaway infrastructure, a fault proxy, checkers) and the harnesses
//! (`tools/`: benchmarks, chaos, eval), crates of their own in the workspace.

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod infra;
pub mod ingest;
pub mod llm;
pub mod store;
pub mod worker;

//! stolid's integration tests: one binary, one module per area, all against
//! real Postgres + pgvector, moto (S3/SQS) and, where a model is needed, the
//! fake OpenAI-compatible server over real HTTP.

mod agent;
mod budget;
mod chat;
mod console;
mod deploy_files;
pub mod documents;
mod duplicates;
mod fleet;
mod gateway;
mod hardening;
mod health;
#[allow(dead_code)] // shared by every module; not each uses every helper
mod helpers;
mod http_basics;
mod ingest_cli;
mod layout;
mod openai_compat;
mod process;
mod search;
mod signals;
mod suggest;
mod usage;

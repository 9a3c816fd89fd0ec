//! Test support shipped with the crate so integration tests, benchmarks and the
//! `fake-openai` binary share one implementation.

pub mod fake_openai;
pub mod infra;
pub mod proxy;

//! stolid's test support, a crate of its own so the compiler (not a feature
//! flag) keeps it out of the product: the integration tests, the harnesses in
//! `tools/` and the `fake-openai` binary share one implementation.
//!
//! - [`fake_openai`]: the one fake there is, an OpenAI-compatible model server
//!   over real HTTP, with faults and rate buckets.
//! - [`infra`]: throwaway infrastructure per test (database, bucket, queues) and
//!   an in-process app on it; [`process`]: the release binary as a child process;
//!   [`proxy`]: a TCP proxy that cuts or stalls a dependency on demand.
//! - Checkers: [`emf`] (CloudWatch embedded-metric lines), [`insights`] (the
//!   operations guide's Logs Insights queries, run over captured logs),
//!   [`layering`] (imports flow one way between the product's rooms).
//! - [`bench`]: what the benchmarks share (corpus files, options).

use std::path::{Path, PathBuf};

pub mod bench;
pub mod emf;
pub mod fake_openai;
pub mod infra;
pub mod insights;
pub mod layering;
pub mod process;
pub mod proxy;

/// `len` bytes of repeatable pseudo-random noise (xorshift64 from `seed`): the
/// binary file a fault test uploads under a text type.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The repository's root (the workspace's), where `.env`, `eval/`, `.local/`
/// and `target/` are.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

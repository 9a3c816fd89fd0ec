//! Test support shipped with the crate so integration tests, benchmarks and the
//! `fake-openai` binary share one implementation.

pub mod bench;
pub mod emf;
pub mod fake_openai;
pub mod infra;
pub mod insights;
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

//! One retry policy for everything in stolid that waits and tries again: the
//! model gateway, the embedding limiter's pause, the SQS receive loop, the
//! usage writer and the ingest CLI. Exponential from 500 ms, doubling, capped
//! at 30 s, with jitter so callers that failed together do not return together.

use std::time::Duration;

use rand::Rng;

/// The wait before retry number `attempt` (0-based): 500 ms, 1 s, 2 s, ... 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30))
}

/// [`backoff`] scaled by a random factor in [0.5, 1]: spread out, never longer.
pub fn jittered_backoff(attempt: u32) -> Duration {
    backoff(attempt).mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// `wait` plus up to a quarter more: for waits that must not be shortened
/// (a provider's `Retry-After`), spread out after it.
pub fn at_least(wait: Duration) -> Duration {
    wait.mul_f64(1.0 + rand::rng().random_range(0.0..=0.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        for _ in 0..100 {
            let down = jittered_backoff(2);
            assert!(down >= Duration::from_secs(1) && down <= Duration::from_secs(2), "{down:?}");
            let up = at_least(Duration::from_secs(4));
            assert!(up >= Duration::from_secs(4) && up <= Duration::from_secs(5), "{up:?}");
        }
    }
}

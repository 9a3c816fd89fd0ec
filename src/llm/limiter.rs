//! The one embedding rate limiter shared by every worker and request of the process.
//!
//! Embedding APIs throttle hard, and N workers each retrying on their own turn one
//! 429 into a storm. So every embedding call passes through here:
//!
//! 1. a cap on calls in flight (a semaphore);
//! 2. a pause, set by any caller that saw a 429, that every caller waits out;
//! 3. two GCRA limiters (governor): requests per window and tokens per window.
//!    Each is built so that *any* window of the configured length holds at most
//!    the configured limit: with burst `b`, cells refill at `(limit - b) / window`;
//! 4. a slowdown factor: after a 429 each call costs 2x, 4x, 8x request cells,
//!    which slows the whole process, not only the caller that was throttled. It
//!    halves again after each quiet recovery period without a 429.
//!
//! Acquisition is serialised through a fair (FIFO) mutex so a large token batch
//! cannot be starved by a stream of small ones.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::{EmbeddingLimits, RateCap};

/// The largest multiplier a run of 429s can put on request cost.
const MAX_SLOWDOWN: u32 = 8;

pub struct EmbedLimiter {
    requests: DefaultDirectRateLimiter,
    request_burst: u32,
    tokens: DefaultDirectRateLimiter,
    token_burst: u32,
    in_flight: Semaphore,
    /// FIFO order for callers waiting on the rate limiters.
    queue: tokio::sync::Mutex<()>,
    throttle: Mutex<Throttle>,
    /// Quiet time after which the slowdown halves.
    recovery: Duration,
    throttled_total: AtomicU64,
}

#[derive(Debug)]
struct Throttle {
    paused_until: Option<Instant>,
    slowdown: u32,
    last_throttled: Option<Instant>,
}

/// Holds one in-flight slot; dropping it frees the slot.
pub struct Permit<'a> {
    _slot: SemaphorePermit<'a>,
}

/// A snapshot for logs, `/readyz` details and benchmarks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LimiterStatus {
    pub slowdown: u32,
    pub paused_for_ms: u64,
    pub throttled_total: u64,
}

impl EmbedLimiter {
    pub fn new(limits: &EmbeddingLimits) -> Self {
        let request_burst = (limits.requests.limit / 60).max(1);
        // A whole batch must fit in one burst, so the burst is at least one maximal
        // input, but never more than half the cap (the refill rate would collapse).
        let token_limit = limits.tokens.limit;
        let token_burst = (token_limit / 30).max((limits.max_input_tokens as u32).min(token_limit / 2)).max(1);
        Self {
            requests: RateLimiter::direct(quota(limits.requests, request_burst)),
            request_burst,
            tokens: RateLimiter::direct(quota(limits.tokens, token_burst)),
            token_burst,
            in_flight: Semaphore::new(limits.max_in_flight),
            queue: tokio::sync::Mutex::new(()),
            throttle: Mutex::new(Throttle { paused_until: None, slowdown: 1, last_throttled: None }),
            recovery: (limits.requests.window / 6).max(Duration::from_millis(500)),
            throttled_total: AtomicU64::new(0),
        }
    }

    /// The most tokens one call may carry; the gateway batches inputs under it.
    pub fn max_tokens_per_call(&self) -> usize {
        self.token_burst as usize
    }

    /// Waits until a call of `tokens` tokens may be sent now.
    pub async fn acquire(&self, tokens: usize) -> Permit<'_> {
        // The slot comes first: taking rate cells and then queueing for a slot would
        // let calls that waited pile up and go out together, over the cap.
        let slot = self.in_flight.acquire().await.expect("limiter semaphore is never closed");
        let _turn = self.queue.lock().await;
        self.wait_out_pause().await;
        let slowdown = self.throttle.lock().unwrap().slowdown;
        let request_cells = slowdown.min(self.request_burst).max(1);
        self.requests
            .until_n_ready(NonZeroU32::new(request_cells).unwrap())
            .await
            .expect("request cells are clamped to the burst");
        let token_cells = (tokens as u32).clamp(1, self.token_burst);
        self.tokens
            .until_n_ready(NonZeroU32::new(token_cells).unwrap())
            .await
            .expect("token cells are clamped to the burst");
        Permit { _slot: slot }
    }

    async fn wait_out_pause(&self) {
        loop {
            let until = self.throttle.lock().unwrap().paused_until;
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// Records a 429: pauses every caller for `retry_after` (or an exponential
    /// backoff when the provider gave none), with jitter so they do not return
    /// together, and doubles the slowdown. Returns the pause.
    pub fn on_throttled(&self, retry_after: Option<Duration>, attempt: u32) -> Duration {
        self.throttled_total.fetch_add(1, Ordering::Relaxed);
        let pause = crate::retry::at_least(retry_after.unwrap_or_else(|| crate::retry::backoff(attempt)));
        let now = Instant::now();
        let mut t = self.throttle.lock().unwrap();
        let until = now + pause;
        t.paused_until = Some(t.paused_until.map_or(until, |p| p.max(until)));
        t.slowdown = (t.slowdown * 2).min(MAX_SLOWDOWN);
        t.last_throttled = Some(now);
        tracing::warn!(
            llm.slowdown = t.slowdown,
            pause_ms = pause.as_millis() as u64,
            "embedding provider throttled us; slowing the shared limiter"
        );
        pause
    }

    /// Records a successful call: after a quiet recovery period the slowdown halves.
    pub fn on_success(&self) {
        let mut t = self.throttle.lock().unwrap();
        if t.slowdown > 1 && t.last_throttled.is_some_and(|at| at.elapsed() >= self.recovery) {
            t.slowdown /= 2;
            // The next halving needs another quiet period.
            t.last_throttled = Some(Instant::now());
            tracing::info!(llm.slowdown = t.slowdown, "embedding limiter recovering");
        }
    }

    pub fn status(&self) -> LimiterStatus {
        let t = self.throttle.lock().unwrap();
        LimiterStatus {
            slowdown: t.slowdown,
            paused_for_ms: t.paused_until.map_or(0, |u| u.saturating_duration_since(Instant::now()).as_millis() as u64),
            throttled_total: self.throttled_total.load(Ordering::Relaxed),
        }
    }
}

/// A quota whose every window of `cap.window` holds at most `cap.limit` cells:
/// `burst` up front, then `limit - burst` spread evenly over the window.
fn quota(cap: RateCap, burst: u32) -> Quota {
    let refill = cap.limit.saturating_sub(burst).max(1);
    let period = cap.window.div_f64(refill as f64);
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(burst).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: u32, window: Duration) -> EmbeddingLimits {
        EmbeddingLimits {
            requests: RateCap { limit: requests, window },
            tokens: RateCap { limit: 1_000_000, window },
            max_in_flight: 4,
            max_batch_inputs: 2048,
            max_batch_tokens: 300_000,
            max_input_tokens: 8192,
            max_attempts: 3,
        }
    }

    // governor keeps its own clock, so this one runs in real time on a short window.
    #[tokio::test]
    async fn no_window_ever_holds_more_than_the_cap() {
        let window = Duration::from_millis(500);
        let limiter = EmbedLimiter::new(&limits(20, window));
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..50 {
            let _p = limiter.acquire(10).await;
            sent.push(start.elapsed());
        }
        for (i, at) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|t| **t < *at + window).count();
            assert!(in_window <= 20, "{in_window} calls in the window starting at {at:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_caller_and_slows_the_rate_until_it_recovers() {
        let limiter = EmbedLimiter::new(&limits(600, Duration::from_secs(60)));
        let pause = limiter.on_throttled(Some(Duration::from_secs(2)), 0);
        assert!(pause >= Duration::from_secs(2));
        let before = Instant::now();
        drop(limiter.acquire(1).await);
        assert!(before.elapsed() >= Duration::from_secs(2), "the pause applies to others too");
        assert_eq!(limiter.status().slowdown, 2);
        limiter.on_throttled(None, 1);
        assert_eq!(limiter.status().slowdown, 4);
        tokio::time::advance(Duration::from_secs(11)).await;
        limiter.on_success();
        assert_eq!(limiter.status().slowdown, 2);
        limiter.on_success();
        assert_eq!(limiter.status().slowdown, 2, "each halving needs its own quiet period");
    }
}

//! The one embedding cap of the whole fleet: every task that shares the
//! database shares it, whatever each task's own configuration says about
//! how many tasks there are (nothing; each is configured with the full cap).
//!
//! Embedding APIs throttle hard, and N tasks each enforcing the cap on their own
//! send N times the cap; a 429 then turns into a retry storm. So every
//! embedding request passes through here:
//!
//! 1. **A slot** (the in-flight cap). The configured `max_in_flight` is split
//!    among the tasks that leased budget in the last [`MEMBER_TTL`]: a task's
//!    share is `max / n`, the first `max % n` tasks (by id) get one more, and
//!    every task gets at least one. Queries may use every slot of the share;
//!    bulk work leaves a quarter of it (at least one) free for them when the
//!    share has two or more, so that a chat waits for no document.
//! 2. **A reservation** from the fleet's GCRA row in Postgres
//!    (`embed_lease`, migration 0005): requests and tokens, with the pause and
//!    slowdown a 429 set. The row answers "send at T"; GCRA then guarantees
//!    that no window of length `w` holds more than `burst + rate * w`, whoever
//!    sends. One reservation covers every request waiting in this task at that
//!    moment (up to the bursts), so under load a round trip serves a group; and
//!    since the batcher makes requests few and full, the database sees at most
//!    one short statement per provider request, never one per input.
//! 3. **Queries first**: a search's embedding queues in front of bulk work (bulk
//!    waiters pass a second lock first, so at most one bulk reservation is ever
//!    ahead of a query).
//! 4. **A query credit**: where the cap is large enough, each task keeps one
//!    query embedding's budget ([`QUERY_CREDIT_TOKENS`]) reserved ahead, so a
//!    search's embedding leaves at once instead of after a round trip to the
//!    row; using it reserves the next one in the background. A credit may be
//!    sent long after its moment, which GCRA's window bound does not cover, so
//!    every reservation keeps room in both bursts for one credit per task of
//!    the fleet (migration 0008). In any window a task sends at most one credit
//!    reserved before it (the next is reserved only after the last is used), so
//!    the bound holds. A credit lapses after [`MEMBER_TTL`], while its holder is
//!    still counted, and a 429 voids it.
//!
//! The pace is derived from the cap as the provider enforces it: over short
//! windows (OpenAI publishes per-minute limits and enforces them as a bucket of
//! about one second's worth). So the rate is [`MARGIN`] of the cap and the
//! burst is one second's share minus what a late send could add (a grant lives
//! [`GRANT_LIFE`], plus [`SEND_JITTER`]), and never more than what keeps a whole
//! window under the cap. A request larger than the token burst cannot be sent
//! under it; the gateway never builds one (its batches stop at the burst).
//!
//! A 429 is then a sign that someone else shares the key. It pauses the fleet
//! (`embed_throttled`): `paused_until` on the row, which every reservation
//! respects, and doubles a slowdown (up to [`MAX_SLOWDOWN`]) once per burst of
//! 429s; each quiet [`RECOVERY`] halves it again, so one 429 costs a few
//! seconds at half rate, not minutes.
//!
//! Failure modes:
//! - *A task dies holding a reservation*: the reservation is budget nobody
//!   spends (at most one burst); nothing waits for it. Its fleet membership
//!   lapses after [`MEMBER_TTL`] and its in-flight share returns to the others.
//! - *Clock skew*: every time is the database's clock (`clock_timestamp()`);
//!   the row answers a duration ("in 120 ms"), which a task measures on its
//!   own monotonic clock. Skew between tasks cannot matter; the reply's travel
//!   time only makes a task later, never earlier.
//! - *Postgres briefly unavailable*: reservations are retried with backoff;
//!   nothing is sent without one. Past [`UNAVAILABLE_AFTER`] the call fails as
//!   unavailable (a 503 for a query, a retried job for indexing) — neither
//!   could store its result without the database anyway.
//! - *A task frozen mid-statement*: the row lock lives inside one statement, so
//!   only a task killed inside Postgres could hold it; Postgres then ends the
//!   statement with the connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::{EmbeddingLimits, RateCap};
pub mod buckets;
pub mod cap_wait;

use buckets::Lease;
pub use buckets::Pace;

/// The share of the configured cap the fleet aims at: the rest absorbs network
/// jitter at the provider's side.
pub const MARGIN: f64 = 0.97;
/// How long a reservation may be used after its moment; unused, it lapses.
pub const GRANT_LIFE: Duration = Duration::from_millis(100);
/// How late a request may reach the provider after leaving.
pub const SEND_JITTER: Duration = Duration::from_millis(50);
/// The largest multiplier a run of 429s can put on the pace.
pub const MAX_SLOWDOWN: u32 = 8;
/// A quiet period that halves the slowdown.
pub const RECOVERY: Duration = Duration::from_secs(3);
/// A task that has not reserved for this long no longer takes an in-flight share.
pub const MEMBER_TTL: Duration = Duration::from_secs(10);
/// How long reservations are retried while Postgres does not answer.
pub const UNAVAILABLE_AFTER: Duration = Duration::from_secs(10);
/// The tokens a query credit covers: a question, not a document.
pub const QUERY_CREDIT_TOKENS: u32 = 256;
/// Credits are held only where both bursts are at least this many credits: the
/// room kept for them then stays a small part of the burst.
const CREDIT_MIN_BURSTS: f64 = 32.0;

/// Who is waiting: searches and chat (a person) or indexing (a queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Query,
    Bulk,
}

#[derive(Debug, thiserror::Error)]
#[error("the embedding rate limiter's database is unavailable: {0}")]
pub struct LimiterUnavailable(pub String);

/// The GCRA pace for one cap as the provider enforces it (see the module docs).
pub fn pace_for(cap: RateCap) -> Pace {
    let limit = cap.limit as f64;
    let window = cap.window.as_secs_f64();
    let rate = limit / window * MARGIN;
    // The provider's bucket holds about one second's worth (or the whole
    // window, if shorter); a late send may land on top of the burst.
    let per_second = limit / window * window.min(1.0);
    let late = (GRANT_LIFE + SEND_JITTER).as_secs_f64();
    let burst = (per_second - rate * late).min(limit - rate * (window + late)).max(1.0);
    Pace { interval: 1.0 / rate, burst, held: 0.0 }
}

pub struct EmbedLimiter {
    db: PgPool,
    /// The provider account the cap belongs to.
    key: String,
    member: Uuid,
    requests: Pace,
    tokens: Pace,
    credit: Mutex<Credit>,
    credit_hits_total: AtomicU64,
    max_in_flight: usize,
    slots: Mutex<Slots>,
    slot_freed: Notify,
    /// FIFO turn to reserve, holding the current grant.
    turn: tokio::sync::Mutex<Option<Grant>>,
    /// Bulk waiters pass here first, so queries overtake all but one of them.
    bulk_turn: tokio::sync::Mutex<()>,
    /// What waiters want, so one reservation serves all of them.
    waiting: Mutex<Demand>,
    /// Bumped by a 429: grants from before it are dropped.
    generation: AtomicU64,
    observed: Mutex<Observed>,
    throttled_total: AtomicU64,
}

#[derive(Debug, Default)]
struct Slots {
    used: usize,
    share: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Demand {
    requests: u32,
    tokens: u64,
}

#[derive(Debug)]
struct Grant {
    requests: u32,
    tokens: u32,
    until: Instant,
    generation: u64,
}

/// This task's query credit: one request of up to [`QUERY_CREDIT_TOKENS`].
#[derive(Debug, Clone, Copy)]
enum Credit {
    None,
    Reserving,
    Held { usable_from: Instant, until: Instant, generation: u64 },
}

impl Credit {
    fn usable(&self, current_generation: u64) -> bool {
        let now = Instant::now();
        matches!(*self, Credit::Held { usable_from, until, generation }
            if generation == current_generation && usable_from <= now && now <= until)
    }
}

#[derive(Debug, Default)]
struct Observed {
    slowdown: u32,
    members: u32,
    paused_until: Option<Instant>,
}

/// Holds one in-flight slot; dropping it frees the slot.
pub struct Slot {
    limiter: Arc<EmbedLimiter>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.slots.lock().unwrap().used -= 1;
        self.limiter.slot_freed.notify_waiters();
    }
}

/// A snapshot for logs, `/readyz` details and benchmarks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LimiterStatus {
    /// The fleet's slowdown as last seen.
    pub slowdown: u32,
    pub paused_for_ms: u64,
    /// 429s this task received.
    pub throttled_total: u64,
    /// Tasks sharing the cap, as last seen.
    pub fleet_members: u32,
    pub in_flight_share: usize,
    /// Query embeddings sent on a credit, without waiting for a reservation.
    pub query_credit_hits: u64,
    /// Whether the next query embedding can leave on a credit now.
    pub query_credit_ready: bool,
}

impl EmbedLimiter {
    pub fn new(db: PgPool, key: String, limits: &EmbeddingLimits) -> Self {
        let (mut requests, mut tokens) = (pace_for(limits.requests), pace_for(limits.tokens));
        let credits =
            requests.burst >= CREDIT_MIN_BURSTS && tokens.burst >= CREDIT_MIN_BURSTS * f64::from(QUERY_CREDIT_TOKENS);
        if credits {
            requests.held = 1.0;
            tokens.held = f64::from(QUERY_CREDIT_TOKENS);
        }
        Self {
            db,
            key,
            member: Uuid::now_v7(),
            requests,
            tokens,
            credit: Mutex::new(Credit::None),
            credit_hits_total: AtomicU64::new(0),
            max_in_flight: limits.max_in_flight,
            slots: Mutex::new(Slots { used: 0, share: limits.max_in_flight }),
            slot_freed: Notify::new(),
            turn: tokio::sync::Mutex::new(None),
            bulk_turn: tokio::sync::Mutex::new(()),
            waiting: Mutex::new(Demand::default()),
            generation: AtomicU64::new(0),
            observed: Mutex::new(Observed { slowdown: 1, members: 1, paused_until: None }),
            throttled_total: AtomicU64::new(0),
        }
    }

    /// Whether this cap is large enough for query credits (the same for every
    /// task): then each task's pace keeps room for one.
    fn credits(&self) -> bool {
        self.requests.held > 0.0
    }

    /// The most tokens one request may carry and still fit the burst. With
    /// credits, half of it: the room kept for the fleet's credits never takes
    /// more than the other half (migration 0008, and [`Self::credits_fit`]).
    pub fn max_tokens_per_call(&self) -> usize {
        if self.credits() { (self.tokens.burst / 2.0) as usize } else { self.tokens.burst as usize }
    }

    /// Tokens per request at the pace of both caps: one request's share of the token cap.
    pub fn tokens_per_request(&self) -> usize {
        (self.requests.interval / self.tokens.interval) as usize
    }

    /// Waits for an in-flight slot of this task's share.
    pub async fn slot(self: &Arc<Self>, lane: Lane) -> Slot {
        loop {
            let freed = self.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_slot(lane) {
                return slot;
            }
            freed.await;
        }
    }

    /// An in-flight slot if one is free now.
    pub fn try_slot(self: &Arc<Self>, lane: Lane) -> Option<Slot> {
        let mut slots = self.slots.lock().unwrap();
        let limit = match lane {
            Lane::Query => slots.share,
            Lane::Bulk if slots.share > 1 => slots.share - (slots.share / 4).max(1),
            Lane::Bulk => 1,
        };
        (slots.used < limit).then(|| {
            slots.used += 1;
            Slot { limiter: self.clone() }
        })
    }

    /// Waits until a request of `tokens` tokens may be sent now, fleet-wide.
    pub async fn pace(self: &Arc<Self>, tokens: usize, lane: Lane) -> Result<(), LimiterUnavailable> {
        let tokens = (tokens as u32).clamp(1, self.tokens.burst as u32);
        if lane == Lane::Query {
            let on_credit = self.take_credit(tokens);
            if !on_credit {
                self.pace_in_turn(tokens, lane).await?;
            }
            self.reserve_next_credit();
            return Ok(());
        }
        self.pace_in_turn(tokens, lane).await
    }

    /// Takes this task's credit if it covers `tokens` and may be sent now.
    fn take_credit(&self, tokens: u32) -> bool {
        if !self.credits() || tokens > QUERY_CREDIT_TOKENS {
            return false;
        }
        {
            let observed = self.observed.lock().unwrap();
            let paused = observed.paused_until.is_some_and(|until| Instant::now() < until);
            if paused || !self.credits_fit(observed.members) {
                return false;
            }
        }
        let mut credit = self.credit.lock().unwrap();
        if !credit.usable(self.generation.load(Ordering::SeqCst)) {
            return false;
        }
        *credit = Credit::None;
        self.credit_hits_total.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn credit_ready(&self) -> bool {
        self.credit.lock().unwrap().usable(self.generation.load(Ordering::SeqCst))
    }

    /// Whether a fleet of `members` tasks can hold credits without the room
    /// kept for them passing half a burst (where 0008 stops keeping more).
    fn credits_fit(&self, members: u32) -> bool {
        let members = f64::from(members.max(1));
        members * self.requests.held <= self.requests.burst / 2.0
            && members * self.tokens.held <= self.tokens.burst / 2.0
    }

    /// Reserves the next credit in the background, unless one is held or on its way.
    fn reserve_next_credit(self: &Arc<Self>) {
        if !self.credits() {
            return;
        }
        {
            let mut credit = self.credit.lock().unwrap();
            let generation = self.generation.load(Ordering::SeqCst);
            match *credit {
                Credit::Reserving => return,
                Credit::Held { until, generation: held, .. } if held == generation && Instant::now() <= until => {
                    return;
                }
                _ => *credit = Credit::Reserving,
            }
        }
        let limiter = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let generation = limiter.generation.load(Ordering::SeqCst);
            let next = match limiter.reserve(1, QUERY_CREDIT_TOKENS).await {
                Ok(lease) => {
                    limiter.observe(&lease);
                    Credit::Held {
                        usable_from: Instant::now() + Duration::from_secs_f64(lease.ready_in.max(0.0)),
                        // Within the membership the reservation renewed, so the holder is counted.
                        until: started + MEMBER_TTL,
                        generation,
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "could not reserve a query credit");
                    Credit::None
                }
            };
            *limiter.credit.lock().unwrap() = next;
        });
    }

    /// Waits for this task's turn at the row, and reserves for everyone waiting.
    async fn pace_in_turn(&self, tokens: u32, lane: Lane) -> Result<(), LimiterUnavailable> {
        {
            let mut waiting = self.waiting.lock().unwrap();
            waiting.requests += 1;
            waiting.tokens += tokens as u64;
        }
        let _served = Served { limiter: self, tokens };
        let _bulk = match lane {
            Lane::Bulk => Some(self.bulk_turn.lock().await),
            Lane::Query => None,
        };
        let mut grant = self.turn.lock().await;
        loop {
            let generation = self.generation.load(Ordering::SeqCst);
            if let Some(g) = grant.as_mut()
                && g.generation == generation
                && Instant::now() <= g.until
                && g.requests >= 1
                && g.tokens >= tokens
            {
                g.requests -= 1;
                g.tokens -= tokens;
                return Ok(());
            }
            self.wait_out_pause().await;
            // Reserve for everyone waiting now, within the bursts.
            let demand = *self.waiting.lock().unwrap();
            let want_requests = demand.requests.clamp(1, self.requests.burst as u32);
            let want_tokens = (demand.tokens as u32).clamp(tokens, self.tokens.burst as u32);
            let lease = self.reserve(want_requests, want_tokens).await?;
            let ready = Instant::now() + Duration::from_secs_f64(lease.ready_in.max(0.0));
            self.observe(&lease);
            tokio::time::sleep_until(ready).await;
            *grant =
                Some(Grant { requests: want_requests, tokens: want_tokens, until: ready + GRANT_LIFE, generation });
        }
    }

    /// One reservation, retried while Postgres does not answer.
    async fn reserve(&self, requests: u32, tokens: u32) -> Result<Lease, LimiterUnavailable> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let result = buckets::lease(
                &self.db,
                &self.key,
                self.member,
                (requests, tokens),
                (self.requests, self.tokens),
                RECOVERY,
                MEMBER_TTL,
            )
            .await;
            match result {
                Ok(lease) => return Ok(lease),
                Err(err) if started.elapsed() >= UNAVAILABLE_AFTER => {
                    return Err(LimiterUnavailable(err.to_string()));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reserving embedding budget failed; retrying");
                    tokio::time::sleep(crate::infra::retry::jittered_backoff(attempt.min(4))).await;
                    attempt += 1;
                }
            }
        }
    }

    fn observe(&self, lease: &Lease) {
        let members = lease.members.max(1) as usize;
        let rank = lease.member_rank.max(0) as usize;
        let share = (self.max_in_flight / members + usize::from(rank < self.max_in_flight % members)).max(1);
        let changed = {
            let mut slots = self.slots.lock().unwrap();
            std::mem::replace(&mut slots.share, share) != share
        };
        if changed {
            self.slot_freed.notify_waiters();
        }
        let mut observed = self.observed.lock().unwrap();
        observed.slowdown = lease.slowdown.max(1) as u32;
        observed.members = members as u32;
    }

    /// Records a 429: the whole fleet pauses for `retry_after` (or a backoff
    /// when the provider gave none) and slows down. Returns the pause.
    pub async fn on_throttled(&self, retry_after: Option<Duration>, attempt: u32) -> Duration {
        self.throttled_total.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let pause = crate::infra::retry::at_least(retry_after.unwrap_or_else(|| crate::infra::retry::backoff(attempt)));
        let local_until = Instant::now() + pause;
        let fleet = buckets::throttled(&self.db, &self.key, pause.as_secs_f64(), MAX_SLOWDOWN).await;
        let mut observed = self.observed.lock().unwrap();
        observed.paused_until = Some(observed.paused_until.map_or(local_until, |p| p.max(local_until)));
        match fleet {
            Ok((slowdown, _)) => observed.slowdown = slowdown.max(1) as u32,
            // The pause still holds here; the others will meet the provider's 429s themselves.
            Err(err) => tracing::warn!(error = %err, "could not share a 429 with the fleet"),
        }
        tracing::warn!(
            llm.slowdown = observed.slowdown,
            pause_ms = pause.as_millis() as u64,
            "embedding provider throttled us; pausing and slowing the fleet"
        );
        pause
    }

    /// Waits out a pause this task knows of (the fleet's comes with the next reservation).
    pub async fn wait_out_pause(&self) {
        let until = self.observed.lock().unwrap().paused_until;
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    pub fn status(&self) -> LimiterStatus {
        let observed = self.observed.lock().unwrap();
        LimiterStatus {
            slowdown: observed.slowdown,
            paused_for_ms: observed
                .paused_until
                .map_or(0, |u| u.saturating_duration_since(Instant::now()).as_millis() as u64),
            throttled_total: self.throttled_total.load(Ordering::Relaxed),
            fleet_members: observed.members,
            in_flight_share: self.slots.lock().unwrap().share,
            query_credit_hits: self.credit_hits_total.load(Ordering::Relaxed),
            query_credit_ready: self.credit_ready(),
        }
    }
}

/// Takes a waiter's demand back however its wait ends (served, or cancelled).
struct Served<'a> {
    limiter: &'a EmbedLimiter,
    tokens: u32,
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        let mut waiting = self.limiter.waiting.lock().unwrap();
        waiting.requests -= 1;
        waiting.tokens -= self.tokens as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_minute(limit: u32) -> RateCap {
        RateCap::per_minute(limit)
    }

    #[test]
    fn the_pace_fits_a_one_second_bucket_and_every_window() {
        // 120 requests/min: the provider holds 2 per second.
        let pace = pace_for(per_minute(120));
        let rate = 1.0 / pace.interval;
        assert!((rate - 2.0 * MARGIN).abs() < 1e-9);
        let late = (GRANT_LIFE + SEND_JITTER).as_secs_f64();
        assert!(pace.burst >= 1.0 && pace.burst + rate * late <= 2.0, "{pace:?}");
        // 200k tokens/min: a request may carry up to ~2,500 tokens.
        let tokens = pace_for(per_minute(200_000));
        assert!((2_400.0..3_333.0).contains(&tokens.burst), "{tokens:?}");
        // Any 60 s window: burst + rate * 60 stays under the cap.
        for limit in [60, 120, 600, 200_000, 1_000_000] {
            let pace = pace_for(per_minute(limit));
            assert!(pace.burst + 60.0 / pace.interval <= limit as f64, "{limit}: {pace:?}");
        }
    }

    #[test]
    fn a_tiny_cap_still_sends_one_at_a_time() {
        let pace = pace_for(per_minute(10));
        assert_eq!(pace.burst, 1.0);
        assert!((pace.interval - 6.0 / MARGIN).abs() < 1e-9);
    }
}

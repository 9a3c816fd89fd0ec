//! How long one job has waited in line for the fleet's embedding cap.
//!
//! A job's inputs wait in the process's batch queue ([`crate::llm::batcher`]) for
//! an in-flight slot and the fleet's pace, behind every other job's. That
//! wait is the cap doing its work, not the job being slow, so a job's
//! deadline must not count it: the worker reads [`CapWait::waited`] and
//! extends the deadline by it (and releases a job whose wait alone grows too
//! long, rather than failing it).
//!
//! The clock runs while at least one of the job's inputs is queued and stops
//! when the last queued one leaves in a request (or is dropped): the union of
//! the waits, not their sum, since a job's inputs wait side by side.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct CapWait(Mutex<Clock>);

#[derive(Debug, Default)]
struct Clock {
    /// Inputs in the batch queue now.
    queued: usize,
    /// When `queued` last went from zero to one.
    since: Option<Instant>,
    /// Time with inputs queued, up to `since`.
    total: Duration,
}

impl CapWait {
    /// Time so far with at least one input waiting in the batch queue.
    pub fn waited(&self) -> Duration {
        let clock = self.0.lock().expect("cap wait lock");
        clock.total + clock.since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// One input joins the queue; the ticket's drop (or [`Ticket::leave`]) takes it out.
    pub fn enter(self: &Arc<Self>) -> Ticket {
        let mut clock = self.0.lock().expect("cap wait lock");
        if clock.queued == 0 {
            clock.since = Some(Instant::now());
        }
        clock.queued += 1;
        Ticket(Some(self.clone()))
    }

    fn leave(&self) {
        let mut clock = self.0.lock().expect("cap wait lock");
        clock.queued -= 1;
        if clock.queued == 0
            && let Some(since) = clock.since.take()
        {
            clock.total += since.elapsed();
        }
    }
}

/// One queued input's place on its job's [`CapWait`]; inputs of calls made
/// without one carry an empty ticket.
#[derive(Debug, Default)]
pub struct Ticket(Option<Arc<CapWait>>);

impl Ticket {
    /// The input left the queue in a request.
    pub fn leave(&mut self) {
        if let Some(wait) = self.0.take() {
            wait.leave();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_the_time_any_input_waits_once() {
        let wait = Arc::new(CapWait::default());
        let mut a = wait.enter();
        tokio::time::advance(Duration::from_secs(2)).await;
        let b = wait.enter(); // waits beside a: no extra time
        tokio::time::advance(Duration::from_secs(3)).await;
        a.leave();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(wait.waited(), Duration::from_secs(6), "still running while b is queued");
        drop(b);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(wait.waited(), Duration::from_secs(6), "stopped with nothing queued");
        let _c = wait.enter();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(wait.waited(), Duration::from_secs(7));
    }
}

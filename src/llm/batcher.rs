//! Cross-document batching: one queue per process into which every indexing
//! job puts its chunks, and one dispatcher that cuts provider requests from it,
//! as full as the provider's per-request limits and the fleet's token burst
//! allow, and hands each job its own vectors back.
//!
//! Under a request cap, requests should be few and full; under a token cap,
//! tokens are what is spent and the request count does not matter. Both come
//! from one rule: the dispatcher reserves budget first and cuts the batch when
//! the budget is there, so a batch holds everything that arrived while it
//! waited (up to the limits). The reservation is for the tokens waiting now or,
//! if more, one request's share of the token cap (token rate / request rate):
//! when requests bind, that share is large and the late-arriving inputs ride
//! along; when tokens bind, it is small and no token budget is left unused.
//! A first input waits up to [`LINGER`] for company. Queries never enter this
//! queue: the gateway sends them at once, ahead of bulk work (`Lane::Query`),
//! or, when every slot is taken, together (`super::query_groups`).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::limiter::Lane;
use super::{CallContext, Gateway, LlmError};

/// How long a batch that is not full waits for more inputs.
pub const LINGER: Duration = Duration::from_millis(20);

/// One input waiting to be embedded.
pub(super) struct Pending {
    /// The `embed` call it came from (one job's inputs share it).
    pub caller: u64,
    pub ctx: CallContext,
    pub text: String,
    pub tokens: usize,
    pub enqueued: Instant,
    /// Its place on its job's cap-wait clock, given up when it leaves in a request.
    pub ticket: super::cap_wait::Ticket,
    pub reply: oneshot::Sender<Result<Embedded, LlmError>>,
}

/// A fresh caller id for one `embed` call's inputs.
pub(super) fn next_caller() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// An input's vector, and which request carried it (for the caller's count).
#[derive(Debug)]
pub(super) struct Embedded {
    pub vector: Vec<f32>,
    pub request: u64,
    pub attempts: u32,
}

/// The limits a batch is cut to.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchLimits {
    pub inputs: usize,
    pub tokens: usize,
}

impl BatchLimits {
    /// Whether an input of `next` tokens joins a batch of `inputs` inputs and
    /// `tokens` tokens; the first input always does.
    fn admits(&self, inputs: usize, tokens: usize, next: usize) -> bool {
        inputs == 0 || (inputs < self.inputs && tokens + next <= self.tokens)
    }
}

/// A batch cut now: its tokens, and whether a limit stops it (it is full).
struct NextBatch {
    tokens: usize,
    full: bool,
}

fn next_batch(queue: &VecDeque<Pending>, limits: BatchLimits) -> NextBatch {
    let (mut inputs, mut tokens) = (0, 0);
    for item in queue {
        if !limits.admits(inputs, tokens, item.tokens) {
            return NextBatch { tokens, full: true };
        }
        inputs += 1;
        tokens += item.tokens;
    }
    NextBatch { tokens, full: inputs >= limits.inputs || tokens >= limits.tokens }
}

/// Answers every input of `batch` with `err`.
pub(super) fn answer_all(batch: Vec<Pending>, err: &LlmError) {
    for item in batch {
        let _ = item.reply.send(Err(err.clone()));
    }
}

/// Runs until the gateway is dropped: cuts batches and sends each in its own task.
pub(super) async fn dispatch(gateway: Weak<Gateway>, mut rx: mpsc::UnboundedReceiver<Pending>, limits: BatchLimits) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut next_request = 0u64;
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(item) => queue.push_back(item),
                None => return,
            }
        }
        drain(&mut rx, &mut queue);
        // A batch that is not full waits a moment, counted from its oldest input.
        let deadline = queue.front().map_or_else(Instant::now, |p| p.enqueued + LINGER);
        while !next_batch(&queue, limits).full {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => queue.push_back(item),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let Some(gateway) = gateway.upgrade() else { return };
        let slot = gateway.limiter.slot(Lane::Bulk).await;
        drain(&mut rx, &mut queue);
        let waiting = next_batch(&queue, limits).tokens;
        let share = gateway.limiter.tokens_per_request().min(limits.tokens);
        let reserved = waiting.max(share);
        // Waiting here, before cutting, is what fills the batch.
        let paced = gateway.limiter.pace(reserved, Lane::Bulk).await;
        drain(&mut rx, &mut queue);
        let batch = cut(&mut queue, BatchLimits { tokens: reserved, ..limits });
        if batch.is_empty() {
            continue; // every waiter went away
        }
        next_request += 1;
        let request = next_request;
        tokio::spawn(async move {
            match paced {
                Ok(()) => gateway.send_bulk(batch, request).await,
                Err(err) => answer_all(batch, &err.into()),
            }
            drop(slot);
        });
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Pending>, queue: &mut VecDeque<Pending>) {
    while let Ok(item) = rx.try_recv() {
        queue.push_back(item);
    }
}

/// Takes inputs from the front while they fit; inputs whose caller went away are dropped.
fn cut(queue: &mut VecDeque<Pending>, limits: BatchLimits) -> Vec<Pending> {
    let mut batch: Vec<Pending> = Vec::new();
    let mut tokens = 0;
    while let Some(next) = queue.front() {
        if next.reply.is_closed() {
            queue.pop_front();
            continue;
        }
        if !limits.admits(batch.len(), tokens, next.tokens) {
            break;
        }
        tokens += next.tokens;
        let mut item = queue.pop_front().expect("front exists");
        item.ticket.leave();
        batch.push(item);
    }
    batch
}

/// The gateway's handle on the queue; the dispatcher starts with the first input.
pub(super) struct BatchQueue {
    tx: std::sync::OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl BatchQueue {
    pub fn new() -> Self {
        Self { tx: std::sync::OnceLock::new() }
    }

    pub fn sender(&self, gateway: &Arc<Gateway>, limits: BatchLimits) -> &mpsc::UnboundedSender<Pending> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(dispatch(Arc::downgrade(gateway), rx, limits));
            tx
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(tokens: usize) -> (Pending, oneshot::Receiver<Result<Embedded, LlmError>>) {
        let (reply, rx) = oneshot::channel();
        let item = Pending {
            caller: 0,
            ctx: CallContext::default(),
            text: String::new(),
            tokens,
            enqueued: Instant::now(),
            ticket: Default::default(),
            reply,
        };
        (item, rx)
    }

    #[tokio::test]
    async fn batches_are_cut_to_both_limits_and_skip_abandoned_inputs() {
        let limits = BatchLimits { inputs: 3, tokens: 100 };
        let mut queue = VecDeque::new();
        let mut receivers = Vec::new();
        for tokens in [10, 10, 10, 10, 60, 50] {
            let (item, rx) = pending(tokens);
            queue.push_back(item);
            receivers.push(rx);
        }
        assert!(next_batch(&queue, limits).full);
        assert_eq!(next_batch(&queue, limits).tokens, 30);
        assert_eq!(cut(&mut queue, limits).len(), 3, "the input limit");
        assert_eq!(next_batch(&queue, limits).tokens, 70);
        assert_eq!(cut(&mut queue, limits).len(), 2, "the token limit: 10 + 60, not + 50");
        drop(receivers.pop()); // the last caller went away
        assert!(cut(&mut queue, limits).is_empty());
        assert!(!next_batch(&queue, limits).full);
    }
}

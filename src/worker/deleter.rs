//! Finished messages are deleted ten per `DeleteMessageBatch` call, not one
//! call each: SQS bills and throttles per call. A handle waits at most
//! [`LINGER`] for others to join it. A delete that fails only means the
//! message comes back after its visibility timeout, and the job, being
//! idempotent, skips it; so failures are logged, not retried.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::infra::queue::Queue;

/// How long a finished message's handle waits for others.
pub const LINGER: Duration = Duration::from_millis(200);
/// SQS's batch limit.
const BATCH: usize = 10;

/// Where finished jobs leave their message's receipt handle.
#[derive(Clone)]
pub struct Deleter {
    tx: mpsc::UnboundedSender<String>,
}

impl Deleter {
    /// Starts the batching task; it flushes what is left and ends once every
    /// `Deleter` clone is dropped, so await the handle after the jobs are done.
    pub fn spawn(queue: Queue) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, tokio::spawn(run(queue, rx)))
    }

    pub fn delete(&self, receipt_handle: String) {
        // The task outlives every sender, so this cannot fail while jobs run.
        let _ = self.tx.send(receipt_handle);
    }
}

async fn run(queue: Queue, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut pending: Vec<String> = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else { return };
        pending.push(first);
        let deadline = Instant::now() + LINGER;
        let mut closed = false;
        while pending.len() < BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(handle) => pending.push(handle),
                    None => { closed = true; break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        flush(&queue, &mut pending).await;
        if closed {
            return;
        }
    }
}

async fn flush(queue: &Queue, pending: &mut Vec<String>) {
    match queue.delete_many(pending).await {
        Ok(0) => {}
        Ok(refused) => {
            tracing::warn!(refused, "SQS refused some deletes; those messages will be skipped when redelivered")
        }
        Err(err) => {
            tracing::warn!(error = format!("{err:#}"), count = pending.len(), "deleting finished messages failed")
        }
    }
    pending.clear();
}

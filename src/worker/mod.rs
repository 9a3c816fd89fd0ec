//! In-process SQS workers: the receive loop, the visibility heartbeat, and
//! settling each message. What a job *does* lives in [`jobs`].
//!
//! - `pollers` loops long-poll in batches of up to 10, but only for as many
//!   messages as there are free job slots (`concurrency`), so memory stays flat
//!   however deep the queue is.
//! - While a job runs, a heartbeat keeps extending its visibility timeout; a
//!   process that dies stops the heartbeat and SQS hands the message out again.
//! - A job that fails is left on the queue: it reappears after its visibility
//!   timeout, and after the redrive policy's max receives SQS moves it to the
//!   dead-letter queue. Jobs see the receive count, so the last attempt can
//!   record the failure (e.g. mark a document `failed`) before that happens.
//! - On shutdown, polling stops, running jobs get until the deadline to finish,
//!   and the messages of those that do not are released (visibility 0) for
//!   another task to pick up at once.

pub mod deleter;
pub mod gauges;
pub mod jobs;
pub mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::queue::Received;
use crate::state::AppState;
use deleter::Deleter;

/// What every poller shares.
#[derive(Clone)]
struct Pool {
    state: AppState,
    deleter: Deleter,
    /// The queue's redrive limit, read lazily and again until it succeeds:
    /// SQS may be unreachable at start.
    max_receives: Arc<tokio::sync::OnceCell<Option<u32>>>,
    /// Free job slots.
    slots: Arc<Semaphore>,
    jobs: TaskTracker,
    /// Cancelled only once the drain deadline passes.
    abort_jobs: CancellationToken,
}

/// Runs the workers until `shutdown` is cancelled, then drains them within `deadline`.
pub async fn run(state: AppState, shutdown: CancellationToken, deadline: Duration) {
    let config = state.config.worker.clone();
    if config.pollers == 0 {
        return;
    }
    let (deleter, deletes_flushed) = Deleter::spawn(state.queue.clone());
    let pool = Pool {
        state,
        deleter,
        max_receives: Arc::new(tokio::sync::OnceCell::new()),
        slots: Arc::new(Semaphore::new(config.concurrency)),
        jobs: TaskTracker::new(),
        abort_jobs: CancellationToken::new(),
    };
    let pollers = TaskTracker::new();
    for poller in 0..config.pollers {
        pollers.spawn(poll(pool.clone(), poller, shutdown.clone()));
    }
    pollers.close();
    let Pool { jobs, abort_jobs, deleter, .. } = pool;
    pollers.wait().await;
    jobs.close();
    tracing::info!(running = jobs.len(), "workers stopped polling; waiting for running jobs");
    if tokio::time::timeout(deadline, jobs.wait()).await.is_err() {
        tracing::warn!(running = jobs.len(), "shutdown deadline reached; releasing unfinished jobs' messages");
        abort_jobs.cancel();
        jobs.wait().await;
    }
    drop(deleter);
    let _ = deletes_flushed.await;
}

async fn poll(pool: Pool, poller: usize, shutdown: CancellationToken) {
    let Pool { state, deleter, max_receives, slots, jobs, abort_jobs } = pool;
    let config = &state.config.worker;
    let mut failures = 0u32;
    loop {
        // Wait for at least one free slot before asking SQS for anything.
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = slots.clone().acquire_owned() => permit.expect("slots are never closed"),
        };
        let extra = slots.available_permits().min(9);
        let mut permits = vec![first];
        for _ in 0..extra {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = state.queue.receive(permits.len() as i32, config.wait_time, config.visibility_timeout) => r,
        };
        let messages = match received {
            Ok(messages) => {
                failures = 0;
                messages
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(error = format!("{err:#}"), poller, "receiving from SQS failed; backing off");
                let pause = crate::retry::jittered_backoff(failures.min(5));
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(pause) => {} }
                continue;
            }
        };
        let max_receives = redrive_limit(&state, &max_receives).await;
        // Give back the slots this batch did not fill.
        permits.truncate(messages.len());
        for (message, permit) in messages.into_iter().zip(permits) {
            let span =
                tracing::info_span!("job", message_id = %message.message_id, receive_count = message.receive_count);
            let state = state.clone();
            let deleter = deleter.clone();
            let abort = abort_jobs.clone();
            jobs.spawn(
                async move {
                    let last_attempt = max_receives.is_some_and(|max| message.receive_count >= max);
                    process(&state, &deleter, message, last_attempt, abort).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

/// The queue's `maxReceiveCount`, read once it can be; `None` while SQS cannot
/// say (no redrive policy, or unreachable: then tried again on the next batch).
async fn redrive_limit(state: &AppState, cell: &tokio::sync::OnceCell<Option<u32>>) -> Option<u32> {
    let read = cell.get_or_try_init(|| state.queue.max_receive_count()).await;
    match read {
        Ok(max) => *max,
        Err(err) => {
            tracing::warn!(error = format!("{err:#}"), "could not read the queue's redrive policy; will retry");
            None
        }
    }
}

/// Runs one message's job with a heartbeat, then deletes it or leaves it for retry.
async fn process(state: &AppState, deleter: &Deleter, message: Received, last_attempt: bool, abort: CancellationToken) {
    let visibility = state.config.worker.visibility_timeout;
    let heartbeat = async {
        let mut tick = tokio::time::interval(visibility / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(err) = state.queue.set_visibility(&message.receipt_handle, visibility).await {
                tracing::warn!(error = format!("{err:#}"), "visibility heartbeat failed");
            }
        }
    };
    let started = std::time::Instant::now();
    let deadline = state.config.worker.job_timeout;
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(deadline, jobs::handle(state, &message, last_attempt)) => Some(outcome),
        _ = heartbeat => unreachable!("the heartbeat never ends"),
        _ = abort.cancelled() => None,
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Some(Ok(Ok(()))) => {
            deleter.delete(message.receipt_handle);
            tracing::info!(duration_ms = elapsed_ms, "job done");
        }
        Some(Ok(Err(jobs::JobError::Unprocessable(reason)))) => {
            tracing::error!(reason, "message can never be processed; deleting it");
            deleter.delete(message.receipt_handle);
        }
        Some(Ok(Err(jobs::JobError::Deferred { delay, reason }))) => {
            match state.queue.send_delayed(message.body.clone(), delay).await {
                Ok(()) => {
                    tracing::info!(reason, delay_secs = delay.as_secs(), "job deferred");
                    deleter.delete(message.receipt_handle);
                }
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), reason, "could not defer the job; it will be retried")
                }
            }
        }
        Some(Ok(Err(jobs::JobError::Retry(err)))) => {
            tracing::warn!(error = format!("{err:#}"), duration_ms = elapsed_ms, "job failed; it will be retried");
        }
        Some(Err(_elapsed)) => {
            // CPU work on a blocking thread cannot be cancelled; it ends on its own
            // (input sizes are capped), and its result is discarded.
            let reason = format!("the job ran past its deadline of {} s (JOB_TIMEOUT_SECS)", deadline.as_secs());
            tracing::error!(duration_ms = elapsed_ms, reason, "job timed out; it will be retried");
            jobs::interrupted(state, &message, &reason, last_attempt).await;
            if !last_attempt {
                // Make it visible again now rather than after a full visibility timeout.
                let _ = state.queue.set_visibility(&message.receipt_handle, Duration::ZERO).await;
            }
        }
        None => {
            tracing::warn!("job interrupted by shutdown; releasing its message");
            jobs::interrupted(state, &message, "interrupted by a shutdown; will be retried", false).await;
            let _ = state.queue.set_visibility(&message.receipt_handle, Duration::ZERO).await;
        }
    }
}

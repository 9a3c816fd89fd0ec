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
//! - A job's deadline (`JOB_TIMEOUT_SECS`) measures its work: time its
//!   embeddings wait in line for the fleet's cap is left out, and a job whose
//!   wait alone grows too long is released as a new message, not failed
//!   ([`within_limits`]).
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

use crate::config::WorkerConfig;
use crate::domain::state::AppState;
use crate::infra::queue::Received;
use crate::llm::limiter::cap_wait::CapWait;
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
                let pause = crate::infra::retry::jittered_backoff(failures.min(5));
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
    let limits = JobLimits::of(&state.config.worker);
    let cap_wait = Arc::new(CapWait::default());
    let job = jobs::handle(state, &message, last_attempt, &cap_wait);
    let outcome = tokio::select! {
        outcome = within_limits(job, limits, &cap_wait) => Some(outcome),
        _ = heartbeat => unreachable!("the heartbeat never ends"),
        _ = abort.cancelled() => None,
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let cap_wait_ms = cap_wait.waited().as_millis() as u64;
    match outcome {
        Some(Ok(Ok(()))) => {
            deleter.delete(message.receipt_handle);
            tracing::info!(duration_ms = elapsed_ms, cap_wait_ms, "job done");
        }
        Some(Ok(Err(jobs::JobError::Unprocessable(reason)))) => {
            tracing::error!(reason, "message can never be processed; deleting it");
            deleter.delete(message.receipt_handle);
        }
        Some(Ok(Err(jobs::JobError::Deferred { delay, reason }))) => {
            defer(state, deleter, message, delay, &reason).await
        }
        Some(Ok(Err(jobs::JobError::Retry(err)))) => {
            tracing::warn!(error = format!("{err:#}"), duration_ms = elapsed_ms, "job failed; it will be retried");
        }
        Some(Err(Overrun::Waiting)) => {
            // Waiting too long for the cap is no fault of the job's: it goes
            // back to the queue as a new message (its receive count starts
            // again), and its document shows why it waits.
            let reason = format!(
                "waiting for the fleet's embedding cap: released after {} s in line \
                 (SWEEP_STUCK_AFTER_SECS - JOB_TIMEOUT_SECS); it will be picked up again",
                limits.max_wait.as_secs()
            );
            jobs::interrupted(state, &message, &reason, false).await;
            defer(state, deleter, message, RELEASE_DELAY, &reason).await;
        }
        Some(Err(Overrun::Work)) => {
            // CPU work on a blocking thread cannot be cancelled; it ends on its own
            // (input sizes are capped), and its result is discarded.
            let reason = format!(
                "the job ran past its deadline of {} s (JOB_TIMEOUT_SECS), not counting {} s waiting for the embedding cap",
                limits.work.as_secs(),
                cap_wait_ms / 1000
            );
            tracing::error!(duration_ms = elapsed_ms, cap_wait_ms, reason, "job timed out; it will be retried");
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

/// Sends the job again to run after `delay` and deletes this delivery, so the
/// wait does not use up the deliveries the redrive policy allows; if the send
/// fails, the message is left to be retried.
async fn defer(state: &AppState, deleter: &Deleter, message: Received, delay: Duration, reason: &str) {
    match state.queue.send_delayed(message.body.clone(), delay).await {
        Ok(()) => {
            tracing::info!(reason, delay_secs = delay.as_secs(), "job deferred");
            deleter.delete(message.receipt_handle);
        }
        Err(err) => tracing::warn!(error = format!("{err:#}"), reason, "could not defer the job; it will be retried"),
    }
}

/// How long a released job's new message stays invisible: long enough that
/// the jobs ahead of it in line move on, short enough not to idle the cap.
const RELEASE_DELAY: Duration = Duration::from_secs(5);

/// What a job may spend: `work` (JOB_TIMEOUT_SECS) not counting its wait for
/// the fleet's embedding cap, and at most `max_wait` of that wait. Together
/// they stay under SWEEP_STUCK_AFTER_SECS, so the sweeper never takes a
/// running job for stuck nor deletes the chunks it is writing.
#[derive(Debug, Clone, Copy)]
struct JobLimits {
    work: Duration,
    max_wait: Duration,
}

impl JobLimits {
    fn of(config: &WorkerConfig) -> Self {
        // The configuration guarantees stuck_after > job_timeout.
        Self { work: config.job_timeout, max_wait: config.sweeper.stuck_after.saturating_sub(config.job_timeout) }
    }
}

/// Why a job was stopped before it finished.
#[derive(Debug, PartialEq, Eq)]
enum Overrun {
    /// Its work (time not waiting for the cap) reached `JobLimits::work`.
    Work,
    /// Its wait for the cap reached `JobLimits::max_wait`.
    Waiting,
}

/// Runs `job` to its end, unless it overruns `limits` as `cap_wait` measures them.
async fn within_limits<F: std::future::Future>(
    job: F,
    limits: JobLimits,
    cap_wait: &CapWait,
) -> Result<F::Output, Overrun> {
    let started = tokio::time::Instant::now();
    tokio::pin!(job);
    loop {
        let waited = cap_wait.waited();
        if waited >= limits.max_wait {
            return Err(Overrun::Waiting);
        }
        // Waiting moves the work deadline out; the next look is at that
        // deadline or when waiting all along would reach its own limit.
        let now = tokio::time::Instant::now();
        let work_ends = started + limits.work + waited;
        if now >= work_ends {
            return Err(Overrun::Work);
        }
        let look = work_ends.min(now + (limits.max_wait - waited));
        tokio::select! {
            output = &mut job => return Ok(output),
            _ = tokio::time::sleep_until(look) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JobLimits = JobLimits { work: Duration::from_secs(10), max_wait: Duration::from_secs(100) };

    /// A job that waits in line for `wait` (an input queued), then works for `work`.
    async fn job(cap_wait: &Arc<CapWait>, wait: u64, work: u64) -> &'static str {
        let ticket = cap_wait.enter();
        tokio::time::sleep(Duration::from_secs(wait)).await;
        drop(ticket);
        tokio::time::sleep(Duration::from_secs(work)).await;
        "done"
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_measures_work_not_the_wait_for_the_cap() {
        let wait = Arc::new(CapWait::default());
        // 60 s in line and 9 s of work: six times the deadline, and in time.
        assert_eq!(within_limits(job(&wait, 60, 9), LIMITS, &wait).await, Ok("done"));
        let wait = Arc::new(CapWait::default());
        assert_eq!(within_limits(job(&wait, 60, 11), LIMITS, &wait).await, Err(Overrun::Work));
        let wait = Arc::new(CapWait::default());
        assert_eq!(within_limits(job(&wait, 0, 11), LIMITS, &wait).await, Err(Overrun::Work));
        let started = tokio::time::Instant::now();
        let wait = Arc::new(CapWait::default());
        assert_eq!(within_limits(job(&wait, 500, 0), LIMITS, &wait).await, Err(Overrun::Waiting));
        assert_eq!(started.elapsed(), Duration::from_secs(100), "released as its wait reaches the limit");
    }
}

//! The sweeper: makes sure no document stays unfinished forever and no
//! original outlives its document.
//!
//! Documents can be left `queued` or `processing` with no SQS message that
//! will ever finish them: a task killed between its database write and its
//! enqueue, an enqueue that failed after the undo failed too, a message
//! purged by an operator. Originals can outlive their rows: an S3 delete that
//! failed after the row was deleted, an upload refused after its put.
//!
//! Four passes, each run by one task of the fleet at a time and paced through
//! `maintenance_leases` (no connection is held while a pass runs):
//! - **stuck documents**, every `SWEEP_INTERVAL_SECS`: documents untouched
//!   for `SWEEP_STUCK_AFTER_SECS` (longer than any job may run) get their
//!   index job sent again; after `SWEEP_MAX_REQUEUES` sends a document is
//!   `failed` with the reason. Chunk generations a dead attempt left
//!   half-written (opened longer ago than the threshold) are deleted in the
//!   same pass. SQS cannot say whether a message exists for a
//!   document, so while the queue holds messages (a backlog the document may
//!   simply be waiting in) only documents idle six times as long are re-sent.
//!   A duplicate message costs little: jobs are idempotent and reuse embeddings.
//! - **paused documents**, every `SWEEP_INTERVAL_SECS`: documents whose
//!   indexing waits for their tenant's budget get their job sent again once
//!   the pause has run out (the period reset) or the tenant's limits changed
//!   (raised, say). A resumed job that still finds no room pauses again;
//!   pauses never count as re-sends. Expired budget reservations (of tasks that
//!   died mid-call) are deleted in the same pass.
//! - **originals**, hourly: one listing of `tenants/`, held against the
//!   documents table both ways. Objects older than the stuck threshold whose
//!   document row does not exist are deleted (orphans); documents whose object
//!   is gone (a bucket emptied or restored from an old backup) are marked
//!   `original_missing_since`, logged as an error, and counted in the
//!   `missing_originals` gauge. Objects elsewhere (the `imports/` prefix)
//!   belong to operators and are never touched.
//!
//! - **aggregate marks**, every `SWEEP_INTERVAL_SECS`: collections whose
//!   aggregate marks a task left stale (it died between publishing a
//!   document and measuring, `store::aggregates`) are measured; chunks
//!   written before shingle samples were stored get theirs, a batch per pass.
//!
//! Each pass logs one `sweep` event with its counts (CloudWatch EMF metrics).
//! On the same period and the same terms, one task writes the fleet's gauges
//! ([`super::gauges`]).

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use uuid::Uuid;

use crate::domain::documents::document_of_original;
use crate::domain::state::AppState;
use crate::infra::queue::Job;
use crate::ingest::shingles;
use crate::llm::accounting::budget_rows;
use crate::store::{aggregates, chunks, documents, leases};

/// How often the fleet lists the bucket to check originals: listing is billed per page.
const ORIGINALS_PASS_EVERY: Duration = Duration::from_secs(3600);
/// Documents looked at per pass; the rest wait for the next one.
const BATCH: i64 = 500;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StuckReport {
    pub requeued: usize,
    pub failed: usize,
    /// Idle past the threshold, but left alone while the queue has a backlog.
    pub deferred: usize,
    /// Chunk generations a dead attempt left half-written, deleted.
    pub abandoned: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PausedReport {
    pub resumed: usize,
    /// Documents still paused (no reset and no new limits since they paused).
    pub waiting: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AggregatesReport {
    /// Chunks written before samples were stored, sampled in this pass.
    pub sampled: usize,
    /// Collections whose stale marks were measured.
    pub measured: usize,
}

/// Chunks sampled per pass: their text is read, so a large backlog is spread
/// over passes.
const SAMPLE_BATCH: i64 = 5_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OriginalsReport {
    pub listed: usize,
    /// Objects whose document no longer exists, deleted.
    pub orphans_deleted: usize,
    /// Documents found without their object in this pass.
    pub newly_missing: usize,
    /// Documents without their object, in all (a gauge).
    pub missing: usize,
}

/// Runs the passes on their periods until `shutdown`.
pub async fn run(state: AppState, shutdown: tokio_util::sync::CancellationToken) {
    let config = state.config.worker.sweeper.clone();
    if config.interval.is_zero() {
        return;
    }
    let holder = Uuid::new_v4();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + config.interval, config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = run_due_passes(&state, holder).await {
            tracing::warn!(error = format!("{err:#}"), "sweep failed; trying again next period");
        }
    }
}

async fn run_due_passes(state: &AppState, holder: Uuid) -> anyhow::Result<()> {
    // A little under the period, so the task whose tick comes next finds it free.
    let period = state.config.worker.sweeper.interval.mul_f64(0.9).as_secs_f64();
    if leases::try_take(&state.db, "sweep_stuck", holder, period).await? {
        let report = sweep_stuck(state).await?;
        log_pass(
            "stuck_documents",
            json!({
                "requeued": report.requeued,
                "failed": report.failed,
                "deferred": report.deferred,
                "abandoned_generations": report.abandoned,
            }),
        );
    }
    if leases::try_take(&state.db, "sweep_paused", holder, period).await? {
        let report = sweep_paused(state).await?;
        log_pass("paused_documents", json!({"resumed": report.resumed, "waiting": report.waiting}));
    }
    if leases::try_take(&state.db, "sweep_aggregates", holder, period).await? {
        let report = sweep_aggregates(state).await?;
        log_pass("aggregate_marks", json!({"sampled": report.sampled, "measured": report.measured}));
    }
    if leases::try_take(&state.db, "ops_gauges", holder, period).await? {
        let gauges = super::gauges::measure(state).await?;
        println!("{}", super::gauges::emf_line(&gauges));
    }
    let originals_period = ORIGINALS_PASS_EVERY.mul_f64(0.9).as_secs_f64();
    if leases::try_take(&state.db, "sweep_orphans", holder, originals_period).await? {
        let report = sweep_originals(state).await?;
        log_pass(
            "originals",
            json!({
                "listed": report.listed,
                "deleted": report.orphans_deleted,
                "newly_missing": report.newly_missing,
                "missing": report.missing,
            }),
        );
    }
    Ok(())
}

/// Samples chunks written before samples were stored, then measures every
/// collection whose aggregate marks are stale (one measuring elsewhere is left to it).
pub async fn sweep_aggregates(state: &AppState) -> anyhow::Result<AggregatesReport> {
    let unsampled = aggregates::unsampled_chunks(&state.db, SAMPLE_BATCH).await.context("reading unsampled chunks")?;
    let sampled = unsampled.len();
    if !unsampled.is_empty() {
        let (ids, samples) = tokio::task::spawn_blocking(move || {
            unsampled.into_iter().map(|(id, content)| (id, shingles::sampled(&content))).unzip::<_, _, Vec<_>, Vec<_>>()
        })
        .await?;
        aggregates::store_samples(&state.db, &ids, &samples).await.context("storing chunks' samples")?;
    }
    let mut measured = 0;
    for (tenant_id, collection) in aggregates::stale(&state.db, BATCH).await.context("reading stale marks")? {
        if aggregates::refresh(&state.db, tenant_id, &collection).await? == aggregates::Refresh::Measured {
            measured += 1;
        }
    }
    Ok(AggregatesReport { sampled, measured })
}

/// Re-sends the index job of documents nothing will finish; fails those sent too often.
pub async fn sweep_stuck(state: &AppState) -> anyhow::Result<StuckReport> {
    let config = &state.config.worker.sweeper;
    let threshold = config.stuck_after.as_secs_f64();
    // Jobs stop at JOB_TIMEOUT_SECS, shorter than the threshold: these will never be published.
    let abandoned = chunks::delete_abandoned_generations(&state.db, threshold).await? as usize;
    let candidates = documents::unfinished(&state.db, threshold, BATCH).await?;
    if candidates.is_empty() {
        return Ok(StuckReport { abandoned, ..StuckReport::default() });
    }
    let backlog = state.queue.depth().await.context("reading the queue depth")? > 0;
    let long_idle = chrono::Utc::now() - chrono::Duration::from_std(config.stuck_after * 6)?;
    let mut report = StuckReport { abandoned, ..StuckReport::default() };
    let (mut resend, mut give_up) = (Vec::new(), Vec::new());
    for doc in candidates {
        if backlog && doc.updated_at > long_idle {
            report.deferred += 1;
        } else if doc.sweeps as u32 >= config.max_requeues {
            give_up.push(doc.id);
        } else {
            resend.push(doc);
        }
    }
    if !give_up.is_empty() {
        let reason = format!("never finished indexing: its job was sent again {} times", config.max_requeues);
        documents::fail_unfinished(&state.db, &give_up, &reason).await?;
        report.failed = give_up.len();
    }
    if !resend.is_empty() {
        let jobs = resend
            .iter()
            .map(|doc| Job::IndexDocument { tenant_id: doc.tenant_id, document_id: doc.id }.to_message())
            .collect();
        state.queue.send_many(jobs).await.context("re-sending stuck documents' jobs")?;
        let ids: Vec<Uuid> = resend.iter().map(|doc| doc.id).collect();
        documents::record_sweep(&state.db, &ids).await?;
        report.requeued = ids.len();
    }
    Ok(report)
}

/// Sends the jobs of budget-paused documents again where there is room now.
pub async fn sweep_paused(state: &AppState) -> anyhow::Result<PausedReport> {
    budget_rows::delete_expired_reservations(&state.db).await?;
    let resumed = documents::resume_paused(&state.db, BATCH).await?;
    let jobs =
        resumed.iter().map(|&(tenant_id, document_id)| Job::IndexDocument { tenant_id, document_id }.to_message());
    if let Err(err) = state.queue.send_many(jobs.collect()).await {
        // Paused again with a pause that has run out, so the next pass retries; nothing is lost.
        let now = chrono::Utc::now();
        for &(tenant_id, id) in &resumed {
            documents::pause(&state.db, tenant_id, id, "paused: resuming failed; trying again", now).await?;
        }
        return Err(err.context("re-sending paused documents' jobs"));
    }
    let waiting = documents::count_paused(&state.db).await? as usize;
    Ok(PausedReport { resumed: resumed.len(), waiting })
}

/// Lists the originals under `tenants/` once and holds them against the
/// documents table both ways: objects whose document no longer exists are
/// deleted (orphans); documents whose object is gone are marked
/// `original_missing_since` and reported (and unmarked should it come back).
pub async fn sweep_originals(state: &AppState) -> anyhow::Result<OriginalsReport> {
    sweep_originals_in_pages(state, 1000).await
}

/// [`sweep_originals`], listing `page_size` keys at a time (S3 allows up to 1,000).
pub async fn sweep_originals_in_pages(state: &AppState, page_size: i32) -> anyhow::Result<OriginalsReport> {
    let settle = chrono::Duration::from_std(state.config.worker.sweeper.stuck_after)?;
    let listing_started = documents::database_now(&state.db).await?;
    // An upload puts its object before it inserts its row: a row older than
    // the listing has its object listed, unless the object is gone. A minute's
    // margin covers a statement that took its time between the two.
    let rows_before = listing_started - chrono::Duration::minutes(1);
    let settled_before = chrono::Utc::now() - settle;
    let mut report = OriginalsReport::default();
    let mut newly_missing = Vec::new();
    // The listing comes in key order, which is (tenant, document) order; each
    // page settles the rows from the previous page's last original to its own.
    let mut after = (Uuid::nil(), Uuid::nil());
    let mut token = None;
    loop {
        let (page, next) = state.blobs.list("tenants/", page_size, token).await?;
        report.listed += page.len();
        let originals: Vec<((Uuid, Uuid), &crate::infra::blob::Listed)> =
            page.iter().filter_map(|object| Some((document_of_original(&object.key)?, object))).collect();
        let ids: Vec<Uuid> = originals.iter().map(|((_, id), _)| *id).collect();
        let existing: std::collections::HashSet<Uuid> =
            documents::existing(&state.db, &ids).await?.into_iter().collect();
        // Only objects old enough that no upload can still be writing their row.
        for ((_, id), object) in &originals {
            if object.modified < settled_before && !existing.contains(id) {
                state.blobs.delete(&object.key).await?;
                report.orphans_deleted += 1;
            }
        }
        let upto = match (&next, originals.last()) {
            (None, _) => (Uuid::max(), Uuid::max()),
            (Some(_), Some((last, _))) => *last,
            (Some(_), None) => after, // nothing to settle yet
        };
        if upto != after {
            newly_missing.extend(documents::reconcile_originals(&state.db, after, upto, &ids, rows_before).await?);
            after = upto;
        }
        match next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    report.newly_missing = newly_missing.len();
    report.missing = documents::count_missing_originals(&state.db).await? as usize;
    if !newly_missing.is_empty() {
        let sample: Vec<String> = newly_missing.iter().take(20).map(Uuid::to_string).collect();
        tracing::error!(
            count = newly_missing.len(),
            documents = sample.join(","),
            "originals missing from the object store: their content cannot be read nor re-indexed"
        );
    }
    Ok(report)
}

/// One log line per pass, in CloudWatch Embedded Metric Format so the counts
/// are metrics an alarm can watch (namespace `stolid`, dimension `pass`).
fn log_pass(pass: &str, counts: serde_json::Value) {
    println!("{}", pass_line(pass, counts));
}

fn pass_line(pass: &str, counts: serde_json::Value) -> serde_json::Value {
    let names: Vec<String> = counts.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let metrics: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "Count")).collect();
    let mut fields = json!({
        "level": "INFO",
        "target": "stolid::sweeper",
        "message": "sweep",
        "event": "sweep",
        "pass": pass,
    });
    if let (Some(fields), Some(counts)) = (fields.as_object_mut(), counts.as_object()) {
        fields.extend(counts.clone());
    }
    crate::infra::telemetry::emf(chrono::Utc::now(), &[&["pass"]], &metrics, fields)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sweep_line_is_valid_emf() {
        let line = super::pass_line("stuck_documents", serde_json::json!({"requeued": 1, "failed": 0, "deferred": 2}));
        stolid_testkit::emf::check(&line).unwrap();
        assert_eq!(line["requeued"], 1);
    }
}

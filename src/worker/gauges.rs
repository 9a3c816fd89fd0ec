//! The fleet's gauges, what an operator alarms on beside the per-call and
//! per-request metrics: one EMF line (`"event": "ops_gauges"`) per period,
//! written by one task of the fleet (paced by the sweeper's lease), with the
//! job queue's depth, the documents waiting and the oldest one's age, the
//! documents paused by budgets, the documents that failed in the last hour, and
//! the documents whose original the object store no longer holds.

use serde_json::json;

use crate::domain::state::AppState;
use crate::store::{documents, signals};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// SQS messages waiting or in flight (approximate, as SQS reports them).
    pub queue_depth: u64,
    pub queued_documents: i64,
    /// Seconds since the oldest waiting document was uploaded (0 when none waits).
    pub oldest_queued_age_secs: f64,
    pub paused_documents: i64,
    pub failed_documents_last_hour: i64,
    /// Documents whose original the object store no longer holds.
    pub missing_originals: i64,
}

pub async fn measure(state: &AppState) -> anyhow::Result<Gauges> {
    let backlog = signals::backlog(&state.db, None).await?;
    Ok(Gauges {
        queue_depth: state.queue.depth().await?,
        queued_documents: backlog.queued_documents,
        oldest_queued_age_secs: backlog.oldest_queued_secs.unwrap_or(0.0),
        paused_documents: backlog.paused_documents,
        failed_documents_last_hour: documents::failed_since(&state.db, 3600.0).await?,
        missing_originals: documents::count_missing_originals(&state.db).await?,
    })
}

/// The gauges as one CloudWatch Embedded Metric Format line.
pub fn emf_line(gauges: &Gauges) -> serde_json::Value {
    let metrics = [
        ("queue_depth", "Count"),
        ("queued_documents", "Count"),
        ("oldest_queued_age_secs", "Seconds"),
        ("paused_documents", "Count"),
        ("failed_documents_last_hour", "Count"),
        ("missing_originals", "Count"),
    ];
    crate::infra::telemetry::emf(
        chrono::Utc::now(),
        &[&["event"]],
        &metrics,
        json!({
            "level": "INFO",
            "target": "stolid::gauges",
            "message": "ops gauges",
            "event": "ops_gauges",
            "queue_depth": gauges.queue_depth,
            "queued_documents": gauges.queued_documents,
            "oldest_queued_age_secs": gauges.oldest_queued_age_secs,
            "paused_documents": gauges.paused_documents,
            "failed_documents_last_hour": gauges.failed_documents_last_hour,
            "missing_originals": gauges.missing_originals,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauges_line_is_valid_emf() {
        let gauges = Gauges { queue_depth: 3, oldest_queued_age_secs: 12.5, ..Default::default() };
        stolid_testkit::emf::check(&emf_line(&gauges)).unwrap();
    }
}

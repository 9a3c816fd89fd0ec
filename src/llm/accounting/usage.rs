//! Usage accounting: every model call becomes one JSON log line (in CloudWatch
//! Embedded Metric Format, so tokens, latency and cost become metrics with no
//! agent) and one `model_calls` row, written in batches by a background task so
//! the request path never waits on it. The same transaction adds the calls'
//! cost to their tenants' budget spend and deletes the budget reservations of
//! calls that ended ([`UsageRecorder::release`]), so a reservation stops
//! counting exactly when its call's cost starts to.

use std::io::Write;

use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use crate::llm::accounting::usage_rows::{ModelCall, Operation, Outcome, RequestTiming};

/// Rows written per INSERT at most.
const MAX_BATCH: usize = 500;
/// How long the writer waits after a record for more to join its batch.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

enum Message {
    Call(Box<ModelCall>),
    /// A budget reservation whose call has ended (every attempt recorded before it).
    Release(Uuid),
    Timing(Box<RequestTiming>),
    /// Acknowledged once every call sent before it is in Postgres.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct UsageRecorder {
    tx: mpsc::UnboundedSender<Message>,
    /// Whether to print the EMF line; off for in-process test apps sharing stdout.
    emit_log: bool,
}

impl UsageRecorder {
    /// Starts the writer task. It ends once every recorder clone is dropped and the
    /// queue is drained, so awaiting the handle at shutdown flushes pending rows.
    pub fn spawn(pool: PgPool, emit_log: bool) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(write_loop(pool, rx, emit_log));
        (Self { tx, emit_log }, handle)
    }

    pub fn record(&self, call: ModelCall) {
        self.emit(emf_line(&call));
        if self.tx.send(Message::Call(Box::new(call))).is_err() {
            tracing::error!("usage writer is gone; a model call was not stored");
        }
    }

    /// Records where a request's time went (`request_timings`, and an EMF line).
    pub fn record_timing(&self, timing: RequestTiming) {
        self.emit(timing_line(&timing));
        if self.tx.send(Message::Timing(Box::new(timing))).is_err() {
            tracing::error!("usage writer is gone; a request timing was not stored");
        }
    }

    /// Prints an event's EMF line (when this process logs them).
    pub fn emit(&self, line: serde_json::Value) {
        if self.emit_log {
            print_line(&line);
        }
    }

    /// Ends a budget reservation once the calls recorded before this are stored.
    pub fn release(&self, reservation: Uuid) {
        if self.tx.send(Message::Release(reservation)).is_err() {
            tracing::error!("usage writer is gone; a budget reservation stays until it expires");
        }
    }

    /// Waits until every call recorded so far is stored.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Message::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

async fn write_loop(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Message>, emit_log: bool) {
    let mut batch: Vec<ModelCall> = Vec::new();
    let mut released = Vec::new();
    let mut timings = Vec::new();
    let mut acks = Vec::new();
    while let Some(first) = rx.recv().await {
        // A moment for the rest of the request's records, so a request costs
        // one statement rather than one per call; a flush is not kept waiting.
        if !matches!(first, Message::Flush(_)) {
            tokio::time::sleep(LINGER).await;
        }
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Call(call) => batch.push(*call),
                Message::Release(id) => released.push(id),
                Message::Timing(timing) => timings.push(*timing),
                Message::Flush(ack) => acks.push(ack),
            }
            if batch.len() >= MAX_BATCH || timings.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() || !released.is_empty() || !timings.is_empty() {
            let records = Records { calls: &batch, released: &released, timings: &timings };
            store_with_retry(&pool, records, emit_log).await;
            batch.clear();
            released.clear();
            timings.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// One batch of the writer: calls, ended reservations, request timings.
#[derive(Clone, Copy)]
struct Records<'a> {
    calls: &'a [ModelCall],
    released: &'a [Uuid],
    timings: &'a [RequestTiming],
}

async fn store_with_retry(pool: &PgPool, records: Records<'_>, emit_log: bool) {
    for attempt in 0..3u32 {
        match crate::llm::accounting::usage_rows::write_batch(pool, records.calls, records.timings, records.released)
            .await
        {
            Ok(crossings) => {
                for crossing in crossings {
                    if emit_log {
                        print_line(&soft_crossing_line(&crossing));
                    } else {
                        tracing::warn!(tenant_id = %crossing.tenant_id, spent_usd = crossing.spent_usd,
                            soft_usd_per_day = crossing.soft_usd_per_day, "a tenant crossed its soft daily budget");
                    }
                }
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, rows = records.calls.len(), attempt, "storing model calls failed; retrying");
                tokio::time::sleep(crate::infra::retry::jittered_backoff(attempt)).await;
            }
        }
    }
    // The calls are still in the log stream (one EMF line each), so they can be
    // recovered; their budget reservations count until they expire.
    tracing::error!(rows = records.calls.len(), "giving up storing model calls; they remain in the logs");
}

/// One line on stdout, whole (the lock keeps lines of concurrent writers apart).
fn print_line(line: &serde_json::Value) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// What an alarm on budgets hangs on: one line per tenant and day, in EMF.
pub fn soft_crossing_line(crossing: &crate::llm::accounting::budget_rows::SoftCrossing) -> serde_json::Value {
    crate::infra::telemetry::emf(
        chrono::Utc::now(),
        &[&["event"]],
        &[("budget_soft_crossings", "Count")],
        json!({
            "level": "WARN",
            "target": "stolid::budget",
            "message": "a tenant crossed its soft daily budget",
            "event": "budget_soft_limit_crossed",
            "budget_soft_crossings": 1,
            "tenant_id": crossing.tenant_id,
            "spent_usd": crossing.spent_usd,
            "soft_usd_per_day": crossing.soft_usd_per_day,
        }),
    )
}

/// A request's timings as one EMF line: what the retrieval-time alarm watches.
pub fn timing_line(timing: &RequestTiming) -> serde_json::Value {
    const MS: &str = "Milliseconds";
    let metrics = [("total_ms", MS), ("retrieval_ms", MS), ("vector_ms", MS), ("keyword_ms", MS), ("model_ms", MS)];
    crate::infra::telemetry::emf(
        timing.created_at,
        &[&["endpoint"]],
        &metrics,
        json!({
            "level": "INFO",
            "target": "stolid::usage",
            "message": "request timing",
            "event": "request_timing",
            "tenant_id": timing.tenant_id,
            "request_id": timing.request_id,
            "conversation_id": timing.conversation_id,
            "endpoint": timing.endpoint,
            "first_message": timing.first_message,
            "total_ms": timing.total_ms,
            "retrieval_ms": timing.vector_ms.max(timing.keyword_ms),
            "vector_ms": timing.vector_ms,
            "keyword_ms": timing.keyword_ms,
            "model_ms": timing.model_ms,
        }),
    )
}

/// The call as one CloudWatch Embedded Metric Format object: the `_aws` block
/// tells CloudWatch which fields are metrics and which are dimensions.
pub fn emf_line(call: &ModelCall) -> serde_json::Value {
    let metrics = [
        ("input_tokens", "Count"),
        ("output_tokens", "Count"),
        ("latency_ms", "Milliseconds"),
        ("limiter_wait_ms", "Milliseconds"),
        ("cost_usd", "None"),
    ];
    crate::infra::telemetry::emf(
        call.created_at,
        &[&["provider", "model", "operation"], &["operation"]],
        &metrics,
        json!({
            "level": "INFO",
            "target": "stolid::usage",
            "message": "model call",
            "event": "model_call",
            "call_id": call.id,
            "tenant_id": call.tenant_id,
            "request_id": call.request_id,
            "conversation_id": call.conversation_id,
            "endpoint": call.endpoint,
            "provider": call.provider,
            "model": call.model,
            "operation": call.operation,
            "input_tokens": call.input_tokens,
            "output_tokens": call.output_tokens,
            "latency_ms": call.latency_ms,
            "limiter_wait_ms": call.wait_ms,
            "cost_usd": call.cost_usd,
            "outcome": call.outcome,
            "error": call.error,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emf_line_declares_its_metrics_and_carries_them_at_top_level() {
        let call = ModelCall {
            id: uuid::Uuid::nil(),
            tenant_id: None,
            request_id: Some("req-1".into()),
            conversation_id: None,
            endpoint: "chat".into(),
            provider: "openai",
            model: "gpt-4o-mini".into(),
            operation: Operation::Chat,
            input_tokens: 120,
            output_tokens: 30,
            latency_ms: 812.5,
            wait_ms: 0.0,
            cost_usd: 0.000036,
            outcome: Outcome::Ok,
            error: None,
            created_at: chrono::Utc::now(),
        };
        let line = emf_line(&call);
        stolid_testkit::emf::check(&line).unwrap();
        let metrics = &line["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        for metric in metrics.as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "metric {name} must be a top-level number");
        }
        for dimension in line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0].as_array().unwrap() {
            assert!(line[dimension.as_str().unwrap()].is_string());
        }
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["outcome"], "ok");
    }

    #[test]
    fn the_timing_and_budget_lines_are_valid_emf() {
        let timing = RequestTiming {
            id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            request_id: None,
            endpoint: "chat",
            conversation_id: None,
            first_message: true,
            total_ms: 120.0,
            vector_ms: 4.0,
            keyword_ms: 3.0,
            model_ms: 100.0,
            created_at: chrono::Utc::now(),
        };
        stolid_testkit::emf::check(&timing_line(&timing)).unwrap();
        let crossing = crate::llm::accounting::budget_rows::SoftCrossing {
            tenant_id: uuid::Uuid::nil(),
            spent_usd: 1.5,
            soft_usd_per_day: 1.0,
        };
        stolid_testkit::emf::check(&soft_crossing_line(&crossing)).unwrap();
    }
}

//! Structured JSON logs on stdout, one object per line, for the ECS awslogs driver.
//!
//! Each line carries `timestamp`, `level`, `target`, `message`, the event's fields
//! at top level, and `span` (the innermost span's fields, so `span.request_id`
//! within a request). Model calls are logged separately by `llm::usage` in
//! CloudWatch Embedded Metric Format.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber. `level` is a tracing filter (`info`,
/// `stolid=debug,tower_http=info`, ...); `RUST_LOG` wins when set.
pub fn init<W>(level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        // Postgres NOTICEs (e.g. "extension already exists") are not news.
        .or_else(|_| EnvFilter::try_new(format!("{level},sqlx::postgres::notice=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
}

/// One CloudWatch Embedded Metric Format line (namespace `stolid`): `fields`
/// (the event's, at top level, `null`s left out so `ispresent` means what it
/// says) with the `_aws` block naming which of them are metrics (`(name,
/// unit)`) and which dimensions, and the line's `timestamp`. Printed as is to
/// stdout, CloudWatch turns the metrics into metrics with no agent.
pub fn emf(
    at: chrono::DateTime<chrono::Utc>,
    dimensions: &[&[&str]],
    metrics: &[(&str, &str)],
    fields: serde_json::Value,
) -> serde_json::Value {
    let metrics: Vec<serde_json::Value> =
        metrics.iter().map(|(name, unit)| serde_json::json!({"Name": name, "Unit": unit})).collect();
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{"Namespace": "stolid", "Dimensions": dimensions, "Metrics": metrics}]
        },
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
        line.extend(fields.into_iter().filter(|(_, value)| !value.is_null()));
    }
    line
}

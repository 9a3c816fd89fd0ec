//! The three signals this architecture watches before it adds complexity,
//! measured by the service itself (`GET /v1/ops/signals` for a tenant,
//! `stolid signals` for the deployment):
//! 1. **cold start**: is the first message of a conversation much slower than
//!    the ones after it?
//! 2. **retrieval**: does vector search take a large share of chat, suggest and
//!    agent responses (against keyword search and the model)?
//! 3. **embedding throughput**: is indexing held back by the embedding cap
//!    (a backlog while the cap is nearly used up, or 429s from the provider)?
//!
//! Each request of chat, suggest and the agent carries a [`Stopwatch`]; what it
//! measured is written off the request path with the model calls
//! (`request_timings`), and the limiter's wait is kept on each embedding's
//! `model_calls` row. Each signal comes with a verdict (`ok`, `watch`, `act`)
//! and the rule that decided it, so an operator can disagree with a threshold.

use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::EmbeddingLimits;
use crate::domain::retrieval::Timings;
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::llm::accounting::usage_rows::RequestTiming;
use crate::store::signals::{self as queries, Percentiles, Shares};

/// Samples of each kind below which cold start is not judged.
pub const MIN_SAMPLES: i64 = 5;

/// Where one request's time goes, recorded when it ends.
#[derive(Debug)]
pub struct Stopwatch {
    started: Instant,
    first_message: bool,
    retrieval: Timings,
    model: Duration,
}

impl Stopwatch {
    pub fn start(first_message: bool) -> Self {
        Self { started: Instant::now(), first_message, retrieval: Timings::default(), model: Duration::ZERO }
    }

    pub fn retrieved(&mut self, timings: Timings) {
        self.retrieval += timings;
    }

    /// Time spent waiting for a model call outside retrieval.
    pub fn model(&mut self, spent: Duration) {
        self.model += spent;
    }

    /// Records the request, now over.
    pub fn record(&self, state: &AppState, tenant: &Tenant, endpoint: &'static str, conversation_id: Option<Uuid>) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        state.gateway.recorder().record_timing(RequestTiming {
            id: Uuid::now_v7(),
            tenant_id: tenant.id,
            request_id: Some(tenant.request_id.clone()).filter(|id| !id.is_empty()),
            endpoint,
            conversation_id,
            first_message: self.first_message,
            total_ms: ms(self.started.elapsed()),
            vector_ms: ms(self.retrieval.vector),
            keyword_ms: ms(self.retrieval.keyword),
            model_ms: ms(self.retrieval.model + self.model),
            created_at: chrono::Utc::now(),
        });
    }
}

/// `ok`, `watch` or `act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Watch,
    Act,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Signals {
    /// `tenant` (the caller's own traffic and backlog) or `deployment`.
    pub scope: &'static str,
    pub window_secs: u64,
    pub cold_start: ColdStart,
    pub retrieval: Retrieval,
    pub embedding: Embedding,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ColdStart {
    pub verdict: Verdict,
    /// The rule that decided the verdict, with the figures it compared.
    pub reason: String,
    /// Chat latency of first messages of conversations.
    pub first_message: Percentiles,
    /// Chat latency of the messages after them.
    pub later_messages: Percentiles,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Retrieval {
    pub verdict: Verdict,
    pub reason: String,
    /// Per endpoint (`chat`, `suggest`, `agent`): shares of each response's time
    /// spent in vector search, keyword search (the two run side by side) and
    /// the model calls, p50 and p95 over requests.
    pub endpoints: Vec<Shares>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Embedding {
    pub verdict: Verdict,
    pub reason: String,
    pub backlog: queries::Backlog,
    pub throughput: Throughput,
    /// Time embeddings waited for the fleet's limiter, per call recorded.
    pub limiter_wait_ms: queries::Waits,
    /// Embedding attempts the provider answered 429.
    pub rate_limited: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Throughput {
    /// Embedding calls recorded per minute over the window (one per caller of
    /// a shared request, so at most the requests sent).
    pub calls_per_minute: f64,
    pub tokens_per_minute: f64,
    /// The fleet's cap (`EMBED_REQUESTS_PER_MINUTE`, `EMBED_TOKENS_PER_MINUTE`).
    pub cap_requests_per_minute: u32,
    pub cap_tokens_per_minute: u32,
    /// The larger of the two rates over its cap.
    pub utilization: f64,
}

/// The signals over the last `window` for one tenant, or the deployment (`None`).
pub async fn measure(
    db: &sqlx::PgPool,
    limits: &EmbeddingLimits,
    tenant_id: Option<Uuid>,
    window: Duration,
) -> sqlx::Result<Signals> {
    let secs = window.as_secs_f64();
    let (first, later) = queries::chat_latency(db, tenant_id, secs).await?;
    let endpoints = queries::shares(db, tenant_id, secs).await?;
    let backlog = queries::backlog(db, tenant_id).await?;
    let usage = queries::embedding_usage(db, tenant_id, secs).await?;
    let minutes = secs / 60.0;
    let throughput = Throughput {
        calls_per_minute: usage.calls as f64 / minutes,
        tokens_per_minute: usage.tokens as f64 / minutes,
        cap_requests_per_minute: per_minute(limits.requests.limit, limits.requests.window),
        cap_tokens_per_minute: per_minute(limits.tokens.limit, limits.tokens.window),
        utilization: 0.0,
    };
    let utilization = (throughput.calls_per_minute / f64::from(throughput.cap_requests_per_minute.max(1)))
        .max(throughput.tokens_per_minute / f64::from(throughput.cap_tokens_per_minute.max(1)));
    let throughput = Throughput { utilization, ..throughput };
    let (cold_verdict, cold_reason) = judge_cold_start(&first, &later);
    let (retrieval_verdict, retrieval_reason) = judge_retrieval(&endpoints);
    let (embedding_verdict, embedding_reason) =
        judge_embedding(utilization, backlog.oldest_queued_secs, usage.rate_limited);
    Ok(Signals {
        scope: if tenant_id.is_some() { "tenant" } else { "deployment" },
        window_secs: window.as_secs(),
        cold_start: ColdStart {
            verdict: cold_verdict,
            reason: cold_reason,
            first_message: first,
            later_messages: later,
        },
        retrieval: Retrieval { verdict: retrieval_verdict, reason: retrieval_reason, endpoints },
        embedding: Embedding {
            verdict: embedding_verdict,
            reason: embedding_reason,
            backlog,
            throughput,
            limiter_wait_ms: usage.waits,
            rate_limited: usage.rate_limited,
        },
    })
}

/// The signals as a person reads them in a terminal.
pub fn report(signals: &Signals) -> String {
    use std::fmt::Write;
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0} ms"));
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{:.0}%", v * 100.0));
    let verdict = |v: Verdict| match v {
        Verdict::Ok => "ok",
        Verdict::Watch => "WATCH",
        Verdict::Act => "ACT",
    };
    let mut out = String::new();
    let c = &signals.cold_start;
    let _ = writeln!(out, "signals of the {} over the last {} s", signals.scope, signals.window_secs);
    let _ = writeln!(out, "\n1. cold start: {}  ({})", verdict(c.verdict), c.reason);
    for (name, p) in [("first messages", &c.first_message), ("later messages", &c.later_messages)] {
        let _ = writeln!(out, "   {name:<15} {:>6} chats   p50 {:>8}   p95 {:>8}", p.count, ms(p.p50), ms(p.p95));
    }
    let r = &signals.retrieval;
    let _ = writeln!(out, "\n2. retrieval: {}  ({})", verdict(r.verdict), r.reason);
    for e in &r.endpoints {
        let _ = writeln!(
            out,
            "   {:<8} {:>6} requests   vector p50 {:>4} p95 {:>4}   keyword p50 {:>4} p95 {:>4}   model p50 {:>4} p95 {:>4}",
            e.endpoint,
            e.requests,
            pct(e.vector.p50),
            pct(e.vector.p95),
            pct(e.keyword.p50),
            pct(e.keyword.p95),
            pct(e.model.p50),
            pct(e.model.p95),
        );
    }
    let e = &signals.embedding;
    let _ = writeln!(out, "\n3. embedding throughput: {}  ({})", verdict(e.verdict), e.reason);
    let b = &e.backlog;
    let _ = writeln!(
        out,
        "   backlog: {} documents queued (~{} chunks), {} paused by budgets, oldest {}",
        b.queued_documents,
        b.estimated_chunks,
        b.paused_documents,
        b.oldest_queued_secs.map_or_else(|| "-".to_string(), |s| format!("{s:.0} s")),
    );
    let t = &e.throughput;
    let _ = writeln!(
        out,
        "   throughput: {:.1} calls/min of {} requests/min, {:.0} tokens/min of {}; {:.0}% of the cap",
        t.calls_per_minute,
        t.cap_requests_per_minute,
        t.tokens_per_minute,
        t.cap_tokens_per_minute,
        t.utilization * 100.0
    );
    let w = &e.limiter_wait_ms;
    let _ = writeln!(
        out,
        "   limiter wait: p50 {}, p95 {}, {:.1} s in all; {} answered 429",
        ms(w.p50),
        ms(w.p95),
        w.total / 1000.0,
        e.rate_limited
    );
    out
}

fn per_minute(limit: u32, window: Duration) -> u32 {
    (f64::from(limit) * 60.0 / window.as_secs_f64().max(f64::MIN_POSITIVE)).round() as u32
}

/// First messages whose p95 is 1.5x (watch) or 2x (act) that of later ones.
pub fn judge_cold_start(first: &Percentiles, later: &Percentiles) -> (Verdict, String) {
    if first.count + later.count == 0 {
        return (Verdict::Ok, "no chat traffic in the window".into());
    }
    let (Some(first_p95), Some(later_p95)) = (first.p95, later.p95) else {
        return (
            Verdict::Ok,
            format!(
                "too few messages to judge ({} first, {} later; {MIN_SAMPLES} of each needed)",
                first.count, later.count
            ),
        );
    };
    if first.count < MIN_SAMPLES || later.count < MIN_SAMPLES {
        return (
            Verdict::Ok,
            format!(
                "too few messages to judge ({} first, {} later; {MIN_SAMPLES} of each needed)",
                first.count, later.count
            ),
        );
    }
    let ratio = first_p95 / later_p95.max(f64::MIN_POSITIVE);
    let verdict = if ratio >= 2.0 {
        Verdict::Act
    } else if ratio >= 1.5 {
        Verdict::Watch
    } else {
        Verdict::Ok
    };
    (verdict, format!("first-message p95 is {ratio:.2}x the later messages' (watch at 1.5x, act at 2x)"))
}

/// Vector search at 30% (watch) or 50% (act) of a response's time, at p95.
pub fn judge_retrieval(endpoints: &[Shares]) -> (Verdict, String) {
    let worst = endpoints
        .iter()
        .filter_map(|e| e.vector.p95.map(|p95| (e.endpoint.as_str(), p95)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((endpoint, share)) = worst else {
        return (Verdict::Ok, "no chat, suggest or agent traffic in the window".into());
    };
    let verdict = if share >= 0.5 {
        Verdict::Act
    } else if share >= 0.3 {
        Verdict::Watch
    } else {
        Verdict::Ok
    };
    (verdict, format!("vector search is {:.0}% of {endpoint}'s time at p95 (watch at 30%, act at 50%)", share * 100.0))
}

/// Act on 429s, or on a backlog older than 15 minutes while the cap is 80%
/// used; watch at 50% of the cap or a backlog older than 5 minutes.
pub fn judge_embedding(utilization: f64, oldest_queued_secs: Option<f64>, rate_limited: i64) -> (Verdict, String) {
    let oldest = oldest_queued_secs.unwrap_or(0.0);
    let figures = format!(
        "cap {:.0}% used, oldest queued document {:.0} s, {rate_limited} answered 429",
        utilization * 100.0,
        oldest
    );
    let rule =
        "act on any 429 or on a backlog over 15 min at 80% of the cap; watch at 50% of the cap or a backlog over 5 min";
    let verdict = if rate_limited > 0 || (utilization >= 0.8 && oldest > 900.0) {
        Verdict::Act
    } else if utilization >= 0.5 || oldest > 300.0 {
        Verdict::Watch
    } else {
        Verdict::Ok
    };
    (verdict, format!("{figures} ({rule})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(count: i64, p95: f64) -> Percentiles {
        Percentiles { count, p50: Some(p95 / 2.0), p95: Some(p95) }
    }

    #[test]
    fn cold_start_is_judged_by_the_ratio_of_p95s_once_there_are_enough_messages() {
        assert_eq!(judge_cold_start(&latency(10, 200.0), &latency(10, 180.0)).0, Verdict::Ok);
        assert_eq!(judge_cold_start(&latency(10, 300.0), &latency(10, 180.0)).0, Verdict::Watch);
        assert_eq!(judge_cold_start(&latency(10, 400.0), &latency(10, 180.0)).0, Verdict::Act);
        let (verdict, reason) = judge_cold_start(&latency(2, 900.0), &latency(10, 180.0));
        assert_eq!(verdict, Verdict::Ok);
        assert!(reason.contains("too few"), "{reason}");
    }

    #[test]
    fn embedding_acts_on_429s_and_on_an_old_backlog_at_the_cap() {
        assert_eq!(judge_embedding(0.1, None, 0).0, Verdict::Ok);
        assert_eq!(judge_embedding(0.6, None, 0).0, Verdict::Watch);
        assert_eq!(judge_embedding(0.1, Some(400.0), 0).0, Verdict::Watch);
        assert_eq!(judge_embedding(0.9, Some(1000.0), 0).0, Verdict::Act);
        assert_eq!(judge_embedding(0.1, None, 1).0, Verdict::Act);
    }
}

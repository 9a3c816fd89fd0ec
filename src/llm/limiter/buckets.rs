//! `embed_rate_buckets` and `fleet_members`: the fleet's embedding cap. The
//! arithmetic lives in the SQL functions of migrations 0005 and 0008, so each call is one
//! statement and the row lock never spans a round trip; the design is in
//! `llm::limiter`.

use std::time::Duration;

use sqlx::PgExecutor;
use uuid::Uuid;

/// GCRA parameters of one cap: seconds per cell, the burst in cells, and the
/// cells each task may hold reserved ahead (its query credit), for which every
/// reservation keeps room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub interval: f64,
    pub burst: f64,
    pub held: f64,
}

/// A reservation: send in `ready_in` seconds; who else shares the cap.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lease {
    pub ready_in: f64,
    pub slowdown: i32,
    pub members: i32,
    pub member_rank: i32,
}

/// Reserves `(requests, tokens)` under the `(requests, tokens)` paces.
pub async fn lease(
    db: impl PgExecutor<'_>,
    key: &str,
    member: Uuid,
    (requests, tokens): (u32, u32),
    (request_pace, token_pace): (Pace, Pace),
    recovery: Duration,
    member_ttl: Duration,
) -> sqlx::Result<Lease> {
    sqlx::query_as("SELECT * FROM embed_lease($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
        .bind(key)
        .bind(member)
        .bind(requests as i32)
        .bind(tokens as i32)
        .bind(request_pace.interval)
        .bind(request_pace.burst)
        .bind(token_pace.interval)
        .bind(token_pace.burst)
        .bind(recovery.as_secs_f64())
        .bind(member_ttl.as_secs_f64())
        .bind(request_pace.held)
        .bind(token_pace.held)
        .fetch_one(db)
        .await
}

/// Records a 429 for the whole fleet; returns the slowdown and the pause left.
pub async fn throttled(
    db: impl PgExecutor<'_>,
    key: &str,
    pause_secs: f64,
    max_slowdown: u32,
) -> sqlx::Result<(i32, f64)> {
    sqlx::query_as("SELECT * FROM embed_throttled($1, $2, $3)")
        .bind(key)
        .bind(pause_secs)
        .bind(max_slowdown as i32)
        .fetch_one(db)
        .await
}

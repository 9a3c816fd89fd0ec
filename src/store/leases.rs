//! `maintenance_leases`: fleet-wide pacing of periodic work. Whoever takes a
//! pass's row runs the pass; the row frees itself when it expires, so the pass
//! runs about once per period across every task, and a task that dies holding
//! it delays the next run by at most one period.

use sqlx::PgExecutor;
use uuid::Uuid;

/// Takes the lease `name` for `ttl_secs` if it is free (never taken, or
/// expired); true when this caller now holds it.
pub async fn try_take(db: impl PgExecutor<'_>, name: &str, holder: Uuid, ttl_secs: f64) -> sqlx::Result<bool> {
    let taken: Option<String> = sqlx::query_scalar(
        "INSERT INTO maintenance_leases (name, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
         WHERE maintenance_leases.expires_at <= now()
         RETURNING name",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl_secs)
    .fetch_optional(db)
    .await?;
    Ok(taken.is_some())
}

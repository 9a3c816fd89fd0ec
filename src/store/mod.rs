//! SQL, grouped by the table or aggregate it owns. Functions take
//! `impl PgExecutor` so a pool or a transaction both work; nothing here knows
//! about HTTP or workers.

pub mod aggregates;
pub mod chunks;
pub mod conversations;
pub mod documents;
pub mod embeddings;
pub mod keys;
pub mod leases;
pub mod search;
pub mod signals;

use sqlx::PgPool;
use sqlx::postgres::{PgDatabaseError, PgPoolOptions, PgSeverity};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a connection may sit in the pool and still be handed out without a ping.
const ALIVE_BYPASS: std::time::Duration = std::time::Duration::from_millis(500);

/// The pool. `acquire_timeout` bounds how long anything waits for a connection,
/// so a database outage or a saturated pool turns into a quick 503, not a hang.
/// `session` settings are sent when each connection starts (see [`search_session`]).
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: std::time::Duration,
    session: &[(&str, String)],
) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .with_context(|| format!("parsing the database URL {}", redact(url)))?
        .options(session.iter().cloned());
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // sqlx pings every idle connection it hands out: a round trip before
        // each query, three on a chat's critical path. A connection back in the
        // pool for less than ALIVE_BYPASS is taken as alive (HikariCP's
        // `aliveBypassWindowMs` is the same 500 ms); a query on one that died
        // meanwhile fails as a query in flight would (503, the connection
        // dropped). Any older one is pinged as before.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ALIVE_BYPASS {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to the database at {}", redact(url)))
}

/// The HNSW search settings, for every connection of the server's pool: a
/// vector query then needs no transaction around it to `SET LOCAL` them (three
/// round trips fewer). Sent before pgvector is loaded, they wait as
/// placeholders that pgvector adopts.
pub fn search_session(ef_search: u32) -> Vec<(&'static str, String)> {
    vec![
        ("hnsw.ef_search", ef_search.clamp(1, 1000).to_string()),
        // Iterative index scans (pgvector 0.8) keep scanning until `k` rows pass
        // the filters, so a selective filter does not starve the result.
        ("hnsw.iterative_scan", "relaxed_order".to_string()),
    ]
}

/// Postgres's `statement_timeout` for every connection of a pool, in whole milliseconds.
pub fn statement_timeout(timeout: std::time::Duration) -> (&'static str, String) {
    ("statement_timeout", timeout.as_millis().max(1).to_string())
}

/// Whether Postgres cancelled the statement for running past `statement_timeout`
/// (57014; nothing else in stolid cancels statements).
pub fn is_statement_timeout(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|code| code == "57014"))
}

/// Whether the error means the database cannot be reached or has no connection
/// to spare right now (down, restarting, pool exhausted), as opposed to a bad
/// query or bad data: the former is worth a retry and answers 503.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // A server going away mid-handshake (shutting down, a proxy restarting)
        // shows up as a protocol error rather than an I/O one.
        sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => true,
        // FATAL ends the session: at connect that is a database refusing
        // connections (55000), full (53300), starting up or failing over
        // (57P03), renamed or dropped (3D000), or a rotated password (28P01);
        // later, an administrator or a shutdown ending it. None is the
        // request's fault, and the log says which.
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic))
                || db.code().is_some_and(|code| {
                    // 08: connection exception; 57P01-03: shutting down or starting up; 53300: too many connections.
                    code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
                })
        }
        _ => false,
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}

//! Promises of the deployment, not of one process: several instances against
//! one database, as the tasks of an ECS service run.

use std::collections::HashMap;

use stolid::app::ProcessRole;

use crate::helpers::{create_infra, start_app};

/// Three tasks started at the same moment against a fresh database (migrations
/// to run, a new embedding model's HNSW index to build) all come up, and the
/// index is built once and valid. Before, two of three died with "deadlock
/// detected": the index build waits for every running statement, including
/// one blocked on the lock the builder held.
#[tokio::test]
async fn three_instances_started_together_all_come_up() {
    let infra = create_infra().await;
    let env = HashMap::from([("EMBEDDING_MODEL", "fleet-start-model".to_string())]);
    let tenants = ["t0", "t1", "t2"];
    let starts = tenants.iter().map(|tenant| start_app(infra.clone(), env.clone(), |_| {}, ProcessRole::All, tenant));
    let apps = futures::future::join_all(starts).await;
    for (i, app) in apps.iter().enumerate() {
        assert!(app.is_ok(), "instance {i} failed to start: {:#}", app.as_ref().err().unwrap());
    }
    let app = apps.into_iter().next().unwrap().unwrap();
    let name = stolid::store::embeddings::index_name("fleet-start-model", 384);
    let valid: Vec<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = $1",
    )
    .bind(&name)
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(valid, vec![true]);
}

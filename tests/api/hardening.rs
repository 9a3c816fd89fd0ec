//! Regressions from the hardening pass: hostile input, cross-tenant probes,
//! dependency faults. Each test failed before its fix.

use serde_json::{Value, json};

use crate::documents::{upload_text, wait_until_settled};
use crate::helpers::{error_code, spawn_app};

/// `s3_uri` names only objects under the caller's own import prefix: another
/// tenant's original is refused exactly like a key that does not exist, so
/// neither its content nor its existence leaks.
#[tokio::test]
async fn s3_uri_cannot_read_another_tenants_objects_or_probe_for_them() {
    let app = spawn_app().await;
    let secret = upload_text(&app, json!({"text": "Tenant A's secret plan.", "title": "secret"})).await;
    let secret = wait_until_settled(&app, secret["id"].as_str().unwrap()).await;
    assert_eq!(secret["status"], "indexed");
    let a_key = format!("tenants/{}/documents/{}/original", app.tenant_id, secret["id"].as_str().unwrap());
    let bucket = &app.infra.bucket;

    let b_key = app.new_tenant("beta").await;
    let b_id = stolid::store::keys::ensure_tenant(&app.state.db, "beta").await.unwrap();
    let post_as_b = |uri: String| {
        app.client
            .post(app.url("/v1/documents"))
            .bearer_auth(&b_key)
            .json(&json!({"s3_uri": uri, "content_type": "text/plain"}))
            .send()
    };
    let mut refusals = Vec::new();
    for uri in [
        format!("s3://{bucket}/{a_key}"),
        format!("s3://{bucket}/tenants/{}/documents/x/original", app.tenant_id),
        format!("s3://{bucket}/tenants/{b_id}/documents/x/original"),
        format!("s3://{bucket}/imports/{}/plan.txt", app.tenant_id),
        format!("s3://{bucket}/imports/{b_id}/../{}/plan.txt", app.tenant_id),
        format!("s3://other-bucket/imports/{b_id}/plan.txt"),
    ] {
        let response = post_as_b(uri.clone()).await.unwrap();
        assert_eq!(response.status(), 403, "{uri}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{uri}");
        refusals.push(body);
    }
    // The refusal for an existing object and for a made-up one are the same bytes.
    assert_eq!(refusals[0], refusals[1]);

    // Nothing was registered for B: its listing and search stay empty.
    let list: Value =
        app.client.get(app.url("/v1/documents")).bearer_auth(&b_key).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["documents"].as_array().unwrap().len(), 0, "{list}");

    // B's own import prefix works.
    let own = format!("imports/{b_id}/notes.txt");
    app.state.blobs.put(&own, b"Beta's own imported notes.".to_vec(), "text/plain").await.unwrap();
    let response = post_as_b(format!("s3://{bucket}/{own}")).await.unwrap();
    assert_eq!(response.status(), 202);
    let missing = post_as_b(format!("s3://{bucket}/imports/{b_id}/absent.txt")).await.unwrap();
    assert_eq!(error_code(missing).await, "not_found");
}

use crate::helpers::{error_code, spawn_app};

/// No key, a malformed header, an unknown key: all 401 with the JSON error shape.
#[tokio::test]
async fn v1_routes_reject_requests_without_a_valid_key() {
    let app = spawn_app().await;
    let no_key = app.client.get(app.url("/v1/me")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(error_code(no_key).await, "unauthorized");

    let not_bearer =
        app.client.get(app.url("/v1/me")).header("authorization", app.api_key.clone()).send().await.unwrap();
    assert_eq!(not_bearer.status(), 401);

    let unknown = app.client.get(app.url("/v1/me")).bearer_auth("stl_not_a_real_key").send().await.unwrap();
    assert_eq!(unknown.status(), 401);
    assert_eq!(error_code(unknown).await, "unauthorized");
}

/// A valid key identifies its tenant.
#[tokio::test]
async fn a_valid_key_identifies_its_tenant() {
    let app = spawn_app().await;
    let response = app.get("/v1/me").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["tenant_id"], app.tenant_id.to_string());
    assert_eq!(body["tenant"], "acme");
}

/// A revoked key stops working at once, and only that key.
#[tokio::test]
async fn a_revoked_key_is_rejected() {
    let app = spawn_app().await;
    let other = app.new_tenant("acme").await;
    assert!(stolid::store::keys::revoke(&app.state.db, &app.api_key).await.unwrap());
    let response = app.get("/v1/me").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let still_valid = app.client.get(app.url("/v1/me")).bearer_auth(other).send().await.unwrap();
    assert_eq!(still_valid.status(), 200);
}

/// Keys are stored only as hashes.
#[tokio::test]
async fn keys_are_never_stored_in_clear() {
    let app = spawn_app().await;
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE encode(key_hash, 'escape') LIKE '%' || $1 || '%' OR prefix = $1",
    )
    .bind(&app.api_key)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

/// A caller's request id is echoed; without one, the server makes one up.
#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let echoed = app.client.get(app.url("/healthz")).header("x-request-id", "req-abc-123").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "req-abc-123");
    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    // Errors carry it too.
    let error = app.client.get(app.url("/v1/me")).header("x-request-id", "req-err-1").send().await.unwrap();
    assert_eq!(error.headers()["x-request-id"], "req-err-1");
}

/// Unknown routes and wrong methods answer in the same JSON error shape.
#[tokio::test]
async fn routing_errors_are_json() {
    let app = spawn_app().await;
    let missing = app.get("/v1/nothing-here").send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "not_found");
    let wrong_method = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(error_code(wrong_method).await, "method_not_allowed");
}

/// The OpenAPI document is generated from the code and covers the routes.
#[tokio::test]
async fn the_openapi_document_lists_the_routes_and_the_key_scheme() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let paths = [
        "/healthz",
        "/readyz",
        "/v1/me",
        "/v1/documents",
        "/v1/documents/{id}",
        "/v1/documents/{id}/chunks",
        "/v1/documents/{id}/content",
        "/v1/documents/{id}/reindex",
        "/v1/documents/{id}/summarize",
        "/v1/documents/reindex",
        "/v1/documents/summarize",
        "/v1/search",
        "/v1/chat",
        "/v1/conversations",
        "/v1/conversations/{id}",
        "/v1/suggest",
        "/v1/agent",
        "/v1/usage",
        "/v1/chat/completions",
    ];
    for path in paths {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
}

/// The OpenAPI document is self-consistent and honest about errors: every
/// `$ref` resolves, every operation documents the errors any request can get,
/// and the streaming endpoints declare their event streams.
#[tokio::test]
async fn the_openapi_document_resolves_and_documents_errors_and_streams() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {r}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            for status in ["400", "422", "503"] {
                assert!(responses[status].is_object(), "{method} {path} does not document {status}");
            }
            if path.starts_with("/v1/") {
                assert!(responses["401"].is_object(), "{method} {path} does not document 401");
            }
        }
    }
    for path in ["/v1/chat", "/v1/agent", "/v1/chat/completions"] {
        let content = &doc["paths"][path]["post"]["responses"]["200"]["content"];
        assert!(content["text/event-stream"].is_object(), "{path}: {content}");
    }
    let message = &doc["components"]["schemas"]["Message"]["properties"]["citations"];
    assert_eq!(message["type"], "array", "{message}");
}

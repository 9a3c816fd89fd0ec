//! Liveness and readiness, for the ECS health check and load balancers.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::ErrorDetail;
use crate::domain::state::AppState;
use crate::llm::limiter::LimiterStatus;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// The process is alive. Touches nothing else, so a slow database never gets a
/// healthy task killed.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// Each dependency: `ok`, or the error that made it fail.
    checks: Checks,
    model: ModelStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

#[derive(Serialize, ToSchema)]
pub struct Checks {
    postgres: String,
    s3: String,
    sqs: String,
}

#[derive(Serialize, ToSchema)]
pub struct ModelStatus {
    provider: &'static str,
    chat_model: String,
    embedding_model: String,
    /// Set when the local provider has no embedding model and embeds with hashed
    /// word features (lexical, not semantic): why.
    #[serde(skip_serializing_if = "Option::is_none")]
    hashed_embeddings: Option<String>,
    /// Set once the provider answered `insufficient_quota`.
    quota_exhausted: Option<String>,
    #[schema(value_type = Object)]
    embedding_limiter: LimiterStatus,
}

/// Postgres, S3 and SQS are all reachable. 503 names the ones that are not.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let timeout = Duration::from_secs(3);
    let (postgres, s3, sqs) = tokio::join!(
        check(timeout, async {
            sqlx::query("SELECT 1").execute(&state.db).await.map(|_| ()).map_err(anyhow::Error::from)
        }),
        check(timeout, async { state.blobs.ping().await.map_err(anyhow::Error::from) }),
        check(timeout, state.queue.ping()),
    );
    let failed: Vec<&str> = [("postgres", &postgres), ("s3", &s3), ("sqs", &sqs)]
        .into_iter()
        .filter(|(_, result)| *result != "ok")
        .map(|(name, _)| name)
        .collect();
    let gateway = &state.gateway;
    let body = Readiness {
        status: if failed.is_empty() { "ready" } else { "unavailable" },
        error: (!failed.is_empty()).then(|| ErrorDetail {
            code: "not_ready".into(),
            message: format!("unreachable: {}", failed.join(", ")),
            budget: None,
        }),
        checks: Checks { postgres, s3, sqs },
        model: ModelStatus {
            provider: gateway.provider_name(),
            chat_model: gateway.chat_model().to_string(),
            embedding_model: gateway.embedding_model().to_string(),
            hashed_embeddings: gateway.hashed_embeddings_reason().map(str::to_string),
            quota_exhausted: gateway.quota_exhausted(),
            embedding_limiter: gateway.limiter().status(),
        },
    };
    let status = if failed.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn check(timeout: Duration, probe: impl Future<Output = anyhow::Result<()>>) -> String {
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(err)) => format!("error: {err:#}"),
        Err(_) => "error: timed out".into(),
    }
}

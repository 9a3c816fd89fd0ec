//! API-key authentication: `Authorization: Bearer <key>` on every `/v1` route.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::error::Error;
use crate::llm::CallContext;
use crate::state::AppState;
use crate::store;

/// The authenticated caller. Taking it as an extractor is what makes a route
/// require a key; every query then filters by `tenant.id`.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub request_id: String,
}

impl Tenant {
    /// The usage context for model calls made on this request.
    pub fn call_context(&self, endpoint: &'static str, conversation_id: Option<Uuid>) -> CallContext {
        CallContext { tenant_id: Some(self.id), request_id: Some(self.request_id.clone()), conversation_id, endpoint }
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(Error::Unauthorized)?;
        let id = store::keys::tenant_for_key(&state.db, key).await?.ok_or(Error::Unauthorized)?;
        tracing::Span::current().record("tenant_id", tracing::field::display(id));
        let request_id =
            parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        Ok(Tenant { id, request_id })
    }
}

//! API-key authentication: `Authorization: Bearer <key>` on every `/v1` route.
//! Taking a [`Tenant`] as an extractor is what makes a route require a key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::Error;
use crate::state::AppState;
use crate::store;
use crate::tenant::Tenant;

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
        let (id, budgeted) = store::keys::caller_for_key(&state.db, key).await?.ok_or(Error::Unauthorized)?;
        tracing::Span::current().record("tenant_id", tracing::field::display(id));
        let request_id =
            parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        Ok(Tenant { id, request_id, budgeted })
    }
}

//! API-key authentication: `Authorization: Bearer <key>` on every `/v1` route.
//! Taking a [`Tenant`] as an extractor is what makes a route require a key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::api::error::Error;
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::store;

impl FromRequestParts<AppState> for Tenant {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or(Error::Unauthorized)?;
        let (id, budgeted) = store::keys::caller_for_key(&state.db, key).await?.ok_or(Error::Unauthorized)?;
        tracing::Span::current().record("tenant_id", tracing::field::display(id));
        let request_id =
            parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        Ok(Tenant { id, request_id, budgeted })
    }
}

/// The credentials of `Bearer <token>`. The scheme name is case-insensitive
/// (RFC 9110, 11.1), so `bearer` and `BEARER` are the same scheme.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_token() {
        for header in ["Bearer stl_abc", "bearer stl_abc", "BEARER stl_abc", "BeArEr   stl_abc "] {
            assert_eq!(bearer_token(header), Some("stl_abc"), "{header:?}");
        }
        for header in ["Bearer", "Bearer ", "Basic stl_abc", "Bearerstl_abc", "Token stl_abc", ""] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }
}

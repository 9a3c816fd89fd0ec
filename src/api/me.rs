//! `GET /v1/me`: who the key belongs to. Handy for checking a key from a terminal.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::{AppJson, Result};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/me", get(me))
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    tenant_id: Uuid,
    tenant: String,
    /// `openai` or `local`: answers from the local provider are extractive, not generated.
    provider: &'static str,
}

#[utoipa::path(get, path = "/v1/me", tag = "tenants", security(("api_key" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = crate::api::error::ErrorBody)))]
pub async fn me(State(state): State<AppState>, tenant: Tenant) -> Result<AppJson<MeResponse>> {
    let name = store::keys::tenant_name(&state.db, tenant.id).await?;
    Ok(AppJson(MeResponse { tenant_id: tenant.id, tenant: name, provider: state.gateway.provider_name() }))
}

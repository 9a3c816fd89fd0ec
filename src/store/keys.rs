//! Tenants and their API keys. Keys are random, shown once, and stored only as
//! a SHA-256 hash: a leaked database does not leak working keys.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Every key starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "stl_";

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

pub fn generate_key() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The tenant's id, creating the tenant if it does not exist.
pub async fn ensure_tenant(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO tenants (id, name) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(db)
    .await
}

/// The id of the tenant named `name`, if there is one.
pub async fn tenant_by_name(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1").bind(name).fetch_optional(db).await
}

#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The only time the full key exists outside the caller's hands.
    pub key: String,
}

pub async fn create_key(db: impl PgExecutor<'_>, tenant_id: Uuid) -> sqlx::Result<CreatedKey> {
    let key = generate_key();
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO api_keys (id, tenant_id, prefix, key_hash) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant_id)
        .bind(&key[..KEY_PREFIX.len() + 8])
        .bind(hash_key(&key))
        .execute(db)
        .await?;
    Ok(CreatedKey { id, tenant_id, key })
}

/// The tenant a live (unrevoked) key belongs to.
pub async fn tenant_for_key(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(hash_key(key))
        .fetch_optional(db)
        .await
}

/// A live key's tenant, and whether that tenant has spend limits (one lookup
/// per request answers both).
pub async fn caller_for_key(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<Option<(Uuid, bool)>> {
    sqlx::query_as(
        "SELECT k.tenant_id, EXISTS (SELECT 1 FROM budgets b WHERE b.tenant_id = k.tenant_id)
         FROM api_keys k WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(hash_key(key))
    .fetch_optional(db)
    .await
}

/// Revokes a key given either the key itself or its id. Returns whether one was revoked.
pub async fn revoke(db: impl PgExecutor<'_>, key_or_id: &str) -> sqlx::Result<bool> {
    let id = Uuid::parse_str(key_or_id).ok();
    let result = sqlx::query(
        "UPDATE api_keys SET revoked_at = now()
         WHERE revoked_at IS NULL AND (key_hash = $1 OR id = $2)",
    )
    .bind(hash_key(key_or_id))
    .bind(id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() > 0)
}

#[derive(Debug, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: Uuid,
    pub tenant: String,
    pub prefix: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<KeyInfo>> {
    sqlx::query_as(
        "SELECT k.id, t.name AS tenant, k.prefix, k.created_at, k.revoked_at
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         ORDER BY k.created_at",
    )
    .fetch_all(db)
    .await
}

/// A tenant's name, by id.
pub async fn tenant_name(db: impl PgExecutor<'_>, tenant_id: Uuid) -> sqlx::Result<String> {
    sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1").bind(tenant_id).fetch_one(db).await
}

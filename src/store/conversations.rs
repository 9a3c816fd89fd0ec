//! `conversations` and their `messages`, tenant-scoped.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Conversation {
    pub id: Uuid,
    pub title: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Message {
    pub id: Uuid,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// The answer's citations, numbered as its `[n]` markers.
    #[schema(value_type = Vec<Object>)]
    pub citations: serde_json::Value,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cost_usd: f64,
    pub created_at: DateTime<Utc>,
}

pub async fn create(db: impl PgExecutor<'_>, tenant_id: Uuid, title: &str) -> sqlx::Result<Conversation> {
    sqlx::query_as("INSERT INTO conversations (id, tenant_id, title) VALUES ($1, $2, $3) RETURNING id, title, created_at, updated_at")
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(title)
        .fetch_one(db)
        .await
}

pub async fn get(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<Conversation>> {
    sqlx::query_as("SELECT id, title, created_at, updated_at FROM conversations WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn list(db: impl PgExecutor<'_>, tenant_id: Uuid, limit: i64) -> sqlx::Result<Vec<Conversation>> {
    sqlx::query_as(
        "SELECT id, title, created_at, updated_at FROM conversations WHERE tenant_id = $1
         ORDER BY updated_at DESC, id DESC LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn delete(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query("DELETE FROM conversations WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(result.rows_affected() > 0)
}

pub async fn messages(db: impl PgExecutor<'_>, tenant_id: Uuid, conversation_id: Uuid) -> sqlx::Result<Vec<Message>> {
    sqlx::query_as(
        "SELECT id, role, content, citations, input_tokens, output_tokens, cost_usd, created_at
         FROM messages WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY created_at, id",
    )
    .bind(tenant_id)
    .bind(conversation_id)
    .fetch_all(db)
    .await
}

pub struct NewMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
    pub citations: serde_json::Value,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cost_usd: f64,
}

pub async fn add_message(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    conversation_id: Uuid,
    message: NewMessage<'_>,
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "WITH touched AS (UPDATE conversations SET updated_at = now() WHERE tenant_id = $2 AND id = $3)
         INSERT INTO messages (id, tenant_id, conversation_id, role, content, citations, input_tokens, output_tokens, cost_usd)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(conversation_id)
    .bind(message.role)
    .bind(message.content)
    .bind(message.citations)
    .bind(message.input_tokens)
    .bind(message.output_tokens)
    .bind(message.cost_usd)
    .execute(db)
    .await?;
    Ok(id)
}

/// Stores a question and its answer as one turn, in one transaction; returns the answer's id.
pub async fn add_turn(
    db: &sqlx::PgPool,
    tenant_id: Uuid,
    conversation_id: Uuid,
    question: &str,
    answer: NewMessage<'_>,
) -> sqlx::Result<Uuid> {
    let mut tx = db.begin().await?;
    let user = NewMessage {
        role: "user",
        content: question,
        citations: serde_json::json!([]),
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
    };
    add_message(&mut *tx, tenant_id, conversation_id, user).await?;
    let id = add_message(&mut *tx, tenant_id, conversation_id, answer).await?;
    tx.commit().await?;
    Ok(id)
}

//! `conversations` and their `messages`, tenant-scoped.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Conversation {
    pub id: Uuid,
    pub title: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `messages` row (documented where clients see it, `api::views::Message`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Message {
    pub id: Uuid,
    pub role: String,
    pub content: String,
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

/// The conversation a turn belongs to.
#[derive(Debug, Clone)]
pub enum Thread {
    Existing(Uuid),
    /// Started by this turn and created with it, so a first turn that fails
    /// leaves no empty conversation behind, and costs no round trip of its own.
    New {
        id: Uuid,
        title: String,
    },
}

impl Thread {
    /// A conversation to start with `message`, titled by its first 80 characters.
    pub fn start(message: &str) -> Self {
        Thread::New { id: Uuid::now_v7(), title: message.chars().take(80).collect::<String>().trim().to_string() }
    }

    pub fn id(&self) -> Uuid {
        match self {
            Thread::Existing(id) | Thread::New { id, .. } => *id,
        }
    }
}

/// Stores a question and its answer as one turn, in one statement (so both or
/// neither, in one round trip), with the conversation if the turn starts it;
/// returns the answer's id.
pub async fn add_turn(
    db: &sqlx::PgPool,
    tenant_id: Uuid,
    thread: &Thread,
    question: &str,
    answer: NewMessage<'_>,
) -> sqlx::Result<Uuid> {
    // Both rows get the same `created_at`; the ids (v7, made in this order) keep the question first.
    let (question_id, answer_id) = (Uuid::now_v7(), Uuid::now_v7());
    // Two literal statements (sqlx checks that SQL is not built at run time).
    macro_rules! turn_after {
        ($conversation:literal) => {
            concat!(
                "WITH ", $conversation, "
                 INSERT INTO messages (id, tenant_id, conversation_id, role, content, citations, input_tokens, output_tokens, cost_usd)
                 VALUES ($1, $2, $3, 'user', $4, '[]', 0, 0, 0), ($5, $2, $3, $6, $7, $8, $9, $10, $11)"
            )
        };
    }
    let (sql, title) = match thread {
        Thread::Existing(_) => (
            // $12, the new title, is NULL here: named only so both statements take the same parameters.
            turn_after!(
                "touched AS (UPDATE conversations SET updated_at = now() WHERE tenant_id = $2 AND id = $3 AND $12::text IS NULL)"
            ),
            None,
        ),
        Thread::New { title, .. } => (
            turn_after!("started AS (INSERT INTO conversations (id, tenant_id, title) VALUES ($3, $2, $12))"),
            Some(title),
        ),
    };
    sqlx::query(sql)
        .bind(question_id)
        .bind(tenant_id)
        .bind(thread.id())
        .bind(question)
        .bind(answer_id)
        .bind(answer.role)
        .bind(answer.content)
        .bind(answer.citations)
        .bind(answer.input_tokens)
        .bind(answer.output_tokens)
        .bind(answer.cost_usd)
        .bind(title)
        .execute(db)
        .await?;
    Ok(answer_id)
}

//! The API's public types for the tables' rows: what a client sees of a
//! document, a collection, a chunk, a conversation, a message and a search
//! result. They are
//! apart from the rows (`store::*`) so a column added for the server's own use
//! (a tenant id, an S3 key, a chunk generation, a ranking input) never reaches a response, and
//! a column renamed in SQL is a compile error here, not a silent change of the
//! API. Each is built from its row by `From`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store;
pub use crate::store::documents::DocumentStatus;

/// A document: one uploaded original and where it is in its life cycle.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Document {
    pub id: Uuid,
    pub collection: String,
    pub title: String,
    pub content_type: String,
    /// SHA-256 of the original: an upload of the same bytes (and type) into the
    /// same collection is this document again.
    pub content_hash: String,
    pub size_bytes: i64,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub status: DocumentStatus,
    /// Why indexing failed, when it did (or why it waits, while `queued`).
    pub error: Option<String>,
    pub chunk_count: i32,
    pub token_count: i32,
    pub embedding_model: Option<String>,
    pub summary: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub processing_started_at: Option<DateTime<Utc>>,
    pub indexed_at: Option<DateTime<Utc>>,
    /// Set while indexing waits for the tenant's budget: when the period resets,
    /// if the limit is not raised sooner.
    pub paused_until: Option<DateTime<Utc>>,
    /// Set when the object store was found not to hold the original any more:
    /// the content cannot be read nor the document re-indexed, while its chunks
    /// stay searchable. Cleared if the object comes back.
    pub original_missing_since: Option<DateTime<Utc>>,
    /// Most of this document's text also occurs in smaller documents of its
    /// collection (a print page, a concatenated export): search ranks it below
    /// them and cites them instead.
    pub aggregate: bool,
    /// The share of its text found in smaller documents of the collection, 0 to
    /// 1; absent for documents too short to tell or not measured yet.
    pub aggregate_share: Option<f32>,
}

impl From<store::documents::Document> for Document {
    fn from(row: store::documents::Document) -> Self {
        Document {
            id: row.id,
            collection: row.collection,
            title: row.title,
            content_type: row.content_type,
            content_hash: row.content_hash,
            size_bytes: row.size_bytes,
            metadata: row.metadata,
            status: row.status,
            error: row.error,
            chunk_count: row.chunk_count,
            token_count: row.token_count,
            embedding_model: row.embedding_model,
            summary: row.summary,
            created_at: row.created_at,
            updated_at: row.updated_at,
            processing_started_at: row.processing_started_at,
            indexed_at: row.indexed_at,
            paused_until: row.paused_until,
            original_missing_since: row.original_missing_since,
            aggregate: row.aggregate,
            aggregate_share: row.aggregate_share,
        }
    }
}

/// A collection of the tenant's, with how much of it is searchable.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CollectionSummary {
    pub name: String,
    pub documents: i64,
    pub indexed: i64,
    pub chunks: i64,
}

impl From<store::documents::CollectionSummary> for CollectionSummary {
    fn from(row: store::documents::CollectionSummary) -> Self {
        CollectionSummary { name: row.name, documents: row.documents, indexed: row.indexed, chunks: row.chunks }
    }
}

/// A chunk of a document's extracted text, in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkView {
    pub id: Uuid,
    pub ordinal: i32,
    pub content: String,
    pub token_count: i32,
    /// The Markdown headings this chunk sits under, outermost first.
    pub heading_path: Vec<String>,
    /// Byte offsets into the extracted text.
    pub start_offset: i32,
    pub end_offset: i32,
}

impl From<store::chunks::ChunkRow> for ChunkView {
    fn from(row: store::chunks::ChunkRow) -> Self {
        ChunkView {
            id: row.id,
            ordinal: row.ordinal,
            content: row.content,
            token_count: row.token_count,
            heading_path: row.heading_path,
            start_offset: row.start_offset,
            end_offset: row.end_offset,
        }
    }
}

/// A conversation: the turns of chat (or the agent) under one id.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Conversation {
    pub id: Uuid,
    pub title: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<store::conversations::Conversation> for Conversation {
    fn from(row: store::conversations::Conversation) -> Self {
        Conversation { id: row.id, title: row.title, created_at: row.created_at, updated_at: row.updated_at }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<store::conversations::Message> for Message {
    fn from(row: store::conversations::Message) -> Self {
        Message {
            id: row.id,
            role: row.role,
            content: row.content,
            citations: row.citations,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cost_usd: row.cost_usd,
            created_at: row.created_at,
        }
    }
}

/// One search result: a passage and where it comes from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Hit {
    pub chunk_id: Uuid,
    pub document_id: Uuid,
    pub title: String,
    pub collection: String,
    pub content: String,
    pub heading_path: Vec<String>,
    pub start_offset: i32,
    pub end_offset: i32,
    /// The chunk's length in tokens (cl100k), as counted when it was indexed.
    pub token_count: i32,
    /// Mode-specific: cosine similarity, text rank, or fused score.
    pub score: f64,
    /// Other documents holding the same passage, folded into this result: the
    /// passage is shown once, from the most specific document, and nothing is
    /// hidden.
    pub also_in: Vec<AlsoIn>,
}

/// A document that also holds a result's passage.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlsoIn {
    pub document_id: Uuid,
    pub title: String,
    pub chunk_id: Uuid,
}

impl From<store::search::Hit> for Hit {
    fn from(hit: store::search::Hit) -> Self {
        Hit {
            chunk_id: hit.chunk_id,
            document_id: hit.document_id,
            title: hit.title,
            collection: hit.collection,
            content: hit.content,
            heading_path: hit.heading_path,
            start_offset: hit.start_offset,
            end_offset: hit.end_offset,
            token_count: hit.token_count,
            score: hit.score,
            also_in: hit
                .also_in
                .into_iter()
                .map(|a| AlsoIn { document_id: a.document_id, title: a.title, chunk_id: a.chunk_id })
                .collect(),
        }
    }
}

/// Converts each row of a list.
pub fn all<R, V: From<R>>(rows: Vec<R>) -> Vec<V> {
    rows.into_iter().map(V::from).collect()
}

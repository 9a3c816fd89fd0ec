//! Documents over HTTP: upload (multipart, inline text, or an object under the
//! caller's import prefix), list, inspect, read back, delete, re-index,
//! summarize. Handlers parse and answer; what an upload or a re-index does
//! (dedupe, S3, the row, the job, the undo) is `crate::domain::documents`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::{AppJson, Error, Result};
use crate::api::views::{self, ChunkView, CollectionSummary, Document};
use crate::domain::documents::{self as domain, Upload};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::infra::queue::Job;
use crate::ingest::extract::Format;
use crate::store::chunks;
use crate::store::documents::{self, DocumentFilter, DocumentStatus};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/documents", post(create_documents).get(list_documents))
        .route("/v1/documents/{id}", get(get_document).delete(delete_document))
        .route("/v1/documents/{id}/chunks", get(list_chunks))
        .route("/v1/documents/{id}/content", get(get_content))
        .route("/v1/documents/{id}/reindex", post(reindex_document))
        .route("/v1/documents/{id}/summarize", post(summarize_document))
        .route("/v1/documents/reindex", post(reindex_documents))
        .route("/v1/documents/summarize", post(summarize_documents))
        .route("/v1/collections", get(list_collections))
}

/// JSON upload: inline `text`, or `s3_uri` of an object under the caller's
/// import prefix, `s3://<bucket>/imports/<tenant id>/...`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDocumentRequest {
    text: Option<String>,
    s3_uri: Option<String>,
    title: Option<String>,
    /// For `text`: `text/plain` (default), `text/markdown` or `text/html`.
    content_type: Option<String>,
    collection: Option<String>,
    #[schema(value_type = Object)]
    metadata: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadedDocument {
    #[serde(flatten)]
    document: Document,
    /// True when this content was already in the collection: nothing new is indexed.
    duplicate: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadResponse {
    documents: Vec<UploadedDocument>,
}

/// Upload one or many documents.
#[utoipa::path(post, path = "/v1/documents", tag = "documents", security(("api_key" = [])),
    request_body(content = CreateDocumentRequest, description = "JSON, or multipart/form-data with `file` parts and optional `collection` and `metadata` (JSON) fields"),
    responses((status = 202, body = UploadResponse),
              (status = 200, body = UploadResponse, description = "every file was already there (`duplicate: true`)"),
              (status = 413, body = crate::api::error::ErrorBody),
              (status = 415, body = crate::api::error::ErrorBody), (status = 422, body = crate::api::error::ErrorBody)))]
pub async fn create_documents(State(state): State<AppState>, tenant: Tenant, request: Request) -> Result<Response> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (uploads, collection, metadata) = if content_type.starts_with("multipart/form-data") {
        let mut multipart =
            Multipart::from_request(request, &state).await.map_err(|e| Error::bad_request(e.body_text()))?;
        match read_multipart(&mut multipart).await {
            Ok(read) => read,
            Err(refused) => {
                // Answering while the client still sends makes the server close
                // the connection under it, and many clients then report a reset
                // instead of the answer: read the rest (bounded by MAX_BODY_BYTES) first.
                drain(&mut multipart).await;
                return Err(refused);
            }
        }
    } else if content_type.starts_with("application/json") {
        let AppJson(body) = AppJson::<CreateDocumentRequest>::from_request(request, &state).await?;
        let upload = read_json(&state, &tenant, &body).await?;
        (vec![upload], body.collection, body.metadata)
    } else {
        return Err(Error::UnsupportedMediaType("send multipart/form-data or application/json".into()));
    };
    let collection = collection.unwrap_or_else(|| "default".into());
    if collection.is_empty() || collection.len() > 200 {
        return Err(Error::invalid("collection must be 1 to 200 characters"));
    }
    let metadata = metadata.unwrap_or_else(|| serde_json::json!({}));
    if !metadata.is_object() {
        return Err(Error::invalid("metadata must be a JSON object"));
    }
    if uploads.is_empty() {
        return Err(Error::invalid("no file in the upload"));
    }
    let mut documents = Vec::with_capacity(uploads.len());
    for upload in uploads {
        let stored = domain::store(&state, &tenant, &collection, &metadata, upload).await?;
        documents.push(UploadedDocument { document: stored.document.into(), duplicate: stored.duplicate });
    }
    let status = if documents.iter().all(|d| d.duplicate) { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, AppJson(UploadResponse { documents })).into_response())
}

/// Files one multipart upload may carry: each is stored, recorded and queued
/// before the answer, so the request's time grows with their number (10,000
/// tiny files once ran past the request timeout half-stored). More files are
/// more requests; `stolid ingest` and the console send one file per request.
pub const MAX_FILES_PER_UPLOAD: usize = 100;

/// Reads and discards what is left of a refused upload; a broken or oversized
/// body just ends it (the refusal stands either way).
async fn drain(multipart: &mut Multipart) {
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

async fn read_multipart(multipart: &mut Multipart) -> Result<(Vec<Upload>, Option<String>, Option<serde_json::Value>)> {
    let (mut uploads, mut collection, mut metadata) = (Vec::new(), None, None);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let declared = field.content_type().map(str::to_string);
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match (name.as_str(), file_name) {
            ("collection", None) => collection = Some(text_field(&bytes)?),
            ("metadata", None) => {
                if crate::api::error::contains_escaped_nul(&bytes) {
                    return Err(Error::nul_character());
                }
                metadata = Some(
                    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("metadata is not JSON: {e}")))?,
                )
            }
            (_, Some(_)) if uploads.len() == MAX_FILES_PER_UPLOAD => {
                return Err(Error::Unprocessable {
                    code: "too_many_files",
                    message: format!(
                        "an upload carries at most {MAX_FILES_PER_UPLOAD} files; send the rest in more requests"
                    ),
                });
            }
            (_, Some(file_name)) => {
                let format = Format::detect(declared.as_deref(), Some(&file_name)).ok_or_else(|| {
                    Error::UnsupportedMediaType(format!(
                        "{file_name}: unsupported type {}; send text, Markdown, HTML or PDF",
                        declared.as_deref().unwrap_or("(none)")
                    ))
                })?;
                if bytes.is_empty() {
                    return Err(Error::invalid(format!("{file_name}: the file is empty")));
                }
                // A NUL can arrive percent-encoded in `filename*`; titles are stored as text.
                let title = file_name.replace('\0', "");
                uploads.push(Upload { bytes: bytes.to_vec(), format, title });
            }
            (other, None) => {
                return Err(Error::invalid(format!("unexpected form field `{other}`")));
            }
        }
    }
    Ok((uploads, collection, metadata))
}

fn multipart_error(err: axum::extract::multipart::MultipartError) -> Error {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge
    } else {
        Error::bad_request(err.body_text())
    }
}

fn text_field(bytes: &Bytes) -> Result<String> {
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| Error::invalid("form fields must be UTF-8"))?;
    if text.contains('\0') {
        return Err(Error::nul_character());
    }
    Ok(text)
}

async fn read_json(state: &AppState, tenant: &Tenant, body: &CreateDocumentRequest) -> Result<Upload> {
    match (&body.text, &body.s3_uri) {
        (Some(text), None) => {
            let format = match body.content_type.as_deref() {
                None => Format::Text,
                Some(ct) => Format::from_content_type(ct)
                    .filter(|f| *f != Format::Pdf)
                    .ok_or_else(|| Error::UnsupportedMediaType(format!("unsupported content_type {ct} for text")))?,
            };
            if text.trim().is_empty() {
                return Err(Error::invalid("text is empty"));
            }
            let title =
                body.title.clone().unwrap_or_else(|| text.chars().take(60).collect::<String>().trim().to_string());
            Ok(Upload { bytes: text.as_bytes().to_vec(), format, title })
        }
        (None, Some(uri)) => {
            Ok(domain::import(state, tenant, uri, body.content_type.as_deref(), body.title.clone()).await?)
        }
        _ => Err(Error::invalid("send exactly one of `text` and `s3_uri`")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// `queued`, `processing`, `indexed` or `failed`.
    #[param(pattern = "^(queued|processing|indexed|failed)?$")]
    status: Option<String>,
    collection: Option<String>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// Comma-separated document ids (at most 200): only these.
    ids: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    documents: Vec<Document>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

fn encode_cursor(doc: &Document) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{}", doc.created_at.to_rfc3339(), doc.id))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid)> {
    let invalid = || Error::BadRequest { code: "invalid_cursor", message: "cursor is not valid".into() };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let (at, id) = raw.split_once('|').ok_or_else(invalid)?;
    Ok((
        DateTime::parse_from_rfc3339(at).map_err(|_| invalid())?.with_timezone(&Utc),
        id.parse().map_err(|_| invalid())?,
    ))
}

/// The tenant's documents, newest first.
#[utoipa::path(get, path = "/v1/documents", tag = "documents", security(("api_key" = [])), params(ListParams),
    responses((status = 200, body = DocumentList)))]
pub async fn list_documents(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(mut params): Query<ListParams>,
) -> Result<AppJson<DocumentList>> {
    // An empty value (`?status=`) means the parameter was not given.
    for value in [&mut params.status, &mut params.collection, &mut params.cursor, &mut params.ids] {
        value.take_if(|v| v.is_empty());
    }
    let status = params
        .status
        .as_deref()
        .map(str::parse::<DocumentStatus>)
        .transpose()
        .map_err(|()| Error::invalid("status must be queued, processing, indexed or failed"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 200"));
    }
    let before = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let ids = params
        .ids
        .as_deref()
        .map(|raw| {
            let ids: Result<Vec<Uuid>, _> = raw.split(',').filter(|s| !s.is_empty()).map(str::parse).collect();
            ids.ok()
                .filter(|ids| ids.len() <= 200)
                .ok_or_else(|| Error::invalid("ids must be at most 200 comma-separated UUIDs"))
        })
        .transpose()?;
    let filter = DocumentFilter { status, collection: params.collection, ids };
    let mut docs: Vec<Document> = views::all(documents::list(&state.db, tenant.id, &filter, before, limit + 1).await?);
    let next_cursor = if docs.len() as i64 > limit {
        docs.truncate(limit as usize);
        docs.last().map(encode_cursor)
    } else {
        None
    };
    Ok(AppJson(DocumentList { documents: docs, next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    collections: Vec<CollectionSummary>,
}

/// The tenant's collections, by name, with their document, indexed and chunk counts.
#[utoipa::path(get, path = "/v1/collections", tag = "documents", security(("api_key" = [])),
    responses((status = 200, body = CollectionList)))]
pub async fn list_collections(State(state): State<AppState>, tenant: Tenant) -> Result<AppJson<CollectionList>> {
    Ok(AppJson(CollectionList { collections: views::all(documents::collections(&state.db, tenant.id).await?) }))
}

/// The tenant's document row (its S3 key included), or 404.
async fn find_row(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<documents::Document> {
    documents::get(&state.db, tenant.id, id).await?.ok_or(Error::NotFound("document"))
}

async fn find(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<Document> {
    Ok(find_row(state, tenant, id).await?.into())
}

/// One document: status (with the failure reason), counts and timings.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents", security(("api_key" = [])),
    responses((status = 200, body = Document), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn get_document(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<Uuid>,
) -> Result<AppJson<Document>> {
    Ok(AppJson(find(&state, &tenant, id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ChunkParams {
    /// Return chunks after this ordinal (the last one of the previous page).
    after: Option<i32>,
    /// 1 to 500, default 100.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkList {
    chunks: Vec<ChunkView>,
}

/// The document's chunks in order.
#[utoipa::path(get, path = "/v1/documents/{id}/chunks", tag = "documents", security(("api_key" = [])), params(ChunkParams),
    responses((status = 200, body = ChunkList), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn list_chunks(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<Uuid>,
    Query(params): Query<ChunkParams>,
) -> Result<AppJson<ChunkList>> {
    find(&state, &tenant, id).await?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 500"));
    }
    let chunks =
        views::all(chunks::list_for_document(&state.db, tenant.id, id, params.after.unwrap_or(-1), limit).await?);
    Ok(AppJson(ChunkList { chunks }))
}

/// The original bytes, with their content type. 410 `original_missing` if the
/// object store no longer holds them (the document is marked so).
#[utoipa::path(get, path = "/v1/documents/{id}/content", tag = "documents", security(("api_key" = [])),
    responses((status = 200, description = "the original document"), (status = 404, body = crate::api::error::ErrorBody),
        (status = 410, body = crate::api::error::ErrorBody)))]
pub async fn get_content(State(state): State<AppState>, tenant: Tenant, Path(id): Path<Uuid>) -> Result<Response> {
    let doc = find_row(&state, &tenant, id).await?;
    let bytes = domain::read_original(&state, &doc).await?;
    // An uploaded HTML page is the uploader's markup served from the console's
    // origin: a browser that opens it must download it, never sniff it into
    // another type, and, should it render it anyway, run nothing in it.
    let headers = [
        (header::CONTENT_TYPE, doc.content_type),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
        (header::CONTENT_DISPOSITION, attachment(&doc.title)),
    ];
    Ok((headers, bytes).into_response())
}

/// `attachment` with the title as file name: an ASCII fallback, and the exact
/// name in RFC 8187's `filename*` for clients that read it.
fn attachment(title: &str) -> String {
    let fallback: String =
        title.chars().map(|c| if c.is_ascii_alphanumeric() || " .-_()".contains(c) { c } else { '_' }).collect();
    let mut exact = String::new();
    for byte in title.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            exact.push(byte as char);
        } else {
            exact.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
}

/// Deletes the document, its chunks and its original, whatever its status.
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "documents", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn delete_document(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    domain::delete(&state, tenant.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues the document for indexing again (e.g. after a failure or a model change).
#[utoipa::path(post, path = "/v1/documents/{id}/reindex", tag = "documents", security(("api_key" = [])),
    responses((status = 202, body = Document), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn reindex_document(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, AppJson<Document>)> {
    let queued = domain::requeue_for_index(&state, tenant.id, &[id]).await?;
    if queued.is_empty() {
        return Err(Error::NotFound("document"));
    }
    Ok((StatusCode::ACCEPTED, AppJson(find(&state, &tenant, id).await?)))
}

/// Queues a summary of the document (written to its `summary` field when done).
#[utoipa::path(post, path = "/v1/documents/{id}/summarize", tag = "documents", security(("api_key" = [])),
    responses((status = 202, body = Document), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn summarize_document(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, AppJson<Document>)> {
    let doc = find_row(&state, &tenant, id).await?;
    domain::request_summary(&state, &doc).await?;
    Ok((StatusCode::ACCEPTED, AppJson(doc.into())))
}

/// Which documents a batch operation applies to: `ids`, a `collection`, or `all`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    ids: Option<Vec<Uuid>>,
    collection: Option<String>,
    /// Must be true to select every document of the tenant.
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    queued: usize,
    ids: Vec<Uuid>,
}

async fn select(
    state: &AppState,
    tenant: &Tenant,
    request: BatchRequest,
    status: Option<DocumentStatus>,
) -> Result<Vec<Uuid>> {
    if request.ids.is_none() && request.collection.is_none() && !request.all {
        return Err(Error::invalid("give `ids`, a `collection`, or `\"all\": true`"));
    }
    let filter = DocumentFilter { status, collection: request.collection, ids: request.ids };
    Ok(documents::ids(&state.db, tenant.id, &filter).await?)
}

/// Re-indexes many documents, e.g. all of a tenant's after an embedding model
/// change. Searches keep using each document's current vectors until its new
/// ones are committed.
#[utoipa::path(post, path = "/v1/documents/reindex", tag = "documents", security(("api_key" = [])),
    request_body = BatchRequest, responses((status = 202, body = BatchResponse)))]
pub async fn reindex_documents(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(request): AppJson<BatchRequest>,
) -> Result<(StatusCode, AppJson<BatchResponse>)> {
    let ids = select(&state, &tenant, request, None).await?;
    let ids = domain::requeue_for_index(&state, tenant.id, &ids).await?;
    Ok((StatusCode::ACCEPTED, AppJson(BatchResponse { queued: ids.len(), ids })))
}

/// Summarizes many indexed documents.
#[utoipa::path(post, path = "/v1/documents/summarize", tag = "documents", security(("api_key" = [])),
    request_body = BatchRequest, responses((status = 202, body = BatchResponse)))]
pub async fn summarize_documents(
    State(state): State<AppState>,
    tenant: Tenant,
    AppJson(request): AppJson<BatchRequest>,
) -> Result<(StatusCode, AppJson<BatchResponse>)> {
    let ids = select(&state, &tenant, request, Some(DocumentStatus::Indexed)).await?;
    domain::enqueue_all(
        &state,
        ids.iter().map(|&document_id| Job::SummarizeDocument { tenant_id: tenant.id, document_id }).collect(),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, AppJson(BatchResponse { queued: ids.len(), ids })))
}

#[cfg(test)]
mod tests {
    use super::attachment;

    #[test]
    fn a_download_is_named_after_its_title_whatever_characters_it_holds() {
        assert_eq!(attachment("notes.md"), "attachment; filename=\"notes.md\"; filename*=UTF-8''notes.md");
        assert_eq!(
            attachment("a \"b\"\r\n;c/ü.html"),
            "attachment; filename=\"a _b____c__.html\"; filename*=UTF-8''a%20%22b%22%0D%0A%3Bc%2F%C3%BC.html"
        );
    }
}

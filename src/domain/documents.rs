//! The document life cycle on the caller's side: store an upload (dedupe, the
//! original to S3, the row, the index job, and the undo when the queue
//! refuses), an `s3_uri` import (what it may name, and fetching it), reading
//! the original back (and marking it missing), re-indexing, summaries and
//! deletion. `api::documents` parses requests and calls these; the indexing
//! itself is the worker's (`worker::jobs::index`).

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::error::{DomainError, Result};
use crate::domain::state::AppState;
use crate::domain::tenant::Tenant;
use crate::infra::queue::Job;
use crate::ingest::extract::Format;
use crate::store::aggregates;
use crate::store::documents::{self, Document, NewDocument};

/// An original to store: its bytes, detected format and title.
pub struct Upload {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub title: String,
}

/// What [`store`] did: the document, and whether it was already there.
pub struct Stored {
    pub document: Document,
    pub duplicate: bool,
}

/// Stores an upload: the existing document when the same content and type is
/// already in the collection; otherwise the original in S3 (under a key made of
/// tenant and id, never the file name), the row as `queued`, and the index job.
/// A refused enqueue undoes the rest, so nothing is left half-done.
///
/// The steps run in a task of their own, so a caller that goes away (the
/// request timeout, a client that disconnects) cannot cut between the row and
/// its job, which would leave the document `queued` with nothing to index it
/// until the sweeper's threshold: a store once started finishes or is undone.
pub async fn store(
    state: &AppState,
    tenant: &Tenant,
    collection: &str,
    metadata: &serde_json::Value,
    upload: Upload,
) -> Result<Stored> {
    let (state, tenant_id, collection, metadata) = (state.clone(), tenant.id, collection.to_string(), metadata.clone());
    let task = tokio::spawn(async move { store_whole(&state, tenant_id, &collection, &metadata, upload).await });
    match task.await {
        Ok(stored) => stored,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => Err(DomainError::Unavailable("the server is shutting down; try again".into())),
    }
}

async fn store_whole(
    state: &AppState,
    tenant_id: Uuid,
    collection: &str,
    metadata: &serde_json::Value,
    upload: Upload,
) -> Result<Stored> {
    let content_hash = hex::encode(Sha256::digest(&upload.bytes));
    if let Some(existing) =
        documents::find_by_hash(&state.db, tenant_id, collection, &content_hash, upload.format.content_type()).await?
    {
        return Ok(Stored { document: existing, duplicate: true });
    }
    let id = Uuid::now_v7();
    let s3_key = original_key(tenant_id, id);
    let size_bytes = upload.bytes.len() as i64;
    state.blobs.put(&s3_key, upload.bytes, upload.format.content_type()).await?;
    let new = NewDocument {
        id,
        tenant_id,
        collection,
        title: &upload.title,
        content_type: upload.format.content_type(),
        s3_key: &s3_key,
        content_hash: &content_hash,
        size_bytes,
        metadata,
    };
    let Some(document) = documents::insert(&state.db, &new).await? else {
        // A concurrent upload of the same content won; drop our copy.
        let _ = state.blobs.delete(&s3_key).await;
        let existing = documents::find_by_hash(&state.db, tenant_id, collection, &content_hash, new.content_type)
            .await?
            .ok_or(DomainError::Conflict("retry the upload".into()))?;
        return Ok(Stored { document: existing, duplicate: true });
    };
    enqueue(state, &document).await?;
    tracing::info!(document.id = %id, size_bytes, "document queued");
    Ok(Stored { document, duplicate: false })
}

/// Sends the index job; if SQS refuses, undoes the upload so nothing is left half-done.
async fn enqueue(state: &AppState, document: &Document) -> Result<()> {
    let job = Job::IndexDocument { tenant_id: document.tenant_id, document_id: document.id };
    if let Err(err) = enqueue_all(state, vec![job]).await {
        let _ = documents::delete(&state.db, document.tenant_id, document.id).await;
        let _ = state.blobs.delete(&document.s3_key).await;
        return Err(err);
    }
    Ok(())
}

/// Where a document's original is stored: made of tenant and id, never of a
/// caller's file name.
pub fn original_key(tenant_id: Uuid, document_id: Uuid) -> String {
    format!("tenants/{tenant_id}/documents/{document_id}/original")
}

/// The (tenant, document) an [`original_key`] belongs to; `None` for any other key.
pub fn document_of_original(key: &str) -> Option<(Uuid, Uuid)> {
    match key.split('/').collect::<Vec<_>>()[..] {
        ["tenants", tenant, "documents", id, "original"] => Some((tenant.parse().ok()?, id.parse().ok()?)),
        _ => None,
    }
}

/// The key an `s3_uri` may name: only objects under the caller's own import
/// prefix, `s3://<bucket>/imports/<tenant id>/`. Never stolid's stored originals
/// (`tenants/...`), never another tenant's imports. The check is made before S3
/// is asked anything, so a refusal says nothing about whether the object exists.
fn importable_key<'a>(bucket: &str, tenant: &Tenant, uri: &'a str) -> Result<&'a str> {
    let (uri_bucket, key) = uri
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| DomainError::invalid("s3_uri must look like s3://<bucket>/<key>"))?;
    let prefix = import_prefix(tenant.id);
    let allowed = uri_bucket == bucket
        && key.len() > prefix.len()
        && key.starts_with(&prefix)
        && !key.split('/').any(|segment| segment == ".." || segment == ".");
    if !allowed {
        return Err(DomainError::Forbidden(format!("s3_uri may only name objects under s3://{bucket}/{prefix}")));
    }
    Ok(key)
}

/// Fetches an object a tenant registers by `s3_uri`: only under its own
/// import prefix ([`importable_key`], checked before S3 is asked), of a type
/// stolid reads (`content_type`, else the key's extension), and no larger than
/// an upload may be. The title defaults to the key's file name.
pub async fn import(
    state: &AppState,
    tenant: &Tenant,
    uri: &str,
    content_type: Option<&str>,
    title: Option<String>,
) -> Result<Upload> {
    let key = importable_key(state.blobs.bucket(), tenant, uri)?;
    let format = Format::detect(content_type, Some(key)).ok_or_else(|| {
        DomainError::Unsupported(format!("{key}: unsupported type; send text, Markdown, HTML or PDF"))
    })?;
    let bytes = state.blobs.get(key).await?.ok_or(DomainError::NotFound("S3 object"))?;
    if bytes.len() > state.config.max_body_bytes {
        return Err(DomainError::TooLarge);
    }
    let title = title.unwrap_or_else(|| key.rsplit('/').next().unwrap_or(key).to_string());
    Ok(Upload { bytes, format, title })
}

/// A document's original bytes. When the object store no longer holds them,
/// the document is marked (`original_missing_since`) and the caller told so:
/// its indexed text stays searchable, but there is nothing to serve.
pub async fn read_original(state: &AppState, document: &Document) -> Result<Vec<u8>> {
    match state.blobs.get(&document.s3_key).await? {
        Some(bytes) => Ok(bytes),
        None => {
            documents::mark_original_missing(&state.db, document.tenant_id, document.id).await?;
            tracing::error!(document_id = %document.id, "the original is missing from the object store");
            Err(DomainError::Gone {
                code: "original_missing",
                message: "the object store no longer holds this document's original; its indexed text is still \
                          searchable"
                    .into(),
            })
        }
    }
}

/// Queues a summary of one document: a document that failed to index has no
/// text to summarize.
pub async fn request_summary(state: &AppState, document: &Document) -> Result<()> {
    if document.status == documents::DocumentStatus::Failed {
        return Err(DomainError::Conflict("the document failed to index; nothing to summarize".into()));
    }
    enqueue_all(state, vec![Job::SummarizeDocument { tenant_id: document.tenant_id, document_id: document.id }]).await
}

/// Where operators (or a pipeline with S3 access) put files a tenant then registers by `s3_uri`.
fn import_prefix(tenant_id: Uuid) -> String {
    format!("imports/{tenant_id}/")
}

/// Marks the documents `queued` and sends their jobs; if SQS refuses, puts each
/// back as it was, so no document is left `queued` with no message to finish it.
pub async fn requeue_for_index(state: &AppState, tenant_id: Uuid, ids: &[Uuid]) -> Result<Vec<Uuid>> {
    let prior = documents::mark_many_queued(&state.db, tenant_id, ids).await?;
    let ids: Vec<Uuid> = prior.iter().map(|p| p.id).collect();
    let jobs = ids.iter().map(|&document_id| Job::IndexDocument { tenant_id, document_id }).collect();
    if let Err(err) = enqueue_all(state, jobs).await {
        if let Err(undo) = documents::restore_status(&state.db, tenant_id, &prior).await {
            tracing::error!(error = %undo, "could not restore the documents' status; the sweeper will re-enqueue them");
        }
        return Err(err);
    }
    Ok(ids)
}

/// Sends the jobs; 503-worthy when SQS refuses.
pub async fn enqueue_all(state: &AppState, jobs: Vec<Job>) -> Result<()> {
    let bodies = jobs.iter().map(Job::to_message).collect();
    state.queue.send_many(bodies).await.map_err(|err| {
        tracing::error!(error = format!("{err:#}"), "could not queue jobs");
        DomainError::Unavailable("the job queue is unavailable; try again".into())
    })
}

/// Deletes the row (chunks cascade) and then the original: a job in flight
/// finds nothing to write to, and a failed S3 delete leaves an orphan for the
/// sweeper, never a row without its original.
pub async fn delete(state: &AppState, tenant_id: Uuid, id: Uuid) -> Result<()> {
    let (s3_key, collection) =
        documents::delete(&state.db, tenant_id, id).await?.ok_or(DomainError::NotFound("document"))?;
    if let Err(err) = state.blobs.delete(&s3_key).await {
        tracing::warn!(error = format!("{err:#}"), s3_key, "deleting the original failed; the sweeper will remove it");
    }
    // Pages the deleted one repeated may no longer be aggregates; off the
    // request's path, and the sweeper measures if this task dies first.
    let db = state.db.clone();
    tokio::spawn(async move { measure_aggregates(&db, tenant_id, &collection).await });
    Ok(())
}

/// Measures the collection's aggregate marks after a change this task
/// committed (`store::aggregates`); a failure is logged, and the sweeper
/// measures instead.
pub async fn measure_aggregates(db: &sqlx::PgPool, tenant_id: Uuid, collection: &str) {
    if let Err(err) = aggregates::refresh(db, tenant_id, collection).await {
        tracing::warn!(error = format!("{err:#}"), "measuring the collection's aggregate documents failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_keys_name_their_document_and_other_keys_do_not() {
        let (tenant, id) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(document_of_original(&original_key(tenant, id)), Some((tenant, id)));
        assert_eq!(document_of_original(&format!("imports/{tenant}/documents/{id}/original")), None);
        assert_eq!(document_of_original("tenants/t/documents/not-a-uuid/original"), None);
        assert_eq!(document_of_original(&format!("tenants/t/documents/{id}/original")), None);
    }
}

//! S3: where original documents and artifacts live. A thin wrapper so the rest
//! of the code says `blobs.put(key, bytes)` and never sees the SDK's builders.
//!
//! Every call has a deadline (`AWS_TIMEOUT_SECS` per attempt): an S3 that
//! accepts connections and never answers fails the call in seconds, which the
//! API answers with 503 and a job retries, instead of hanging for minutes.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;

/// S3 could not be reached or failed; the cause is in the chain (for the log).
#[derive(Debug, thiserror::Error)]
#[error("object storage is unavailable: {0:#}")]
pub struct StorageError(#[from] anyhow::Error);

pub type Result<T> = std::result::Result<T, StorageError>;

/// A key found by [`Blobs::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub modified: chrono::DateTime<chrono::Utc>,
}

#[derive(Clone)]
pub struct Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Bounds reading an object's body, which the SDK's timeouts do not cover.
    body_timeout: Duration,
}

impl Blobs {
    pub fn new(sdk: &aws_config::SdkConfig, path_style: bool, bucket: &str, attempt_timeout: Duration) -> Self {
        // Emulators answer on one host, so buckets go in the path, not the host name.
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style)
            .timeout_config(crate::infra::aws::call_timeouts(attempt_timeout))
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: bucket.to_string(),
            body_timeout: attempt_timeout.mul_f64(2.5),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .with_context(|| format!("putting s3://{}/{key}", self.bucket))?;
        Ok(())
    }

    /// The object's bytes, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let result = self.client.get_object().bucket(&self.bucket).key(key).send().await;
        match result {
            Ok(output) => {
                let bytes = tokio::time::timeout(self.body_timeout, output.body.collect())
                    .await
                    .map_err(|_| anyhow::anyhow!("reading s3://{}/{key} timed out", self.bucket))?
                    .context("reading object body")?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(err) => Err(anyhow::Error::new(err).context(format!("getting s3://{}/{key}", self.bucket)).into()),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("deleting s3://{}/{key}", self.bucket))?;
        Ok(())
    }

    /// One page (up to 1,000) of the keys under `prefix` with their last-modified
    /// time, and the token for the next page.
    pub async fn list(
        &self,
        prefix: &str,
        page_size: i32,
        token: Option<String>,
    ) -> Result<(Vec<Listed>, Option<String>)> {
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(page_size)
            .set_continuation_token(token)
            .send()
            .await
            .with_context(|| format!("listing s3://{}/{prefix}", self.bucket))?;
        let listed = output
            .contents()
            .iter()
            .filter_map(|object| {
                let modified = object.last_modified()?;
                let modified = chrono::DateTime::from_timestamp(modified.secs(), modified.subsec_nanos())?;
                Some(Listed { key: object.key()?.to_string(), modified })
            })
            .collect();
        let next = if output.is_truncated() == Some(true) { output.next_continuation_token } else { None };
        Ok((listed, next))
    }

    /// Whether the bucket is reachable, for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        self.client.head_bucket().bucket(&self.bucket).send().await.context("head_bucket")?;
        Ok(())
    }
}

//! S3: where original documents and artifacts live. A thin wrapper so the rest
//! of the code says `blobs.put(key, bytes)` and never sees the SDK's builders.

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;

#[derive(Clone)]
pub struct Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl Blobs {
    pub fn new(sdk: &aws_config::SdkConfig, path_style: bool, bucket: &str) -> Self {
        // Emulators answer on one host, so buckets go in the path, not the host name.
        let config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(path_style).build();
        Self { client: aws_sdk_s3::Client::from_conf(config), bucket: bucket.to_string() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> anyhow::Result<()> {
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
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let result = self.client.get_object().bucket(&self.bucket).key(key).send().await;
        match result {
            Ok(output) => {
                let bytes = output.body.collect().await.context("reading object body")?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(err) => Err(anyhow::Error::new(err).context(format!("getting s3://{}/{key}", self.bucket))),
        }
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("deleting s3://{}/{key}", self.bucket))?;
        Ok(())
    }

    /// Whether the bucket is reachable, for `/readyz`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.client.head_bucket().bucket(&self.bucket).send().await.context("head_bucket")?;
        Ok(())
    }
}

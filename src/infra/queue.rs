//! SQS: the job queue between the API and the workers. A thin wrapper over
//! aws-sdk-sqs, and the contract of its messages ([`Job`]): the API and the
//! sweeper send them, the workers run them. The dead-letter queue is configured
//! on the queue itself (redrive policy), not here.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A queued job, as JSON: `{"type": "...", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Job {
    /// Extract, chunk, embed and store one document.
    IndexDocument { tenant_id: Uuid, document_id: Uuid },
    /// Write a model-made summary of an indexed document.
    SummarizeDocument { tenant_id: Uuid, document_id: Uuid },
}

impl Job {
    pub fn to_message(&self) -> String {
        serde_json::to_string(self).expect("jobs always serialize")
    }
}

/// The longest delay SQS gives a message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    /// The same, with the long-poll wait added to its deadlines.
    poll_client: aws_sdk_sqs::Client,
    url: String,
}

/// A received message, with what the worker needs to settle it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
}

impl Queue {
    /// `attempt_timeout` bounds each call (an SQS that hangs fails the call in
    /// seconds); receives get SQS's longest wait (20 s) on top.
    pub fn new(sdk: &aws_config::SdkConfig, url: &str, attempt_timeout: Duration) -> Self {
        let client = |timeout| {
            let config = aws_sdk_sqs::config::Builder::from(sdk)
                .timeout_config(crate::infra::aws::call_timeouts(timeout))
                .build();
            aws_sdk_sqs::Client::from_conf(config)
        };
        Self {
            client: client(attempt_timeout),
            poll_client: client(attempt_timeout + Duration::from_secs(20)),
            url: url.to_string(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn send(&self, body: String) -> anyhow::Result<String> {
        let output =
            self.client.send_message().queue_url(&self.url).message_body(body).send().await.context("send_message")?;
        Ok(output.message_id.unwrap_or_default())
    }

    /// Sends a message that becomes visible after `delay` (SQS allows up to 15 minutes).
    pub async fn send_delayed(&self, body: String, delay: Duration) -> anyhow::Result<()> {
        let delay = delay.min(MAX_DELAY).as_secs() as i32;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
            .context("send_message")?;
        Ok(())
    }

    /// Sends many messages, ten per request (SQS's batch limit).
    pub async fn send_many(&self, bodies: Vec<String>) -> anyhow::Result<()> {
        for (batch_no, batch) in bodies.chunks(10).enumerate() {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(format!("m{batch_no}-{i}"))
                        .message_body(body)
                        .build()
                        .context("building a batch entry")
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .context("send_message_batch")?;
            anyhow::ensure!(output.failed.is_empty(), "SQS refused {} of the messages", output.failed.len());
        }
        Ok(())
    }

    /// Long-polls for up to `max` (at most 10) messages, hiding them for `visibility`.
    pub async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>> {
        let output = self
            .poll_client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .context("receive_message")?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| Received {
                receive_count: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
                message_id: m.message_id.unwrap_or_default(),
                receipt_handle: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            })
            .collect())
    }

    /// Deletes up to ten messages in one call; returns how many SQS refused
    /// (a refused delete is redelivered later, and jobs are idempotent).
    pub async fn delete_many(&self, receipt_handles: &[String]) -> anyhow::Result<usize> {
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(format!("d{i}"))
                    .receipt_handle(handle)
                    .build()
                    .context("building a batch entry")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .context("delete_message_batch")?;
        Ok(output.failed.len())
    }

    /// Extends (or, with zero, ends) the time the message stays hidden.
    pub async fn set_visibility(&self, receipt_handle: &str, visibility: Duration) -> anyhow::Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(visibility.as_secs() as i32)
            .send()
            .await
            .context("change_message_visibility")?;
        Ok(())
    }

    /// The redrive policy's `maxReceiveCount`: how many deliveries before SQS
    /// moves a message to the dead-letter queue (`None` without a DLQ).
    pub async fn max_receive_count(&self) -> anyhow::Result<Option<u32>> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .context("get_queue_attributes")?;
        let policy = output.attributes.and_then(|a| a.get(&QueueAttributeName::RedrivePolicy).cloned());
        Ok(policy.and_then(|p| {
            let json: serde_json::Value = serde_json::from_str(&p).ok()?;
            match &json["maxReceiveCount"] {
                serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            }
        }))
    }

    /// Messages waiting plus messages being worked on (both approximate, as SQS reports them).
    pub async fn depth(&self) -> anyhow::Result<u64> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .context("get_queue_attributes")?;
        let attributes = output.attributes.unwrap_or_default();
        let count = |name| attributes.get(&name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    /// Whether the queue is reachable, for `/readyz`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .context("get_queue_attributes")?;
        Ok(())
    }
}

//! SQS adapter of the job queue: a standard queue plus its DLQ (redrive after 3 receives).
//! Processing is idempotent (events are triggers; the worker re-reads state), so a standard
//! queue's at-least-once delivery and loose ordering are harmless.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use chrono::{DateTime, Utc};

use super::sdk_message;
use crate::domain::{Job, TenantId};
use crate::error::QueueError;
use crate::ports::{Delivery, DepthScope, FailOutcome, JobQueue, QueueDepth};

/// Receives before SQS moves a message to the DLQ (the queue's redrive `maxReceiveCount`).
pub const MAX_RECEIVES: u32 = 3;
/// SQS takes at most 10 entries per batch call.
const BATCH: usize = 10;
/// The longest delay SQS allows on a message.
const MAX_DELAY: Duration = Duration::from_secs(900);

fn backend(e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(e.to_string())
}

/// The sync queue and its dead-letter queue.
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    dlq_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url: dlq_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    pub fn dlq_url(&self) -> &str {
        &self.dlq_url
    }

    fn entry(id: usize, job: &Job) -> Result<SendMessageBatchRequestEntry, QueueError> {
        SendMessageBatchRequestEntry::builder()
            .id(format!("m{id}"))
            .message_body(serde_json::to_string(job).map_err(backend)?)
            .message_attributes(
                "tenant",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(job.tenant().as_str())
                    .build()
                    .map_err(backend)?,
            )
            .build()
            .map_err(backend)
    }

    /// Sends raw bodies in batches of 10, resending entries SQS reports as failed (once).
    async fn send_bodies(&self, queue_url: &str, jobs: &[Job]) -> Result<(), QueueError> {
        for chunk in jobs.chunks(BATCH) {
            let mut pending: Vec<(usize, &Job)> = chunk.iter().enumerate().collect();
            for attempt in 0..3 {
                let entries = pending
                    .iter()
                    .map(|(i, e)| Self::entry(*i, e))
                    .collect::<Result<Vec<_>, _>>()?;
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| backend(sdk_message(&e)))?;
                let failed: Vec<String> = out.failed().iter().map(|f| f.id().to_string()).collect();
                if failed.is_empty() {
                    break;
                }
                if attempt == 2 {
                    return Err(backend(format!(
                        "SQS refused {} messages: {:?}",
                        failed.len(),
                        out.failed()
                    )));
                }
                pending.retain(|(i, _)| failed.contains(&format!("m{i}")));
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
        Ok(())
    }

    /// Sends an event with a delay (at most 15 minutes; a longer wait repeats the defer).
    async fn send_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(serde_json::to_string(job).map_err(backend)?)
            .delay_seconds(delay.min(MAX_DELAY).as_secs() as i32)
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(())
    }

    async fn count(&self, url: &str) -> Result<QueueDepth, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(QueueDepth {
            jobs: out
                .attributes()
                .map(|a| a.values().filter_map(|v| v.parse::<usize>().ok()).sum())
                .unwrap_or(0),
            scope: DepthScope::Deployment,
        })
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError> {
        self.send_bodies(&self.queue_url, jobs).await
    }

    async fn enqueue_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        self.send_delayed(job, delay).await
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        let mut deliveries = Vec::new();
        for m in out.messages() {
            let (Some(body), Some(receipt)) = (m.body(), m.receipt_handle()) else {
                continue;
            };
            let attempt = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            match Job::parse(body) {
                Ok(job) => deliveries.push(Delivery {
                    job,
                    attempt,
                    receipt: receipt.to_string(),
                }),
                Err(e) => tracing::error!(error = %e, "unparseable message left for the DLQ"),
            }
        }
        Ok(deliveries)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(&delivery.receipt)
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(())
    }

    /// Makes the message visible again after `retry_after`; SQS's redrive policy moves it to
    /// the DLQ on the receive after the third.
    async fn fail(
        &self,
        delivery: &Delivery,
        _error: &str,
        retry_after: Duration,
    ) -> Result<FailOutcome, QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(retry_after.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| backend(sdk_message(&e)))?;
        Ok(if delivery.attempt >= MAX_RECEIVES {
            FailOutcome::DeadLettered
        } else {
            FailOutcome::WillRetry
        })
    }

    /// A fresh, delayed copy (its receive count starts again) replaces the message.
    async fn defer(&self, delivery: &Delivery, until: DateTime<Utc>) -> Result<(), QueueError> {
        let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        self.send_delayed(&delivery.job, wait).await?;
        self.ack(delivery).await
    }

    /// The queue is shared by all tenants and SQS counts whole queues: the deployment's depth.
    async fn depth(&self, _tenant: &TenantId) -> Result<QueueDepth, QueueError> {
        self.count(&self.queue_url).await
    }

    /// The DLQ is shared by all tenants: the deployment's depth (replay is per tenant).
    async fn dlq_depth(&self, _tenant: &TenantId) -> Result<QueueDepth, QueueError> {
        self.count(&self.dlq_url).await
    }

    /// Moves this tenant's dead letters back to the sync queue; other tenants' messages are
    /// released untouched. Returns how many moved.
    async fn replay_dlq(&self, tenant: &TenantId) -> Result<usize, QueueError> {
        let mut moved = 0;
        let mut others = Vec::new();
        for _ in 0..100 {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|e| backend(sdk_message(&e)))?;
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                let (Some(body), Some(receipt)) = (m.body(), m.receipt_handle()) else {
                    continue;
                };
                match Job::parse(body) {
                    Ok(job) if job.tenant() == tenant => {
                        self.send_bodies(&self.queue_url, &[job.replayed()]).await?;
                        self.client
                            .delete_message()
                            .queue_url(&self.dlq_url)
                            .receipt_handle(receipt)
                            .send()
                            .await
                            .map_err(|e| backend(sdk_message(&e)))?;
                        moved += 1;
                    }
                    _ => others.push(receipt.to_string()),
                }
            }
        }
        for receipt in others {
            let _ = self
                .client
                .change_message_visibility()
                .queue_url(&self.dlq_url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await;
        }
        Ok(moved)
    }
}

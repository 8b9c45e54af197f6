//! Where sync outcomes go outside AWS: a webhook URL (`OUTCOMES_WEBHOOK_URL`), or the log.
//! (In AWS: `adapters::aws::events`, an EventBridge bus.)

use async_trait::async_trait;
use tracing::info;

use crate::domain::SyncOutcome;
use crate::error::PublishError;
use crate::ports::OutcomeSink;

/// Each outcome as one log line (target `contact_sync::outcomes`, the outcome as JSON).
pub struct LogSink;

#[async_trait]
impl OutcomeSink for LogSink {
    async fn publish(&self, outcomes: &[SyncOutcome]) -> Result<(), PublishError> {
        for o in outcomes {
            let json = serde_json::to_string(o).unwrap_or_default();
            info!(target: "contact_sync::outcomes", tenant = %o.tenant(), kind = o.detail_type(), outcome = %json, "sync outcome");
        }
        Ok(())
    }
}

/// The outcomes POSTed as a JSON array to a URL, one request per batch; a failed request is
/// tried twice more.
pub struct WebhookSink {
    url: String,
    http: reqwest::Client,
}

impl WebhookSink {
    pub fn new(url: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            url: url.into(),
            http,
        }
    }
}

#[async_trait]
impl OutcomeSink for WebhookSink {
    async fn publish(&self, outcomes: &[SyncOutcome]) -> Result<(), PublishError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut last = String::new();
        for _ in 0..3 {
            match self.http.post(&self.url).json(outcomes).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("the outcomes webhook answered {}", r.status()),
                Err(e) => last = format!("the outcomes webhook is unreachable: {e}"),
            }
        }
        Err(PublishError {
            failed: outcomes.len(),
            message: last,
        })
    }
}

//! Sync outcomes on an Amazon EventBridge bus: `PutEvents` with at most 10 entries a call (the
//! API's limit), source `contact-sync`, detail type the outcome's kind, detail the outcome as
//! `docs/events.schema.json` describes it. Entries the bus refused are sent again, twice at most.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::sdk_message;
use crate::domain::{EVENT_SOURCE, SyncOutcome};
use crate::error::PublishError;
use crate::ports::OutcomeSink;

/// Entries one `PutEvents` call takes at most.
const BATCH: usize = 10;
/// Tries of one batch's refused entries.
const ATTEMPTS: usize = 3;

pub struct EventBridgeSink {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeSink {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }

    fn entry(&self, o: &SyncOutcome) -> Result<PutEventsRequestEntry, PublishError> {
        let detail = serde_json::to_string(o).map_err(|e| PublishError {
            failed: 1,
            message: e.to_string(),
        })?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(o.detail_type())
            .detail(detail)
            .build())
    }
}

#[async_trait]
impl OutcomeSink for EventBridgeSink {
    async fn publish(&self, outcomes: &[SyncOutcome]) -> Result<(), PublishError> {
        let mut failed = 0;
        let mut last = String::new();
        for chunk in outcomes.chunks(BATCH) {
            let mut pending: Vec<&SyncOutcome> = chunk.iter().collect();
            for _ in 0..ATTEMPTS {
                let entries = pending
                    .iter()
                    .map(|o| self.entry(o))
                    .collect::<Result<Vec<_>, _>>()?;
                match self
                    .client
                    .put_events()
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(out) if out.failed_entry_count() == 0 => {
                        pending.clear();
                        break;
                    }
                    // The results are in the entries' order: the refused ones go again.
                    Ok(out) => {
                        let results = out.entries();
                        last = results
                            .iter()
                            .find_map(|r| r.error_message().map(str::to_owned))
                            .unwrap_or_else(|| "entries refused".into());
                        pending = pending
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| {
                                results.get(*i).is_none_or(|r| r.error_code().is_some())
                            })
                            .map(|(_, o)| o)
                            .collect();
                    }
                    Err(e) => last = sdk_message(&e),
                }
            }
            failed += pending.len();
        }
        if failed > 0 {
            return Err(PublishError {
                failed,
                message: last,
            });
        }
        Ok(())
    }
}

//! Lambda handlers for the non-HTTP functions (the HTTP ones serve [`crate::http`]'s routers).
//! Each takes its dependencies explicitly, so tests call them with the events in `events/`.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use serde::Serialize;
use tracing::{error, info, warn};

use crate::domain::{ChangeEvent, Provider};
use crate::ports::JobQueue;
use crate::service::SyncService;
use crate::worker::run_event;

/// `sync-worker`: one SQS batch. Failed messages are reported as batch item failures (SQS
/// retries them; after 3 receives the redrive policy moves them to the DLQ). A job that meets a
/// spent quota is re-queued with a delay and counts as handled.
pub async fn handle_sqs_batch(
    service: &SyncService,
    queue: &dyn JobQueue,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let events: Vec<ChangeEvent> = event
        .records
        .iter()
        .filter_map(|m| m.body.as_deref().and_then(|b| serde_json::from_str(b).ok()))
        .collect();
    service.prefetch(&events).await;
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let attempt = message
            .attributes
            .get("ApproximateReceiveCount")
            .cloned()
            .unwrap_or_else(|| "1".into());
        let parsed = message
            .body
            .as_deref()
            .map(serde_json::from_str::<ChangeEvent>);
        let change = match parsed {
            Some(Ok(c)) => c,
            other => {
                // Not ours or corrupt: fail it so it ends in the DLQ for a human to look at.
                error!(message_id = %id, ?other, "unreadable sync message");
                response.add_failure(id);
                continue;
            }
        };
        match run_event(service, queue, &change).await {
            Ok(report) => {
                info!(tenant = %change.tenant, record = %change.record_id, app_writes = report.app_writes, crm_writes = report.crm_writes, "synced");
            }
            Err(err) => match err.deferred_until() {
                Some(until) => {
                    let delay = (until - Utc::now()).to_std().unwrap_or_default();
                    if let Err(e) = queue.enqueue_delayed(&change, delay).await {
                        error!(tenant = %change.tenant, error = %e, "could not defer; will retry");
                        response.add_failure(id);
                    } else {
                        info!(tenant = %change.tenant, record = %change.record_id, %until, "quota spent; deferred");
                    }
                }
                None => {
                    warn!(tenant = %change.tenant, record = %change.record_id, attempt, error = %err, "sync failed; SQS will retry");
                    response.add_failure(id);
                }
            },
        }
    }
    response
}

/// What one scheduled poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    pub tenants: usize,
    pub enqueued: usize,
    pub errors: Vec<String>,
}

/// `pipedrive-poll`: the EventBridge schedule. Polls the given provider of every tenant and
/// enqueues what changed (catching what webhooks missed).
pub async fn handle_schedule(
    service: &SyncService,
    queue: &dyn JobQueue,
    provider: Provider,
    event: EventBridgeEvent,
) -> PollReport {
    info!(source = %event.source, detail_type = %event.detail_type, "scheduled poll");
    let mut report = PollReport::default();
    let tenants: Vec<_> = service.tenants.all().map(|t| t.id.clone()).collect();
    for tenant in tenants {
        if !service.tenants.providers(&tenant).contains(&provider) {
            continue;
        }
        report.tenants += 1;
        match service.poll(&tenant, provider, queue, 20).await {
            Ok(n) => report.enqueued += n,
            Err(e) => {
                warn!(%tenant, %provider, error = %e, "poll failed");
                report.errors.push(format!("{tenant}: {e}"));
            }
        }
    }
    report
}

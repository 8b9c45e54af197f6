//! Lambda handlers for the non-HTTP functions (the HTTP ones serve [`crate::http`]'s routers).
//! Each takes its dependencies explicitly, so tests call them with the events in `events/`.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use serde::Serialize;
use tracing::{error, info, warn};

use crate::domain::Job;
use crate::ports::JobQueue;
use crate::sync::SyncService;
use crate::sync::worker::{Settlement, known_for, run, settlement};

/// `sync-worker`: one SQS batch. Each message is read once; the batch's CRM records are read
/// in batches; each job is run and settled by the worker's one [`settlement`]: done (SQS deletes
/// it), deferred past a spent quota (re-queued with a delay, counted as handled), or failed
/// (reported as a batch item failure: SQS retries it, and after 3 receives its redrive policy
/// moves it to the DLQ).
pub async fn handle_sqs_batch(
    service: &SyncService,
    queue: &dyn JobQueue,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut jobs: Vec<(String, String, Job)> = Vec::new();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let attempt = message
            .attributes
            .get("ApproximateReceiveCount")
            .cloned()
            .unwrap_or_else(|| "1".into());
        match message.body.as_deref().map(Job::parse) {
            Some(Ok(job)) => jobs.push((id, attempt, job)),
            other => {
                // Not ours or corrupt: fail it so it ends in the DLQ for a human to look at.
                error!(message_id = %id, error = ?other.map(|r| r.err().map(|e| e.to_string())), "unreadable sync message");
                response.add_failure(id);
            }
        }
    }
    let mut read = service
        .read_batch(&jobs.iter().map(|(_, _, j)| j).collect::<Vec<_>>())
        .await;
    for (id, attempt, job) in jobs {
        let known = known_for(&mut read, &job);
        let tenant = job.tenant().clone();
        match settlement(run(service, queue, &job, known).await) {
            Settlement::Done(report) => {
                info!(%tenant, ?job, app_writes = report.app_writes, crm_writes = report.crm_writes, "synced");
            }
            Settlement::Defer(until) => {
                let delay = (until - Utc::now()).to_std().unwrap_or_default();
                if let Err(e) = queue.enqueue_delayed(&job, delay).await {
                    error!(%tenant, error = %e, "could not defer; will retry");
                    response.add_failure(id);
                } else {
                    info!(%tenant, ?job, %until, "quota spent; deferred");
                }
            }
            Settlement::Retry { error, .. } => {
                warn!(%tenant, ?job, attempt, %error, "sync failed; SQS will retry");
                response.add_failure(id);
            }
        }
    }
    response
}

/// What one scheduled poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    /// Tenants looked at.
    pub tenants: usize,
    /// Tenant × CRM polls run.
    pub polls: usize,
    pub enqueued: usize,
    pub errors: Vec<String>,
}

/// `pipedrive-poll`: the EventBridge schedule. Polls every CRM of every tenant (Pipedrive and
/// HubSpot alike: a change whose webhook was lost is found within one period, not at the next
/// Sync Now) and enqueues what changed. One tenant's failing poll does not stop the others.
pub async fn handle_schedule(
    service: &SyncService,
    queue: &dyn JobQueue,
    event: EventBridgeEvent,
) -> PollReport {
    info!(source = %event.source, detail_type = %event.detail_type, "scheduled poll");
    let mut report = PollReport::default();
    let tenants = match service.tenants.resolve_all().await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "could not list the tenants");
            report.errors.push(format!("tenants: {e}"));
            return report;
        }
    };
    for tenant in tenants {
        report.tenants += 1;
        for provider in service.tenants.providers(&tenant) {
            report.polls += 1;
            match service.poll(&tenant, provider, queue, 20).await {
                Ok(n) => report.enqueued += n,
                Err(e) => {
                    warn!(%tenant, %provider, error = %e, "poll failed");
                    report.errors.push(format!("{tenant} {provider}: {e}"));
                }
            }
        }
    }
    report
}

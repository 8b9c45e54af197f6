//! The worker: runs queued change events through the sync service, with retries,
//! dead-lettering and quota deferral.

use tracing::{error, info, warn};

use crate::domain::{ChangeEvent, ChangeKind};
use crate::error::SyncError;
use crate::ports::{Delivery, FailOutcome, JobQueue};
use crate::service::{SyncReport, SyncService};

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Done(SyncReport),
    Retrying(String),
    DeadLettered(String),
    Deferred,
}

/// Runs one event: a reconcile (Sync Now) or a record sync.
pub async fn run_event(
    service: &SyncService,
    queue: &dyn JobQueue,
    event: &ChangeEvent,
) -> Result<SyncReport, SyncError> {
    if event.kind == ChangeKind::Reconcile {
        let continuing = event.provenance.as_deref() == Some(crate::service::RECONCILE_CONTINUE);
        service.reconcile(&event.tenant, queue, continuing).await?;
        Ok(SyncReport::default())
    } else {
        service.handle(event).await
    }
}

/// Handles one delivery and settles it on the queue.
pub async fn process(
    service: &SyncService,
    queue: &dyn JobQueue,
    delivery: &Delivery,
) -> Result<JobOutcome, SyncError> {
    let event = &delivery.event;
    match run_event(service, queue, event).await {
        Ok(report) => {
            queue.ack(delivery).await?;
            Ok(JobOutcome::Done(report))
        }
        Err(err) => {
            if let Some(until) = err.deferred_until() {
                info!(tenant = %event.tenant, record = %event.record_id, %until, "quota spent; job deferred");
                queue.defer(delivery, until).await?;
                return Ok(JobOutcome::Deferred);
            }
            let message = err.to_string();
            match queue.fail(delivery, &message, err.retry_after()).await? {
                FailOutcome::WillRetry => {
                    warn!(tenant = %event.tenant, record = %event.record_id, attempt = delivery.attempt, error = %message, "sync failed; will retry");
                    Ok(JobOutcome::Retrying(message))
                }
                FailOutcome::DeadLettered => {
                    error!(tenant = %event.tenant, record = %event.record_id, attempt = delivery.attempt, error = %message, "sync failed for good; dead-lettered");
                    Ok(JobOutcome::DeadLettered(message))
                }
            }
        }
    }
}

/// Receives up to `max` due jobs and processes them; returns how many were handled.
pub async fn run_once(
    service: &SyncService,
    queue: &dyn JobQueue,
    max: usize,
) -> Result<usize, SyncError> {
    let deliveries = queue.receive(max).await?;
    let n = deliveries.len();
    let events: Vec<_> = deliveries.iter().map(|d| d.event.clone()).collect();
    service.prefetch(&events).await;
    for d in &deliveries {
        process(service, queue, d).await?;
    }
    Ok(n)
}

//! The worker: runs queued [`Job`]s through the sync service and settles each one. What
//! becomes of a run — done, deferred past a spent quota, or retried (and after the last
//! attempt dead-lettered) — is decided once, by [`settlement`]; the local worker applies it to
//! its queue ([`settle`]) and the Lambda worker to its SQS batch response.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::{BatchRead, Known, SyncReport, SyncService};
use crate::domain::{ChangeKind, Job};
use crate::error::SyncError;
use crate::ports::{Delivery, FailOutcome, JobQueue};

/// What is to become of a job after one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Done(SyncReport),
    /// The CRM's daily quota is spent: run again after `until`, without counting an attempt.
    Defer(DateTime<Utc>),
    /// Failed: another attempt after `after` (the queue dead-letters it after the last one).
    Retry {
        after: Duration,
        error: String,
    },
}

/// The decision, from a run's result.
pub fn settlement(result: Result<SyncReport, SyncError>) -> Settlement {
    match result {
        Ok(report) => Settlement::Done(report),
        Err(err) => match err.deferred_until() {
            Some(until) => Settlement::Defer(until),
            None => Settlement::Retry {
                after: err.retry_after(),
                error: err.to_string(),
            },
        },
    }
}

/// What became of one delivery on the local queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Done(SyncReport),
    Retrying(String),
    DeadLettered(String),
    Deferred,
}

/// Runs one job: a change event (with its CRM record when a batch read has it) or a round of
/// Sync Now.
pub async fn run(
    service: &SyncService,
    queue: &dyn JobQueue,
    job: &Job,
    known: Option<Known>,
) -> Result<SyncReport, SyncError> {
    let started = crate::timing::start();
    let done = crate::timing::in_job(async {
        match job {
            Job::Change(event) => service.handle_known(event, known).await,
            Job::Reconcile { tenant, round } => service
                .reconcile(tenant, queue, *round)
                .await
                .map(|_| SyncReport::default()),
            Job::Check {
                tenant,
                provider,
                record_id,
            } => service.check_writes(tenant, *provider, record_id).await,
        }
    })
    .await;
    crate::timing::job(started);
    done
}

/// The batch-read record behind a job, if any.
pub fn known_for(read: &mut BatchRead, job: &Job) -> Option<Known> {
    let Job::Change(e) = job else { return None };
    if !matches!(e.kind, ChangeKind::Upsert | ChangeKind::Delete) {
        return None;
    }
    let provider = e.origin.provider()?;
    let key = (e.tenant.clone(), provider, e.record_id.clone());
    read.remove(&key)
}

/// Runs one delivery and settles it on the queue: ack, defer, or fail (the queue retries it or
/// dead-letters it after the last attempt).
pub async fn settle(
    service: &SyncService,
    queue: &dyn JobQueue,
    delivery: &Delivery,
    known: Option<Known>,
) -> Result<JobOutcome, SyncError> {
    let job = &delivery.job;
    let tenant = job.tenant();
    match settlement(run(service, queue, job, known).await) {
        Settlement::Done(report) => {
            queue.ack(delivery).await?;
            Ok(JobOutcome::Done(report))
        }
        Settlement::Defer(until) => {
            info!(%tenant, ?job, %until, "quota spent; job deferred");
            queue.defer(delivery, until).await?;
            Ok(JobOutcome::Deferred)
        }
        Settlement::Retry { after, error } => match queue.fail(delivery, &error, after).await? {
            FailOutcome::WillRetry => {
                warn!(%tenant, ?job, attempt = delivery.attempt, %error, "sync failed; will retry");
                Ok(JobOutcome::Retrying(error))
            }
            FailOutcome::DeadLettered => {
                error!(%tenant, ?job, attempt = delivery.attempt, %error, "sync failed for good; dead-lettered");
                let (contact_id, provider) = match job.change() {
                    Some(e) => match e.origin.provider() {
                        None => (Some(e.record_id.clone()), None),
                        Some(p) => (None, Some(p)),
                    },
                    None => (None, None),
                };
                service
                    .publish(vec![crate::domain::SyncOutcome::SyncFailed {
                        tenant: tenant.clone(),
                        contact_id,
                        provider,
                        error: error.clone(),
                        dead_lettered: true,
                        at: service.now(),
                    }])
                    .await;
                Ok(JobOutcome::DeadLettered(error))
            }
        },
    }
}

/// [`settle`] without a batch read.
pub async fn process(
    service: &SyncService,
    queue: &dyn JobQueue,
    delivery: &Delivery,
) -> Result<JobOutcome, SyncError> {
    settle(service, queue, delivery, None).await
}

/// Receives up to `max` due jobs, reads their CRM records in batches, and settles each;
/// returns how many were handled.
pub async fn run_once(
    service: &SyncService,
    queue: &dyn JobQueue,
    max: usize,
) -> Result<usize, SyncError> {
    let deliveries = queue.receive(max).await?;
    let jobs: Vec<&Job> = deliveries.iter().map(|d| &d.job).collect();
    let mut read = service.read_batch(&jobs).await;
    for d in &deliveries {
        let known = known_for(&mut read, &d.job);
        settle(service, queue, d, known).await?;
    }
    Ok(deliveries.len())
}

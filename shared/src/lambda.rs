//! Lambda handlers for the non-HTTP functions (the HTTP ones serve [`crate::http`]'s routers).
//! Each takes its dependencies explicitly, so tests call them with the events in `events/`.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::domain::Job;
use crate::ports::JobQueue;
use crate::sync::SyncService;
use crate::sync::worker::{Settlement, known_for, run, settlement};

/// A job is not started with less than this left of the invocation.
const MIN_JOB_TIME: std::time::Duration = std::time::Duration::from_secs(3);
/// Kept back from the invocation's deadline: time to re-queue what is left and answer.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The jobs' deadline in an invocation whose context says it ends at `deadline_ms` (ms since
/// the epoch, `lambda_runtime::Context::deadline`), a margin before it.
pub fn job_deadline(deadline_ms: u64) -> Instant {
    let left = (deadline_ms as i64 - Utc::now().timestamp_millis()).max(0) as u64;
    Instant::now() + std::time::Duration::from_millis(left).saturating_sub(DEADLINE_MARGIN)
}

/// `f` under `deadline`, when there is one.
async fn within<F: std::future::Future>(deadline: Option<Instant>, f: F) -> F::Output {
    match deadline {
        Some(d) => crate::deadline::within(d, f).await,
        None => f.await,
    }
}

/// `sync-worker`: one SQS batch. Each message is read once; the batch's CRM records are read
/// in batches; each job is run and settled by the worker's one [`settlement`]: done (SQS deletes
/// it), deferred past a spent quota (re-queued with a delay, counted as handled), or failed
/// (reported as a batch item failure: SQS retries it, and after 3 receives its redrive policy
/// moves it to the DLQ).
///
/// `deadline` (from the invocation's context, see [`job_deadline`]) bounds every job: a wait
/// that would cross it re-queues the job with that delay, and a job there is no time left to
/// start is re-queued at once; neither counts as an attempt.
pub async fn handle_sqs_batch(
    service: &SyncService,
    queue: &dyn JobQueue,
    event: SqsEvent,
    deadline: Option<Instant>,
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
    let listed = jobs.iter().map(|(_, _, j)| j).collect::<Vec<_>>();
    let mut read = within(deadline, service.read_batch(&listed)).await;
    for (id, attempt, job) in jobs {
        let known = known_for(&mut read, &job);
        let tenant = job.tenant().clone();
        if deadline.is_some_and(|d| Instant::now() + MIN_JOB_TIME > d) {
            // No time left to run it: back on the queue, due at once.
            match queue.enqueue_delayed(&job, std::time::Duration::ZERO).await {
                Ok(()) => info!(%tenant, ?job, "no time left in this invocation; re-queued"),
                Err(e) => {
                    error!(%tenant, error = %e, "could not re-queue; SQS will retry");
                    response.add_failure(id);
                }
            }
            continue;
        }
        match settlement(within(deadline, run(service, queue, &job, known)).await) {
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
    /// Sync Now backfills resumed after the daily budget they waited for reset.
    pub resumed: usize,
    pub errors: Vec<String>,
}

/// `pipedrive-poll`: the EventBridge schedule. Polls every CRM of every tenant (Pipedrive and
/// HubSpot alike: a change whose webhook was lost is found within one period, not at the next
/// Sync Now) and enqueues what changed; resumes a tenant's first sync that waited for a
/// CRM's daily budget once it reset. One tenant's failing poll does not stop the others.
///
/// `deadline` (see [`job_deadline`]) bounds the polls: one whose wait would cross it stops
/// there (its cursor at the last page enqueued, so the next run goes on from it), and polls
/// there is no time left to start are left to the next run of the schedule.
pub async fn handle_schedule(
    service: &SyncService,
    queue: &dyn JobQueue,
    event: EventBridgeEvent,
    deadline: Option<Instant>,
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
        match service.resume_waiting(&tenant, queue).await {
            Ok(resumed) => report.resumed += usize::from(resumed),
            Err(e) => {
                warn!(%tenant, error = %e, "could not resume the waiting backfill");
                report.errors.push(format!("{tenant} resume: {e}"));
            }
        }
        for provider in service.tenants.providers(&tenant) {
            if deadline.is_some_and(|d| Instant::now() + MIN_JOB_TIME > d) {
                warn!(%tenant, %provider, "no time left in this run; polled by the next");
                report
                    .errors
                    .push(format!("{tenant} {provider}: left to the next run"));
                continue;
            }
            report.polls += 1;
            match within(deadline, service.poll(&tenant, provider, queue, 20)).await {
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

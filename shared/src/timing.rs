//! Where a worker's time goes, as TRACE events under one target: the wall time of each CRM
//! call (`crm_us`), each hold of the embedded store (`store_us`), each plan (`plan_us`) and each
//! job (`job_us`), in microseconds. Off unless a subscriber enables the target (e.g.
//! `RUST_LOG=contact_sync::timing=trace`); the bench's worker-throughput part sums them.

use std::future::Future;
use std::time::Instant;

/// The events' target.
pub const TARGET: &str = "contact_sync::timing";

tokio::task_local! {
    /// Set while a job runs, so time spent for jobs is told from the API's and the ingest's.
    static IN_JOB: ();
}

/// Runs `f` as a job's work.
pub async fn in_job<F: Future>(f: F) -> F::Output {
    IN_JOB.scope((), f).await
}

fn within_job() -> bool {
    IN_JOB.try_with(|_| ()).is_ok()
}

/// Whether anyone listens (checked before taking the time, so it costs nothing when off).
pub fn on() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::TRACE)
}

/// A start time, when someone listens.
pub fn start() -> Option<Instant> {
    on().then(Instant::now)
}

fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A CRM call that began at `started` answered.
pub fn crm(started: Option<Instant>) {
    if let Some(s) = started {
        tracing::trace!(target: TARGET, crm_us = micros(s), job = within_job());
    }
}

/// The embedded store was held since `started`.
pub fn store(started: Option<Instant>) {
    if let Some(s) = started {
        tracing::trace!(target: TARGET, store_us = micros(s), job = within_job());
    }
}

/// A plan begun at `started` is made.
pub fn plan(started: Option<Instant>) {
    if let Some(s) = started {
        tracing::trace!(target: TARGET, plan_us = micros(s), job = within_job());
    }
}

/// A job begun at `started` is done (whatever its outcome).
pub fn job(started: Option<Instant>) {
    if let Some(s) = started {
        tracing::trace!(target: TARGET, job_us = micros(s));
    }
}

//! Library errors, one enum per layer. HTTP status mapping lives in `http`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::domain::Provider;

/// Publishing sync outcomes failed (after the sink's own retries).
#[derive(Debug, Error, Clone, PartialEq)]
#[error("publishing {failed} sync outcome(s) failed: {message}")]
pub struct PublishError {
    pub failed: usize,
    pub message: String,
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum StoreError {
    #[error("version conflict: {0}")]
    Conflict(String),
    #[error("already exists: {0}")]
    Duplicate(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("store backend: {0}")]
    Backend(String),
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum QueueError {
    #[error("queue backend: {0}")]
    Backend(String),
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CrmError {
    #[error("{provider} rate limit hit; retry after {retry_after:?}")]
    RateLimited {
        provider: Provider,
        retry_after: Duration,
    },
    #[error("{provider} daily quota is spent until {until}")]
    QuotaExhausted {
        provider: Provider,
        until: DateTime<Utc>,
    },
    #[error("{provider} already has this record (existing id {existing_id})")]
    AlreadyExists {
        provider: Provider,
        existing_id: String,
    },
    #[error("{provider} rejected the request ({status}): {message}")]
    Rejected {
        provider: Provider,
        status: u16,
        message: String,
    },
    #[error("{provider} authentication failed: {message}")]
    Auth { provider: Provider, message: String },
    #[error("{provider} is unavailable: {message}")]
    Unavailable { provider: Provider, message: String },
    /// A wait for a rate limit would end after the job's deadline: nothing was sent, and the
    /// job is to run again at `resume_at`.
    #[error("{provider} would make this job wait past its deadline; resuming at {resume_at}")]
    OutOfTime {
        provider: Provider,
        resume_at: DateTime<Utc>,
    },
}

impl CrmError {
    /// Worth another attempt later (the same request may succeed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CrmError::RateLimited { .. }
                | CrmError::Unavailable { .. }
                | CrmError::QuotaExhausted { .. }
                | CrmError::OutOfTime { .. }
        ) || matches!(self, CrmError::Rejected { status, .. } if *status >= 500 || *status == 423)
    }
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error("unknown tenant {0}")]
    UnknownTenant(String),
    /// Another worker is creating this contact's record in the CRM; try again after `until`.
    #[error("{provider} record of contact {contact_id} is being created; waiting until {until}")]
    Busy {
        provider: Provider,
        contact_id: String,
        until: DateTime<Utc>,
    },
    /// Our writes to a record are checked once their echoes had time to arrive.
    #[error("{provider} record {record_id}: our writes are checked after {until}")]
    CheckDue {
        provider: Provider,
        record_id: String,
        until: DateTime<Utc>,
    },
}

impl CrmError {
    /// Whether a request that failed this way may still have had its effect (no answer, or a
    /// server error): else it certainly did not (refused, rate-limited, never sent).
    pub fn may_have_applied(&self) -> bool {
        match self {
            CrmError::Unavailable { .. } => true,
            CrmError::Rejected { status, .. } => *status >= 500,
            CrmError::RateLimited { .. }
            | CrmError::QuotaExhausted { .. }
            | CrmError::OutOfTime { .. }
            | CrmError::AlreadyExists { .. }
            | CrmError::Auth { .. } => false,
        }
    }
}

impl SyncError {
    /// When the provider's daily quota is spent, or a wait would cross the job's deadline: run
    /// again after this time, without counting a failure.
    pub fn deferred_until(&self) -> Option<DateTime<Utc>> {
        match self {
            SyncError::Crm(CrmError::QuotaExhausted { until, .. }) => Some(*until),
            SyncError::Crm(CrmError::OutOfTime { resume_at, .. }) => Some(*resume_at),
            SyncError::Busy { until, .. } | SyncError::CheckDue { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// The job ran out of time: a wait would have crossed its deadline (not a failure).
    pub fn is_out_of_time(&self) -> bool {
        matches!(self, SyncError::Crm(CrmError::OutOfTime { .. }))
    }

    /// Suggested delay before the next attempt.
    pub fn retry_after(&self) -> Duration {
        match self {
            SyncError::Crm(CrmError::RateLimited { retry_after, .. }) => *retry_after,
            SyncError::Store(StoreError::Conflict(_)) => Duration::from_millis(50),
            _ => Duration::from_secs(2),
        }
    }
}

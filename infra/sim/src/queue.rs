//! The job queue with SQS's semantics: at-least-once (a message sent may arrive twice), a
//! visibility timeout (a message received and never deleted — its worker was cut off — comes
//! back), a receive count that sends a message to the dead-letter queue after three receives,
//! delays; on the virtual clock, with faults at every call.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::domain::{Job, TenantId};
use shared::error::QueueError;
use shared::ports::{Delivery, FailOutcome, JobQueue, QueueDepth};

use crate::sched::{Fault, Sched};

/// SQS's maxReceiveCount in the template: three attempts, then the DLQ.
pub const MAX_RECEIVES: u32 = 3;
/// The sync queue's visibility timeout (ms).
pub const VISIBILITY_MS: i64 = 60_000;

struct Message {
    job: Job,
    visible_at: i64,
    receives: u32,
    receipt: Option<String>,
    last_error: Option<String>,
    /// The worker holding it (received, not yet settled).
    holder: Option<usize>,
}

#[derive(Default)]
struct State {
    next: u64,
    messages: BTreeMap<u64, Message>,
    dlq: Vec<(Job, String)>,
}

pub struct SimQueue {
    sched: Sched,
    state: Mutex<State>,
    /// The chance that a message sent is delivered twice.
    duplicate: f64,
}

impl SimQueue {
    pub fn new(sched: Sched, duplicate: f64) -> Self {
        Self {
            sched,
            state: Mutex::new(State::default()),
            duplicate,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn enter(&self, write: bool) -> Result<bool, QueueError> {
        self.sched.boundary().await;
        match self.sched.roll(write) {
            Fault::Before => Err(QueueError::Backend("simulated: SQS unavailable".into())),
            Fault::AnswerLost => Ok(true),
            Fault::None => Ok(false),
        }
    }

    fn lost<T>(lose: bool, value: T) -> Result<T, QueueError> {
        if lose {
            Err(QueueError::Backend("simulated: answer lost".into()))
        } else {
            Ok(value)
        }
    }

    /// Sends without a boundary or faults (the driver's sends: an API call or a webhook).
    pub fn send(&self, job: Job, delay_ms: i64) {
        let copies = if self.sched.chance(self.duplicate) {
            2
        } else {
            1
        };
        let visible_at = self.sched.now_ms() + delay_ms;
        let mut s = self.state();
        for _ in 0..copies {
            s.next += 1;
            let id = s.next;
            s.messages.insert(
                id,
                Message {
                    job: job.clone(),
                    visible_at,
                    receives: 0,
                    receipt: None,
                    last_error: None,
                    holder: None,
                },
            );
        }
    }

    /// Messages waiting or in flight, and dead letters.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state();
        (s.messages.len(), s.dlq.len())
    }

    /// When the next message becomes visible that no live worker holds (a message held by a
    /// worker still at work is not waited for: it is settled when that worker gets its turns).
    pub fn next_visible(&self, live: &dyn Fn(usize) -> bool) -> Option<i64> {
        self.state()
            .messages
            .values()
            .filter(|m| m.holder.is_none_or(|w| !live(w)))
            .map(|m| m.visible_at)
            .min()
    }

    pub fn dead_letters(&self) -> Vec<(Job, String)> {
        self.state().dlq.clone()
    }

    fn find(s: &mut State, receipt: &str) -> Option<u64> {
        s.messages
            .iter()
            .find(|(_, m)| m.receipt.as_deref() == Some(receipt))
            .map(|(id, _)| *id)
    }
}

#[async_trait]
impl JobQueue for SimQueue {
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError> {
        let lose = self.enter(true).await?;
        for job in jobs {
            self.send(job.clone(), 0);
        }
        Self::lost(lose, ())
    }

    async fn enqueue_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        let lose = self.enter(true).await?;
        self.send(job.clone(), delay.as_millis() as i64);
        Self::lost(lose, ())
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        self.enter(false).await?;
        let now = self.sched.now_ms();
        let mut s = self.state();
        let due: Vec<u64> = s
            .messages
            .iter()
            .filter(|(_, m)| m.visible_at <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in due {
            if out.len() >= max {
                break;
            }
            let m = s.messages.get_mut(&id).expect("listed");
            if m.receives >= MAX_RECEIVES {
                // The redrive policy: received too often without a delete.
                let m = s.messages.remove(&id).expect("listed");
                let why = m
                    .last_error
                    .unwrap_or_else(|| "received three times, never deleted".into());
                s.dlq.push((m.job, why));
                continue;
            }
            m.receives += 1;
            m.visible_at = now + VISIBILITY_MS;
            let receipt = format!("{id}:{}", m.receives);
            m.receipt = Some(receipt.clone());
            m.holder = Sched::current_worker();
            out.push(Delivery {
                job: m.job.clone(),
                attempt: m.receives,
                receipt,
            });
        }
        Ok(out)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let lose = self.enter(true).await?;
        let mut s = self.state();
        if let Some(id) = Self::find(&mut s, &delivery.receipt) {
            s.messages.remove(&id);
        }
        Self::lost(lose, ())
    }

    async fn fail(
        &self,
        delivery: &Delivery,
        error: &str,
        retry_after: Duration,
    ) -> Result<FailOutcome, QueueError> {
        let lose = self.enter(true).await?;
        let now = self.sched.now_ms();
        let mut s = self.state();
        let outcome = match Self::find(&mut s, &delivery.receipt) {
            Some(id) if delivery.attempt >= MAX_RECEIVES => {
                let m = s.messages.remove(&id).expect("found");
                s.dlq.push((m.job, error.to_string()));
                FailOutcome::DeadLettered
            }
            Some(id) => {
                let m = s.messages.get_mut(&id).expect("found");
                m.visible_at = now + retry_after.as_millis() as i64;
                m.receipt = None;
                m.holder = None;
                m.last_error = Some(error.to_string());
                FailOutcome::WillRetry
            }
            None => FailOutcome::WillRetry,
        };
        Self::lost(lose, outcome)
    }

    async fn defer(&self, delivery: &Delivery, until: DateTime<Utc>) -> Result<(), QueueError> {
        let lose = self.enter(true).await?;
        let at = self.sched.now_ms() + (until - self.sched.now()).num_milliseconds().max(0);
        let mut s = self.state();
        if let Some(id) = Self::find(&mut s, &delivery.receipt) {
            let m = s.messages.get_mut(&id).expect("found");
            m.visible_at = at;
            m.receives = m.receives.saturating_sub(1);
            m.receipt = None;
            m.holder = None;
        }
        Self::lost(lose, ())
    }

    async fn depth(&self, _tenant: &TenantId) -> Result<QueueDepth, QueueError> {
        Ok(QueueDepth::tenant(self.state().messages.len()))
    }

    async fn dlq_depth(&self, _tenant: &TenantId) -> Result<QueueDepth, QueueError> {
        Ok(QueueDepth::tenant(self.state().dlq.len()))
    }

    async fn replay_dlq(&self, _tenant: &TenantId) -> Result<usize, QueueError> {
        let jobs = std::mem::take(&mut self.state().dlq);
        let n = jobs.len();
        for (job, _) in jobs {
            self.send(job, 0);
        }
        Ok(n)
    }
}

//! The job queue on SQLite, with SQS's semantics: a received job is invisible for the
//! visibility timeout (a crashed worker's job comes back), 3 attempts, then the dead letters;
//! replay moves a tenant's dead letters back with fresh attempts.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{TransactionBehavior, params};

use super::{EmbeddedStore, MAX_ATTEMPTS, now_ms, qbackend};
use crate::domain::{Job, TenantId};
use crate::error::QueueError;
use crate::ports::{Delivery, FailOutcome, JobQueue, QueueDepth};

impl EmbeddedStore {
    /// Makes every waiting job due now (tests that do not want to sleep through backoff).
    #[cfg(test)]
    pub(crate) fn replay_due_for_tests(&self) {
        self.db()
            .execute("UPDATE jobs SET visible_at = 0 WHERE dead = 0", [])
            .expect("update jobs");
    }

    /// The tenant's live (`dead` false) or dead-lettered jobs.
    fn count_jobs(&self, tenant: &TenantId, dead: bool) -> Result<QueueDepth, QueueError> {
        let n: i64 = self
            .db()
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE dead = ?1 AND tenant = ?2",
                params![dead as i64, tenant.as_str()],
                |r| r.get(0),
            )
            .map_err(qbackend)?;
        Ok(QueueDepth::tenant(n as usize))
    }
}

fn receipt(seq: i64, attempt: u32) -> String {
    format!("{seq}:{attempt}")
}

fn parse_receipt(r: &str) -> Result<(i64, i64), QueueError> {
    let (a, b) = r.split_once(':').ok_or_else(|| qbackend("bad receipt"))?;
    Ok((a.parse().map_err(qbackend)?, b.parse().map_err(qbackend)?))
}

#[async_trait]
impl JobQueue for EmbeddedStore {
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError> {
        {
            let mut db = self.db();
            let tx = db
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(qbackend)?;
            for job in jobs {
                let body = serde_json::to_string(job).map_err(qbackend)?;
                tx.execute(
                    "INSERT INTO jobs (tenant, body, visible_at) VALUES (?1, ?2, ?3)",
                    params![job.tenant().as_str(), body, now_ms()],
                )
                .map_err(qbackend)?;
            }
            tx.commit().map_err(qbackend)?;
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
        Ok(())
    }

    async fn enqueue_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        let body = serde_json::to_string(job).map_err(qbackend)?;
        self.db()
            .execute(
                "INSERT INTO jobs (tenant, body, visible_at) VALUES (?1, ?2, ?3)",
                params![
                    job.tenant().as_str(),
                    body,
                    now_ms() + delay.as_millis() as i64
                ],
            )
            .map_err(qbackend)?;
        Ok(())
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let now = now_ms();
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(qbackend)?;
        let rows: Vec<(i64, String, i64)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT seq, body, attempts FROM jobs WHERE dead = 0 AND visible_at <= ?1
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(qbackend)?;
            stmt.query_map(params![now, max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(qbackend)?
            .collect::<Result<_, _>>()
            .map_err(qbackend)?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (seq, body, attempts) in rows {
            let attempt = attempts as u32 + 1;
            tx.execute(
                "UPDATE jobs SET attempts = ?2, visible_at = ?3 WHERE seq = ?1",
                params![
                    seq,
                    attempt as i64,
                    now + self.visibility.as_millis() as i64
                ],
            )
            .map_err(qbackend)?;
            let job = Job::parse(&body).map_err(qbackend)?;
            out.push(Delivery {
                job,
                attempt,
                receipt: receipt(seq, attempt),
            });
        }
        tx.commit().map_err(qbackend)?;
        Ok(out)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (seq, attempt) = parse_receipt(&delivery.receipt)?;
        self.db()
            .execute(
                "DELETE FROM jobs WHERE seq = ?1 AND attempts = ?2",
                params![seq, attempt],
            )
            .map_err(qbackend)?;
        Ok(())
    }

    async fn fail(
        &self,
        delivery: &Delivery,
        error: &str,
        retry_after: Duration,
    ) -> Result<FailOutcome, QueueError> {
        let (seq, attempt) = parse_receipt(&delivery.receipt)?;
        let dead = attempt as u32 >= MAX_ATTEMPTS;
        self.db()
            .execute(
                "UPDATE jobs SET dead = ?3, visible_at = ?4, last_error = ?5 WHERE seq = ?1 AND attempts = ?2",
                params![seq, attempt, dead as i64, now_ms() + retry_after.as_millis() as i64, error],
            )
            .map_err(qbackend)?;
        Ok(if dead {
            FailOutcome::DeadLettered
        } else {
            FailOutcome::WillRetry
        })
    }

    async fn defer(&self, delivery: &Delivery, until: DateTime<Utc>) -> Result<(), QueueError> {
        let (seq, attempt) = parse_receipt(&delivery.receipt)?;
        self.db()
            .execute(
                "UPDATE jobs SET attempts = attempts - 1, visible_at = ?3 WHERE seq = ?1 AND attempts = ?2",
                params![seq, attempt, until.timestamp_millis()],
            )
            .map_err(qbackend)?;
        Ok(())
    }

    async fn depth(&self, tenant: &TenantId) -> Result<QueueDepth, QueueError> {
        self.count_jobs(tenant, false)
    }

    async fn dlq_depth(&self, tenant: &TenantId) -> Result<QueueDepth, QueueError> {
        self.count_jobs(tenant, true)
    }

    async fn replay_dlq(&self, tenant: &TenantId) -> Result<usize, QueueError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(qbackend)?;
        let dead: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare("SELECT seq, body FROM jobs WHERE dead = 1 AND tenant = ?1")
                .map_err(qbackend)?;
            let rows = stmt
                .query_map(params![tenant.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(qbackend)?;
            rows.collect::<Result<_, _>>().map_err(qbackend)?
        };
        for (seq, body) in &dead {
            // A replayed change says so (its sync's history shows the replay).
            let body = match Job::parse(body) {
                Ok(job) => serde_json::to_string(&job.replayed()).map_err(qbackend)?,
                Err(_) => body.clone(),
            };
            tx.execute(
                "UPDATE jobs SET dead = 0, attempts = 0, visible_at = ?2, body = ?3 WHERE seq = ?1",
                params![seq, now_ms(), body],
            )
            .map_err(qbackend)?;
        }
        tx.commit().map_err(qbackend)?;
        let n = dead.len();
        if n > 0 {
            self.notify.notify_one();
        }
        Ok(n)
    }
}

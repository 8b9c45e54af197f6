//! A first sync larger than a day's budget: the CRM waits for its budget's reset, Sync Now's
//! progress says how many contacts wait for which CRM and until when (an estimate across days
//! from the cost per contact measured so far), and the schedule resumes the backfill after
//! the reset by itself.

use chrono::{DateTime, Duration, Utc};
use tracing::info;

use super::names;
use crate::domain::{Job, Provider, TenantId};
use crate::error::SyncError;
use crate::ports::{BudgetWait, JobQueue};
use crate::sync::SyncService;

/// When the last of `contacts` should be in: `resume_at` starts a day whose budget takes
/// `daily / cost_per_contact` of them, and so on a day at a time.
pub fn done_by(
    resume_at: DateTime<Utc>,
    contacts: usize,
    cost_per_contact: Option<f64>,
    daily: Option<u64>,
) -> Option<DateTime<Utc>> {
    let (cost, daily) = (cost_per_contact?, daily?);
    if cost.is_nan() || cost <= 0.0 {
        return None;
    }
    let per_day = (daily as f64 / cost).floor() as usize;
    if per_day == 0 {
        return None;
    }
    let days = contacts.div_ceil(per_day).max(1);
    Some(resume_at + Duration::days(days as i64 - 1))
}

impl SyncService {
    /// Until when the CRM is paused for the tenant (a spent daily budget), if it still is.
    pub(super) async fn paused_until(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<Option<DateTime<Utc>>, SyncError> {
        let stats = self.state.stats(tenant, provider).await?;
        Ok(stats.paused_until.filter(|u| *u > self.now()))
    }

    /// What waits for `provider`'s budget, resumed at `until`; `cost_per_contact` as measured
    /// in the round that spent it.
    pub(super) async fn budget_wait(
        &self,
        tenant: &TenantId,
        provider: Provider,
        until: DateTime<Utc>,
        cost_per_contact: Option<f64>,
    ) -> Result<BudgetWait, SyncError> {
        let contacts = self.unlinked(tenant, provider).await?.len();
        let daily = self
            .tenants
            .client(tenant, provider)
            .and_then(|c| c.daily_budget());
        let wait = BudgetWait {
            provider,
            contacts,
            resume_at: until,
            cost_per_contact,
            done_by: done_by(until, contacts, cost_per_contact, daily),
        };
        info!(%tenant, %provider, contacts, resume_at = %until, done_by = ?wait.done_by, "backfill waits for the daily budget");
        Ok(wait)
    }

    /// Resumes a Sync Now whose backfill waits for a budget that has reset (the schedule calls
    /// it for every tenant): queues its next round. Whether it did.
    pub async fn resume_waiting(
        &self,
        tenant: &TenantId,
        queue: &dyn JobQueue,
    ) -> Result<bool, SyncError> {
        let Some(mut progress) = self.state.sync_now_progress(tenant).await? else {
            return Ok(false);
        };
        let now = self.now();
        if progress.running || !progress.waiting.iter().any(|w| w.resume_at <= now) {
            return Ok(false);
        }
        let (due, later): (Vec<BudgetWait>, Vec<BudgetWait>) = progress
            .waiting
            .into_iter()
            .partition(|w| w.resume_at <= now);
        progress.waiting = later;
        let providers: Vec<Provider> = due.iter().map(|w| w.provider).collect();
        progress.running = true;
        progress.phase = format!("resuming the backfill of {}", names(&providers));
        // Queued first: cut off after it, the round still runs (and drops the waits that are
        // over itself); cut off before it, nothing changed and the next run resumes.
        queue
            .enqueue(&[Job::Reconcile {
                tenant: tenant.clone(),
                round: progress.rounds + 1,
            }])
            .await?;
        self.state.save_sync_now_progress(tenant, &progress).await?;
        info!(%tenant, crms = %names(&providers), "the budget reset: the backfill goes on");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-12-{day:02}T{hour:02}:00:00Z"))
            .unwrap()
            .to_utc()
    }

    #[test]
    fn the_estimate_counts_a_day_s_budget_a_day_from_the_reset() {
        // 30,000 tokens a day at 5 tokens a contact: 6,000 a day.
        let eta = |n| done_by(at(8, 0), n, Some(5.0), Some(30_000));
        assert_eq!(eta(4_631), Some(at(8, 0)), "all on the day of the reset");
        assert_eq!(eta(6_000), Some(at(8, 0)));
        assert_eq!(eta(6_001), Some(at(9, 0)), "one more day");
        assert_eq!(eta(20_000), Some(at(11, 0)));
        assert_eq!(eta(0), Some(at(8, 0)));
    }

    #[test]
    fn without_a_cost_or_a_budget_there_is_no_estimate() {
        assert_eq!(done_by(at(8, 0), 10, None, Some(30_000)), None);
        assert_eq!(done_by(at(8, 0), 10, Some(5.0), None), None);
        assert_eq!(done_by(at(8, 0), 10, Some(0.0), Some(30_000)), None);
        assert_eq!(done_by(at(8, 0), 10, Some(f64::NAN), Some(30_000)), None);
        assert_eq!(
            done_by(at(8, 0), 10, Some(40_000.0), Some(30_000)),
            None,
            "a contact costs more than a day"
        );
    }
}

//! Finding what events missed: Sync Now (backfill, poll, retry of failed contacts) in
//! time-boxed rounds that queue their own continuation, the scheduled poll of one CRM, and the
//! batch backfill of unlinked contacts.

use chrono::Utc;
use tracing::info;

use super::{Known, SyncService};
use crate::domain::{
    ChangeEvent, ChangeKind, ContactLink, FieldSupport, Job, LinkStatus, Origin, Provider, TenantId,
};
use crate::error::{CrmError, SyncError};
use crate::ports::{ChangedRecord, JobQueue, SyncNowProgress};

mod backfill;
mod index;
mod preview;
mod wait;

pub use preview::{
    ConflictExample, ConflictGroup, CrmPreview, PreviewExample, PreviewGroup, SyncPreview,
};

/// Rounds of one Sync Now at most (a guard against a backfill that never shrinks).
const MAX_RECONCILE_ROUNDS: u32 = 500;

/// Whether a polled record holds what its link last agreed. With the record's values at hand
/// (Pipedrive's listing), they decide: equal to the base on every field the CRM stores means
/// nothing to sync, whatever the timestamps say. Otherwise the modification time decides; a
/// timestamp in whole seconds cannot tell our write from a user's edit in the same second, so
/// equality counts as seen only with sub-second precision (HubSpot's milliseconds).
pub(super) fn already_agreed(
    rec: &ChangedRecord,
    link: &ContactLink,
    support: FieldSupport,
) -> bool {
    use chrono::Timelike;
    if let Some(fields) = &rec.fields {
        let fields = fields.clone().normalized();
        return crate::domain::Field::ALL
            .into_iter()
            .filter(|f| support.supports(*f))
            .all(|f| fields.get(f) == link.base.get(f));
    }
    match (rec.updated_at, link.crm_last_modified) {
        (Some(updated), Some(seen)) => {
            seen > updated || (seen == updated && updated.nanosecond() != 0)
        }
        _ => false,
    }
}

/// `hubspot, pipedrive`.
fn names(providers: &[Provider]) -> String {
    providers
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl SyncService {
    /// One round of Sync Now: backfills unlinked contacts into every CRM, polls every CRM for
    /// changes and re-queues contacts whose last sync failed. A round works for the service's
    /// time budget, then queues round `round + 1` to go on; progress adds up across rounds and
    /// is readable while it runs (`sync_now_progress`).
    pub async fn reconcile(
        &self,
        tenant: &TenantId,
        queue: &dyn JobQueue,
        round: u32,
    ) -> Result<SyncNowProgress, SyncError> {
        self.tenant(tenant).await?;
        let mut progress = match self.state.sync_now_progress(tenant).await? {
            Some(previous) if round > 1 => SyncNowProgress {
                rounds: previous.rounds + 1,
                ..previous
            },
            _ => SyncNowProgress {
                running: true,
                started_at: Some(self.now()),
                rounds: 1,
                ..Default::default()
            },
        };
        // A budget that has reset is waited for no longer (whether or not the schedule's
        // resume got to record it before queueing this round).
        let now = self.now();
        progress.waiting.retain(|w| w.resume_at > now);
        self.state.save_sync_now_progress(tenant, &progress).await?;
        // One round does what fits in its time budget, then queues its continuation, so a
        // large first backfill never outruns the worker's timeout.
        // (Or less: what is left of the job's own deadline, less a margin to queue the next.)
        let budget = match crate::deadline::remaining() {
            Some(left) => self
                .reconcile_budget
                .min(left.saturating_sub(std::time::Duration::from_secs(2))),
            None => self.reconcile_budget,
        };
        let deadline = std::time::Instant::now() + budget;
        // Every CRM backfills at once, each at its own limits: the round takes as long as the
        // slowest CRM's share, not the sum of them. A CRM whose backfill is through is polled
        // at once (once per Sync Now), while the others go on.
        let providers = self.tenants.providers(tenant);
        // A CRM waiting for its daily budget's reset is resumed by the schedule, not here.
        let todo: Vec<Provider> = providers
            .iter()
            .filter(|p| !progress.polled.contains(p))
            .filter(|p| !progress.waiting.iter().any(|w| w.provider == **p))
            .copied()
            .collect();
        progress.phase = format!("backfill {}", names(&todo));
        self.state.save_sync_now_progress(tenant, &progress).await?;
        let outcomes = futures::future::join_all(todo.iter().map(|&provider| async move {
            let client = self.tenants.client(tenant, provider);
            let spent_before = client.as_ref().and_then(|c| c.tokens_spent());
            let backfill = self.backfill(tenant, provider, Some(deadline)).await;
            if let Err(SyncError::Crm(e)) = &backfill {
                let _ = self.hold_for_budget(tenant, provider, e).await;
            }
            let spent = spent_before
                .zip(client.as_ref().and_then(|c| c.tokens_spent()))
                .map(|(before, after)| after.saturating_sub(before));
            // A spent daily budget: the CRM waits for the reset (polled after it).
            let paused = self.paused_until(tenant, provider).await.ok().flatten();
            let poll = match (&backfill, paused) {
                (_, Some(_)) | (Ok((_, true)), _) => None,
                _ => Some(self.poll(tenant, provider, queue, 50).await),
            };
            (provider, backfill, poll, paused, spent)
        }))
        .await;
        let mut more = Vec::new();
        for (provider, backfill, poll, paused, spent) in outcomes {
            let mut linked = 0;
            match backfill {
                Ok((n, cut)) => {
                    progress.backfilled += n;
                    linked = n;
                    if cut && paused.is_none() {
                        more.push(provider);
                    }
                }
                Err(SyncError::Crm(CrmError::QuotaExhausted { .. })) if paused.is_some() => {}
                Err(e) => progress.errors.push(format!("{provider} backfill: {e}")),
            }
            if let Some(poll) = poll {
                progress.polled.push(provider);
                match poll {
                    Ok(n) => progress.enqueued += n,
                    Err(e) => progress.errors.push(format!("{provider} poll: {e}")),
                }
            }
            if let Some(until) = paused {
                let cost = spent
                    .filter(|_| linked > 0)
                    .map(|t| t as f64 / linked as f64);
                let wait = self.budget_wait(tenant, provider, until, cost).await?;
                progress.waiting.push(wait);
            }
        }
        if !more.is_empty() && progress.rounds < MAX_RECONCILE_ROUNDS {
            progress.phase = format!("backfill {} (continuing)", names(&more));
            self.state.save_sync_now_progress(tenant, &progress).await?;
            queue
                .enqueue(&[Job::Reconcile {
                    tenant: tenant.clone(),
                    round: round + 1,
                }])
                .await?;
            return Ok(progress);
        }
        // Out of rounds: the CRMs still backfilling are polled all the same.
        for provider in more {
            progress.phase = format!("poll {provider}");
            self.state.save_sync_now_progress(tenant, &progress).await?;
            progress.polled.push(provider);
            match self.poll(tenant, provider, queue, 50).await {
                Ok(n) => progress.enqueued += n,
                Err(e) => progress.errors.push(format!("{provider} poll: {e}")),
            }
        }
        // What is left of the round's time: records deleted with their webhook lost (not in a
        // CRM whose budget is spent: after its reset).
        for provider in self.tenants.providers(tenant) {
            if progress.waiting.iter().any(|w| w.provider == provider) {
                continue;
            }
            progress.phase = format!("deleted records {provider}");
            self.state.save_sync_now_progress(tenant, &progress).await?;
            let since = progress.started_at;
            match self
                .find_gone(tenant, provider, queue, deadline, since)
                .await
            {
                Ok(n) => progress.enqueued += n,
                Err(e) if e.is_out_of_time() => {}
                Err(e) => progress
                    .errors
                    .push(format!("{provider} deleted records: {e}")),
            }
        }
        progress.phase = "retry failed".into();
        let (mut retry, checks) = self.unsynced_contacts(tenant).await?;
        retry.sort();
        retry.dedup();
        let mut jobs: Vec<Job> = retry
            .iter()
            .map(|id| {
                let mut e =
                    ChangeEvent::new(tenant.clone(), Origin::App, id.clone(), ChangeKind::Upsert);
                e.provenance = Some("sync_now".into());
                Job::Change(e)
            })
            .collect();
        jobs.extend(checks);
        for chunk in jobs.chunks(100) {
            queue.enqueue(chunk).await?;
        }
        progress.enqueued += jobs.len();
        progress.running = false;
        if progress.waiting.is_empty() {
            progress.phase = "done".into();
            progress.finished_at = Some(self.now());
        } else {
            let waiting: Vec<Provider> = progress.waiting.iter().map(|w| w.provider).collect();
            progress.phase = format!("waiting for the daily budget of {}", names(&waiting));
        }
        self.state.save_sync_now_progress(tenant, &progress).await?;
        info!(%tenant, backfilled = progress.backfilled, enqueued = progress.enqueued, errors = progress.errors.len(), "sync now finished");
        Ok(progress)
    }

    /// Contacts whose sync is owed: a link that failed or waits, or an app change (an edit, a
    /// delete) made after the link's last sync, e.g. one whose sync job was never queued. And
    /// the checks owed: of each record with writes of ours not checked yet.
    async fn unsynced_contacts(
        &self,
        tenant: &TenantId,
    ) -> Result<(Vec<String>, Vec<Job>), SyncError> {
        let mut owed = Vec::new();
        let mut checks = Vec::new();
        let mut last_sync: std::collections::BTreeMap<String, chrono::DateTime<Utc>> =
            Default::default();
        for l in self.links.links_for_tenant(tenant).await? {
            if l.writes.is_unchecked() {
                checks.push(Job::Check {
                    tenant: tenant.clone(),
                    provider: l.provider,
                    record_id: l.external_id.clone(),
                });
            }
            match l.status {
                LinkStatus::Error | LinkStatus::Pending | LinkStatus::Creating => {
                    owed.push(l.contact_id)
                }
                LinkStatus::Synced => {
                    let at = l.last_synced_at.unwrap_or_default();
                    let seen = last_sync.entry(l.contact_id).or_insert(at);
                    *seen = (*seen).min(at);
                }
                LinkStatus::Deleted => {}
            }
        }
        for (contact_id, synced) in last_sync {
            if let Some(c) = self.contacts.get(tenant, &contact_id).await?
                && (c.deleted || c.last_app_modified > synced)
            {
                owed.push(contact_id);
            }
        }
        Ok((owed, checks))
    }

    /// The last (or running) Sync Now's progress.
    pub async fn sync_now_progress(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<SyncNowProgress>, SyncError> {
        Ok(self.state.sync_now_progress(tenant).await?)
    }

    /// Polls one CRM for records changed since the stored cursor and enqueues them; catches
    /// what webhooks missed. The cursor advances only after the events are enqueued. Returns
    /// how many records were enqueued.
    pub async fn poll(
        &self,
        tenant: &TenantId,
        provider: Provider,
        queue: &dyn JobQueue,
        max_pages: usize,
    ) -> Result<usize, SyncError> {
        self.tenant(tenant).await?;
        let Some(client) = self.tenants.client(tenant, provider) else {
            return Ok(0);
        };
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, client.as_ref()).await?;
        let support = ctx.support();
        let cursor_name = format!("poll#{provider}");
        let mut cursor = self.state.cursor(tenant, &cursor_name).await?;
        let mut enqueued = 0;
        // Changes since the last poll that no webhook brought though it had the grace to (the
        // first poll of a CRM finds what was there before we were connected: not missed; a
        // change younger than the grace may have its webhook on the way).
        let counting = cursor.is_some();
        let mut missed = 0;
        for _ in 0..max_pages.max(1) {
            let page = client.changed_since(&ctx, cursor.as_deref()).await?;
            let mut jobs = Vec::new();
            for rec in &page.records {
                let link = self.links.get_link(tenant, provider, &rec.id).await?;
                // Our writes to it not checked yet (their echo lost, or none comes): a check.
                if let Some(l) = &link
                    && l.writes.is_unchecked()
                {
                    jobs.push(Job::Check {
                        tenant: tenant.clone(),
                        provider,
                        record_id: rec.id.clone(),
                    });
                }
                // Already agreed (e.g. our own write): skip the trigger.
                if let Some(link) = &link
                    && link.status == LinkStatus::Synced
                    && already_agreed(rec, link, support)
                {
                    continue;
                }
                // A sync of it under way, or one that saw this version (the search index
                // shows it late), is no missed webhook.
                let seen = link.as_ref().is_some_and(|l| {
                    l.pending.is_some()
                        || l.status != LinkStatus::Synced
                        || l.crm_last_modified
                            .zip(rec.updated_at)
                            .is_some_and(|(saw, changed)| saw >= changed)
                });
                if counting && !seen && self.missed_by_webhooks(rec.updated_at) {
                    missed += 1;
                }
                let mut e = ChangeEvent::new(
                    tenant.clone(),
                    provider.into(),
                    rec.id.clone(),
                    ChangeKind::Upsert,
                );
                e.provenance = Some("poll".into());
                jobs.push(Job::Change(e));
            }
            for chunk in jobs.chunks(100) {
                queue.enqueue(chunk).await?;
            }
            enqueued += jobs.len();
            if let Some(next) = &page.next_cursor {
                self.state.set_cursor(tenant, &cursor_name, next).await?;
            }
            if !page.has_more || page.next_cursor.is_none() || page.next_cursor == cursor {
                break;
            }
            cursor = page.next_cursor;
        }
        if enqueued > 0 {
            info!(%tenant, %provider, enqueued, missed, "poll found changed records");
        }
        self.state
            .note_poll(tenant, provider, missed, self.now())
            .await?;
        let health = self.state.webhook_health(tenant, provider).await?;
        let broken = self.webhook_state(&health) == super::WebhookState::Broken;
        crate::metrics::webhooks_broken(tenant, provider, broken);
        // New evidence that they are broken: an outcome (not one every poll while they are).
        if broken && missed > 0 {
            self.publish(vec![crate::domain::SyncOutcome::WebhooksBroken {
                tenant: tenant.clone(),
                provider,
                at: self.now(),
            }])
            .await;
        }
        Ok(enqueued)
    }

    /// Records deleted in a CRM whose webhook was lost: a poll lists changed records only, and
    /// a deleted one is not among them. Where the CRM reads records in batches (HubSpot's batch
    /// read, Pipedrive's listing by ids; 100 a call), Sync Now reads every linked record and
    /// queues a trigger for each one gone, which
    /// the worker turns into a tombstone, in what is left of the round's time. Returns how
    /// many were queued. Links synced since `checked_since` (this Sync Now's start: the ones
    /// its backfill made) saw their record then and are not read again.
    async fn find_gone(
        &self,
        tenant: &TenantId,
        provider: Provider,
        queue: &dyn JobQueue,
        deadline: std::time::Instant,
        checked_since: Option<chrono::DateTime<Utc>>,
    ) -> Result<usize, SyncError> {
        let Some(client) = self.tenants.client(tenant, provider) else {
            return Ok(0);
        };
        if !client.reads_in_batches() {
            return Ok(0);
        }
        let ctx = self.crm_context(tenant, client.as_ref()).await?;
        let linked: Vec<String> = self
            .links
            .links_for_tenant(tenant)
            .await?
            .into_iter()
            .filter(|l| l.provider == provider && l.status == LinkStatus::Synced)
            .filter(|l| {
                checked_since.is_none_or(|since| l.last_synced_at.is_none_or(|at| at < since))
            })
            .map(|l| l.external_id)
            .collect();
        let mut jobs = Vec::new();
        for chunk in linked.chunks(100) {
            // Not worth a round of its own: what the time left does not cover waits for the
            // next Sync Now.
            if std::time::Instant::now() >= deadline {
                break;
            }
            let live = client.get_many(&ctx, chunk).await?;
            for id in chunk.iter().filter(|id| !live.contains_key(*id)) {
                let mut e = ChangeEvent::new(
                    tenant.clone(),
                    provider.into(),
                    id.clone(),
                    ChangeKind::Upsert,
                );
                e.provenance = Some("gone".into());
                jobs.push(Job::Change(e));
            }
        }
        for chunk in jobs.chunks(100) {
            queue.enqueue(chunk).await?;
        }
        if !jobs.is_empty() {
            info!(%tenant, %provider, gone = jobs.len(), "Sync Now found records deleted in the CRM");
        }
        Ok(jobs.len())
    }
}

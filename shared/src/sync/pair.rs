//! One app contact against one CRM: read both sides, plan with the pure engine, and hand the
//! plan to [`apply`](super::apply).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Known, SyncReport, SyncService, history};
use crate::domain::{
    Contact, ContactFields, ContactLink, CrmDecision, CrmRecord, FieldPatch, LinkStatus, Provider,
    RecentWrites, Reported, TenantId, Trigger,
};
use crate::engine::{self, AppSide, CrmSide, PlanInput};
use crate::error::{CrmError, StoreError, SyncError};
use crate::ports::{CrmClient, CrmContext};
use crate::tenant::TenantConfig;

/// How often a lost optimistic-concurrency race is retried before the job fails.
const CONFLICT_RETRIES: usize = 5;

/// How soon a job that found another worker's create under way looks again (seconds).
const BUSY_RECHECK_SECS: i64 = 1;

/// What a pair stands on before planning: the contact, its link with this CRM (an intent when a
/// create is under way or was cut off) and the CRM record.
pub(super) struct PairState {
    pub contact: Contact,
    pub link: Option<ContactLink>,
    pub record: Option<CrmRecord>,
}

impl PairState {
    /// The values both sides last agreed on. An intent's are what its create wrote, once the
    /// record is found; while none is, there is no base (the record is still to be created).
    /// A write left pending (cut off, or its answer lost) counts as agreed where its side now
    /// holds its value.
    pub(super) fn base(&self) -> Option<ContactFields> {
        let link = match &self.link {
            Some(l) if l.is_placeholder() && self.record.is_none() => return None,
            l => l.as_ref()?,
        };
        let mut base = link.base.clone();
        // An app write of the pair that landed after what the base includes (its link write
        // lost, or a later sync's fence took its place): what it wrote was agreed on.
        if let Some(w) = self.contact.synced.get(&link.provider)
            && link.app_synced.as_ref() != Some(&w.stamp)
            && w.stamp.starts_with(&format!("{}@", link.external_id))
        {
            for (field, value) in &w.written.0 {
                base.set(*field, value.clone());
            }
        }
        if let (Some(pending), Some(record)) = (&link.pending, &self.record) {
            pending.settle(&mut base, &self.contact, &record.fields);
        }
        Some(base)
    }

    /// Our recent writes to the record: with one left in flight (cut off, or its answer lost)
    /// that the record shows landed (by the record's modification time at the latest; `now`
    /// when it has none).
    pub(super) fn recent_writes(&self, now: DateTime<Utc>) -> RecentWrites {
        let Some(link) = self.link.as_ref() else {
            return RecentWrites::default();
        };
        let recent = link.writes.clone();
        match (&link.pending, &self.record) {
            (Some(p), Some(record)) if !p.to_crm.is_empty() => match &p.crm_write {
                Some(w) if w.holds(&record.fields) => {
                    recent.with(w.clone().landed(record.updated_at, now))
                }
                // It may have landed, and been changed since: its values are ours all the same.
                Some(w) => recent.with(w.clone()),
                None => recent,
            },
            _ => recent,
        }
    }

    /// The `reported` values our recent writes to the record overwrote.
    fn overwritten(&self, reported: &[Reported], now: DateTime<Utc>) -> FieldPatch {
        match &self.record {
            Some(record) if !record.archived => self
                .recent_writes(now)
                .overwritten(reported, &record.fields),
            _ => FieldPatch::default(),
        }
    }

    /// The link's record id, if it knows one.
    pub(super) fn linked_id(&self) -> Option<&str> {
        self.link
            .as_ref()
            .filter(|l| !l.is_placeholder())
            .map(|l| l.external_id.as_str())
    }
}

impl SyncService {
    /// Syncs one app contact with every CRM of its tenant, `first` first (with `known`, the
    /// record an earlier stage read from it, and `reported`, the values its change event
    /// reported). A failure with one CRM does not stop the others; the first error is returned
    /// so the job is retried. What it decided goes into the contact's history (after
    /// `imported`, the import that made the contact), as set off by `trigger`; its metrics
    /// measure the latency from `occurred_at`, the change's time.
    #[allow(clippy::too_many_arguments)]
    pub async fn sync_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        first: Option<Provider>,
        known: Option<Known>,
        reported: &[Reported],
        trigger: Trigger,
        imported: Option<CrmDecision>,
        occurred_at: Option<DateTime<Utc>>,
    ) -> Result<SyncReport, SyncError> {
        let cfg = self.tenant_planning(tenant).await?;
        let mut clients: Vec<Arc<dyn CrmClient>> = self.tenants.clients(tenant);
        clients.sort_by_key(|c| Some(c.provider()) != first);
        let mut known = known;
        let mut report = SyncReport {
            decisions: imported.into_iter().collect(),
            ..Default::default()
        };
        let mut first_error = None;
        // A CRM synced after another can bring its changes into the app (a change found by
        // Sync Now or a poll, its webhook lost): the CRMs synced before it get a second pass.
        let mut again = 0;
        for (i, client) in clients.iter().enumerate() {
            let (hint, reported) = if Some(client.provider()) == first {
                (known.take(), reported)
            } else {
                (None, &[][..])
            };
            // Boxed: a pair's sync is a deep future, kept off the caller's stack.
            let done = Box::pin(self.sync_pair_recorded(
                &cfg,
                client.as_ref(),
                contact_id,
                hint,
                reported,
            ))
            .await;
            if done.as_ref().is_ok_and(|r| r.app_writes > 0) {
                again = i;
            }
            if done
                .as_ref()
                .is_ok_and(|r| r.crm_writes > r.crm_writes_checked)
                && !client.echo_shows_what_a_write_replaced()
            {
                let checked = self
                    .check_after_write(tenant, client.as_ref(), contact_id)
                    .await;
                report.add(&checked);
            }
            if let Err(err) = &done {
                report
                    .decisions
                    .extend(history::failure(client.provider(), err));
            }
            report.merge(done, &mut first_error);
        }
        for client in &clients[..again] {
            let done =
                Box::pin(self.sync_pair_recorded(&cfg, client.as_ref(), contact_id, None, &[]))
                    .await;
            if let Err(err) = &done {
                report
                    .decisions
                    .extend(history::failure(client.provider(), err));
            }
            report.merge(done, &mut first_error);
        }
        let decisions = std::mem::take(&mut report.decisions);
        let latency = occurred_at.map(|at| (self.now() - at).num_milliseconds());
        for d in &decisions {
            crate::metrics::sync_outcome(
                tenant,
                d.provider,
                d.action == crate::domain::DecisionAction::Failed,
                d.conflicts.len(),
                latency,
            );
        }
        self.publish(outcomes_of(tenant, contact_id, &decisions, self.now()))
            .await;
        self.record_history(tenant, contact_id, trigger, decisions)
            .await;
        match first_error {
            Some(err) => Err(err),
            None => Ok(report),
        }
    }

    /// [`sync_pair_retrying`](Self::sync_pair_retrying), its failure recorded on the contact.
    async fn sync_pair_recorded(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        contact_id: &str,
        known: Option<Known>,
        reported: &[Reported],
    ) -> Result<SyncReport, SyncError> {
        let done = self
            .sync_pair_retrying(cfg, client, contact_id, known, reported)
            .await;
        if let Err(err) = &done {
            self.record_failure(&cfg.id, contact_id, client.provider(), err)
                .await;
        }
        done
    }

    /// [`sync_pair`](Self::sync_pair), re-read and re-planned after a lost write race; a record
    /// known beforehand serves the first attempt only.
    pub(super) async fn sync_pair_retrying(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        contact_id: &str,
        known: Option<Known>,
        reported: &[Reported],
    ) -> Result<SyncReport, SyncError> {
        let mut known = known;
        let mut attempt = 0;
        loop {
            match self
                .sync_pair(cfg, client, contact_id, known.take(), reported)
                .await
            {
                Err(SyncError::Store(StoreError::Conflict(what))) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    info!(tenant = %cfg.id, contact_id, what, attempt, "lost a write race; re-reading");
                }
                other => return other,
            }
        }
    }

    /// One app contact against one CRM: read both, plan, apply, store the link. `reported`:
    /// values a change event of the record reported (a user's edit our last write may have
    /// overwritten).
    async fn sync_pair(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        contact_id: &str,
        known: Option<Known>,
        reported: &[Reported],
    ) -> Result<SyncReport, SyncError> {
        let tenant = &cfg.id;
        let provider = client.provider();
        // Read by key, consistently: a decision is never made from an index that may lag. The
        // link first, then the contact: a worker that syncs the pair writes the app before the
        // link, so a link that shows its sync comes with a contact that shows it too (the other
        // order can pair the new base with the old contact, and an app value that did not
        // change would read as the app's edit, to be pushed back over the CRM's).
        let now = self.now();
        let link = match self
            .links
            .link_for_contact(tenant, contact_id, provider)
            .await?
        {
            // The CRM record was deleted: delete protection, nothing is recreated.
            Some(l) if l.status == LinkStatus::Deleted => return Ok(SyncReport::default()),
            // Another worker is creating the record: wait for it rather than create a second.
            Some(l) if l.is_placeholder() => {
                let abandoned_at = l.last_synced_at.unwrap_or_default() + self.create_grace;
                if abandoned_at > now {
                    // Look again soon: the create usually answers well within a second.
                    return Err(SyncError::Busy {
                        provider,
                        contact_id: contact_id.to_string(),
                        until: abandoned_at.min(now + chrono::Duration::seconds(BUSY_RECHECK_SECS)),
                    });
                }
                info!(%tenant, contact_id, %provider, "taking over an abandoned create");
                Some(l)
            }
            other => other,
        };
        let Some(contact) = self.contacts.get(tenant, contact_id).await? else {
            return Ok(SyncReport::default());
        };
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, client).await?;
        let mut pair = PairState {
            contact,
            link,
            record: None,
        };
        pair.record = Self::read_crm_side(client, &ctx, &pair, known).await?;
        if !self.check_unclaimed(tenant, provider, &pair).await? {
            // Found by one of its other emails, and another contact's: not this one's record.
            pair.record = None;
        }
        self.check_no_write_in_flight(provider, &pair)?;
        // Decided now, after every read: a conflict is stamped later than the edits it saw.
        let now = self.now();
        let base = pair.base();
        let overwritten = pair.overwritten(reported, now);
        if !overwritten.is_empty() {
            let fields: Vec<&str> = overwritten.fields().map(|f| f.as_str()).collect();
            warn!(%tenant, contact_id, %provider, ?fields, "a CRM user's edit was overwritten by our concurrent write; resolved as a conflict");
        }
        let planning = crate::timing::start();
        let plan = engine::plan(&PlanInput {
            provider,
            app: if pair.contact.deleted {
                AppSide::Deleted
            } else {
                AppSide::Live(&pair.contact.fields)
            },
            crm: match &pair.record {
                None => CrmSide::Missing,
                Some(r) if r.archived => CrmSide::Archived,
                Some(r) => CrmSide::Live(&r.fields),
            },
            base: base.as_ref(),
            policy: cfg.conflict_policy,
            rules: &cfg.field_rules,
            app_modified: Some(pair.contact.last_app_modified),
            crm_modified: pair.record.as_ref().and_then(|r| r.updated_at),
            support: ctx.support(),
            now,
            overwritten: Some(&overwritten),
        });
        crate::timing::plan(planning);
        if self
            .forget_vanished_field(client, &ctx, &pair, &plan)
            .await?
        {
            return Err(StoreError::Conflict(format!("a {provider} field was deleted")).into());
        }
        let decision = history::decision(provider, &pair, &plan);
        let mut report = self
            .apply(tenant, client, &ctx, pair, plan, &overwritten, now)
            .await?;
        if let Some(mut d) = decision {
            d.record_id = d.record_id.or_else(|| report.record_id.clone());
            report.decisions.push(d);
        }
        Ok(report)
    }

    /// The CRM side of a pair: the linked record (as already read, if its link has not changed
    /// since, else read now), else the record an earlier stage found for the contact, else one
    /// with the email of the create an abandoned intent stands for (the contact's email may
    /// have changed since), else one with the contact's email.
    async fn read_crm_side(
        client: &dyn CrmClient,
        ctx: &CrmContext,
        pair: &PairState,
        known: Option<Known>,
    ) -> Result<Option<CrmRecord>, CrmError> {
        let contact = &pair.contact;
        // A record read before another worker synced the pair is read again.
        let known = known.filter(|k| k.still_current(pair.link.as_ref()));
        match (pair.linked_id(), known) {
            (Some(id), Some(k)) if k.id == id => Ok(k.record),
            (Some(id), _) => client.get(ctx, id).await,
            (
                None,
                Some(Known {
                    record: Some(r), ..
                }),
            ) => Ok(Some(r)),
            // Known by id only (a kept listing found it by email): read by id, which does not
            // lag as a search index does (a record made a moment ago is not found by search).
            (
                None,
                Some(Known {
                    record: None, id, ..
                }),
            ) if !contact.deleted => match client.get(ctx, &id).await?.filter(|r| !r.archived) {
                Some(r) => Ok(Some(r)),
                None => Self::find_by_emails(client, ctx, pair).await,
            },
            // A deleted contact's abandoned create is looked for too: its record is archived.
            (None, _)
                if !contact.deleted
                    || pair.link.as_ref().is_some_and(ContactLink::is_placeholder) =>
            {
                Self::find_by_emails(client, ctx, pair).await
            }
            (None, _) => Ok(None),
        }
    }

    /// The record with the email of the create an abandoned intent stands for (the contact's
    /// email may have changed since), else one with the contact's email.
    async fn find_by_emails(
        client: &dyn CrmClient,
        ctx: &CrmContext,
        pair: &PairState,
    ) -> Result<Option<CrmRecord>, CrmError> {
        let contact = &pair.contact;
        let intent_email = pair
            .link
            .as_ref()
            .filter(|l| l.is_placeholder())
            .and_then(|l| l.base.email.as_deref());
        let mut emails = intent_email.into_iter().collect::<Vec<_>>();
        if let Some(e) = contact.fields.email.as_deref()
            && !emails.iter().any(|i| i.eq_ignore_ascii_case(e))
        {
            emails.push(e);
        }
        for email in emails {
            if let Some(r) = client.find_by_email(ctx, email).await? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Another worker's CRM write to the record may still be on its way (fenced on the link, not
    /// landed yet as the record shows, within the create grace): planning now could send a
    /// write it would land after, over ours (neither CRM has a conditional write). Wait for it.
    fn check_no_write_in_flight(
        &self,
        provider: Provider,
        pair: &PairState,
    ) -> Result<(), SyncError> {
        let (Some(link), Some(record)) = (&pair.link, &pair.record) else {
            return Ok(());
        };
        let Some(p) = &link.pending else {
            return Ok(());
        };
        let (Some(w), Some(since)) = (&p.crm_write, p.since) else {
            return Ok(());
        };
        let now = self.now();
        let until = since + self.create_grace;
        if w.holds(&record.fields) || until <= now {
            return Ok(());
        }
        Err(SyncError::Busy {
            provider,
            contact_id: pair.contact.id.clone(),
            until: until.min(now + chrono::Duration::seconds(BUSY_RECHECK_SECS)),
        })
    }

    /// A CRM record found by email that another contact already links is not taken over: a
    /// conflict while the email is the record's own (primary) one, which the other contact's
    /// sync may yet change; `false` (not this contact's record) when the record has it only
    /// among its other emails (a Pipedrive merge keeps the merged person's), so one is created.
    async fn check_unclaimed(
        &self,
        tenant: &TenantId,
        provider: Provider,
        pair: &PairState,
    ) -> Result<bool, SyncError> {
        if pair.linked_id().is_none()
            && let Some(r) = &pair.record
            && let Some(other) = self.links.get_link(tenant, provider, &r.id).await?
            && other.contact_id != pair.contact.id
        {
            let own = |e: &str| {
                r.fields
                    .email
                    .as_deref()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case(e.trim()))
            };
            let intent_email = pair
                .link
                .as_ref()
                .filter(|l| l.is_placeholder())
                .and_then(|l| l.base.email.as_deref());
            if !pair.contact.fields.email.as_deref().is_some_and(own)
                && !intent_email.is_some_and(own)
            {
                return Ok(false);
            }
            return Err(CrmError::Rejected {
                provider,
                status: 409,
                message: format!(
                    "{} record {} with this email is already linked to contact {}",
                    provider.display_name(),
                    r.id,
                    other.contact_id
                ),
            }
            .into());
        }
        // A record found by email while another contact's create under that email stands (its
        // answer lost, or not back yet) is that create's record: wait for the intent to settle
        // (taken over after the grace) instead of claiming it.
        if pair.linked_id().is_none()
            && let Some(r) = &pair.record
            && let Some(email) = r.fields.email.as_deref()
            && let Some(intent) = self.intent_for_email(tenant, provider, email).await?
            && intent.contact_id != pair.contact.id
        {
            return Err(SyncError::Busy {
                provider,
                contact_id: pair.contact.id.clone(),
                until: self.now() + chrono::Duration::seconds(BUSY_RECHECK_SECS),
            });
        }
        Ok(true)
    }
}

/// The outcomes one sync job's decisions make: a contact synced with each CRM that wrote, each
/// conflict resolved, each failure.
fn outcomes_of(
    tenant: &TenantId,
    contact_id: &str,
    decisions: &[CrmDecision],
    at: DateTime<Utc>,
) -> Vec<crate::domain::SyncOutcome> {
    use crate::domain::{DecisionAction, SyncOutcome};
    let mut out = Vec::new();
    for d in decisions {
        if d.action == DecisionAction::Failed {
            out.push(SyncOutcome::SyncFailed {
                tenant: tenant.clone(),
                contact_id: Some(contact_id.to_string()),
                provider: Some(d.provider),
                error: d.error.clone().unwrap_or_default(),
                dead_lettered: false,
                at,
            });
            continue;
        }
        out.push(SyncOutcome::ContactSynced {
            tenant: tenant.clone(),
            contact_id: contact_id.to_string(),
            provider: d.provider,
            record_id: d.record_id.clone(),
            action: d.action,
            crm_fields: d.crm_writes.iter().map(|c| c.field).collect(),
            app_fields: d.app_writes.iter().map(|c| c.field).collect(),
            at,
        });
        for c in &d.conflicts {
            out.push(SyncOutcome::ConflictResolved {
                tenant: tenant.clone(),
                contact_id: contact_id.to_string(),
                provider: d.provider,
                field: c.field,
                winner: c.winner,
                at,
            });
        }
    }
    out
}

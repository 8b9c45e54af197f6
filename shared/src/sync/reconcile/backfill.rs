//! The batch backfill of a CRM: a tenant's unlinked contacts, matched against the CRM's
//! email index (listed once per Sync Now where that is cheaper) or looked up chunk by chunk,
//! the others created in batches under intents. A spent daily budget stops it until the reset.

use tracing::info;

use super::index::{self, BackfillIndex};
use crate::domain::history::all_set;
use crate::domain::{
    Contact, ContactFields, ContactLink, CrmDecision, DecisionAction, Provider, TenantId, Trigger,
};
use crate::engine;
use crate::error::{CrmError, StoreError, SyncError};
use crate::ports::{CrmClient, CrmContext};
use crate::sync::{Known, SyncService, history};

impl SyncService {
    /// First sync of a tenant's unlinked contacts with one CRM, in chunks of 100: the chunk's
    /// emails are looked up in one batch (HubSpot: batch read by email); a contact whose email
    /// the CRM has goes through the per-contact path (the engine decides, conflicts are logged,
    /// a record linked to another contact is never taken over); the others are created in one
    /// batch (HubSpot: batch upsert), each under an intent claimed first, as single creates are.
    /// Returns how many contacts were linked, and whether the deadline cut the backfill short.
    pub async fn backfill(
        &self,
        tenant: &TenantId,
        provider: Provider,
        deadline: Option<std::time::Instant>,
    ) -> Result<(usize, bool), SyncError> {
        let cfg = self.tenant_planning(tenant).await?;
        let Some(client) = self.tenants.client(tenant, provider) else {
            return Ok((0, false));
        };
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, client.as_ref()).await?;
        let pending = self.unlinked(tenant, provider).await?;
        let mut index = match self
            .backfill_index(tenant, provider, client.as_ref(), &ctx, &pending)
            .await
        {
            Ok(index) => index,
            Err(e) if e.is_out_of_time() => return Ok((0, true)),
            Err(SyncError::Crm(e)) if self.hold_for_budget(tenant, provider, &e).await? => {
                return Ok((0, false));
            }
            Err(e) => return Err(e),
        };
        let mut done = 0;
        for (i, chunk) in pending.chunks(100).enumerate() {
            if i > 0 && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok((done, true));
            }
            // What the index covers is not looked up again; a contact changed since the
            // listing (its email may be another now) is.
            let covered = |c: &Contact| index.as_ref().is_some_and(|x| x.covers(c));
            let emails: Vec<String> = chunk
                .iter()
                .filter(|c| !covered(c))
                .filter_map(|c| c.fields.email.clone())
                .collect();
            let mut found = if emails.is_empty() {
                Default::default()
            } else {
                match client.find_many_by_email(&ctx, &emails).await {
                    Ok(found) => found,
                    Err(e @ CrmError::OutOfTime { .. }) => {
                        info!(%tenant, %provider, "{e}; the backfill goes on in the next round");
                        return Ok((done, true));
                    }
                    Err(e) if self.hold_for_budget(tenant, provider, &e).await? => {
                        return Ok((done, false));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            // A contact that ran out of time is taken up again by the next round.
            let mut cut_short = false;
            let mut fresh = Vec::new();
            for contact in chunk {
                let email = contact.fields.email.as_deref().unwrap_or_default();
                let email = email.trim().to_lowercase();
                let known = match index.as_mut().filter(|x| x.covers(contact)) {
                    Some(x) => x.take(&email),
                    // Listed as unlinked: if a link appeared since, the record is read again.
                    None => found.remove(&email).map(|record| Known {
                        id: record.id.clone(),
                        record: Some(record),
                        link_version: None,
                    }),
                };
                match known {
                    Some(known) => {
                        match self
                            .sync_pair_retrying(
                                &cfg,
                                client.as_ref(),
                                &contact.id,
                                Some(known),
                                &[],
                            )
                            .await
                        {
                            Ok(report) => {
                                self.record_history(
                                    tenant,
                                    &contact.id,
                                    Trigger::SyncNow,
                                    report.decisions,
                                )
                                .await;
                                done += 1;
                            }
                            Err(err) => {
                                cut_short |= err.is_out_of_time();
                                self.backfill_failed(tenant, &contact.id, provider, &err)
                                    .await;
                            }
                        }
                    }
                    None => fresh.push(contact),
                }
            }
            let (created, cut) = self
                .create_unlinked(tenant, client.as_ref(), &ctx, &fresh, &cfg.field_rules)
                .await?;
            done += created;
            // The day's budget is spent: the rest waits for its reset (Sync Now resumes it).
            if self.paused_until(tenant, provider).await?.is_some() {
                info!(%tenant, %provider, done, "daily budget spent; the backfill waits for its reset");
                return Ok((done, false));
            }
            if cut_short || cut {
                info!(%tenant, %provider, done, "out of time; the backfill goes on in the next round");
                return Ok((done, true));
            }
        }
        Ok((done, false))
    }

    /// The CRM's email index for this backfill: the one an earlier round of the running Sync
    /// Now listed while it is fresh, else one listing now (kept for the next rounds), or `None`
    /// where listing costs more than looking the emails up chunk by chunk.
    async fn backfill_index(
        &self,
        tenant: &TenantId,
        provider: Provider,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        pending: &[Contact],
    ) -> Result<Option<BackfillIndex>, SyncError> {
        if pending.is_empty() {
            return Ok(None);
        }
        let name = index::cursor_name(provider);
        let now = self.now();
        // Kept only within one Sync Now: a later one lists again.
        let run_started = self
            .state
            .sync_now_progress(tenant)
            .await?
            .filter(|p| p.running)
            .and_then(|p| p.started_at);
        if let Some(started) = run_started
            && let Some(kept) = self.state.cursor(tenant, &name).await?
            && let Some(kept) = BackfillIndex::restore(&kept, started, now)
        {
            return Ok(Some(kept));
        }
        let emails: Vec<String> = pending
            .iter()
            .filter_map(|c| c.fields.email.clone())
            .collect();
        let Some(records) = client.email_index(ctx, &emails).await? else {
            return Ok(None);
        };
        let index = BackfillIndex::new(now, records);
        if run_started.is_some()
            && let Some(kept) = index.to_kept()
        {
            self.state.set_cursor(tenant, &name, &kept).await?;
        }
        info!(%tenant, %provider, matches = index.len(), "listed the CRM's emails for the backfill");
        Ok(Some(index))
    }

    /// Creates the records of contacts the CRM does not have, in one batch, each under an
    /// intent: a contact another worker is syncing (or one linked already, which the lagging
    /// index missed) is left to it. Returns how many were linked, and whether the job's
    /// deadline left some uncreated (their intents withdrawn, for the next round).
    async fn create_unlinked(
        &self,
        tenant: &TenantId,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        contacts: &[&Contact],
        rules: &crate::domain::FieldRules,
    ) -> Result<(usize, bool), SyncError> {
        let provider = client.provider();
        let support = ctx.support();
        let now = self.now();
        let mut claimed = Vec::new();
        for &contact in contacts {
            if contact.deleted {
                continue;
            }
            let mut fields = contact.fields.clone().normalized();
            if !support.pronouns {
                fields.pronouns = None;
            }
            // What the field rules keep from the CRMs is not sent (as the engine's create).
            for field in crate::domain::Field::ALL {
                if !rules.app_to_crm(field) {
                    fields.set(field, None);
                }
            }
            let intent = ContactLink::intent(tenant, &contact.id, provider, fields.clone(), now);
            match self.links.put_link(&intent).await {
                Ok(intent) => claimed.push((contact, fields, intent)),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if claimed.is_empty() {
            return Ok((0, false));
        }
        let inputs: Vec<ContactFields> = claimed.iter().map(|(_, f, _)| f.clone()).collect();
        let results = match client.create_many(ctx, &inputs).await {
            Ok(results) => results,
            Err(e) => {
                for (_, _, intent) in &claimed {
                    self.settle_failed_create(intent, &e).await?;
                }
                if let CrmError::OutOfTime { .. } = e {
                    return Ok((0, true));
                }
                if self.hold_for_budget(tenant, provider, &e).await? {
                    return Ok((0, false));
                }
                return Err(e.into());
            }
        };
        let mut done = 0;
        let mut cut = false;
        for ((contact, sent, intent), result) in claimed.into_iter().zip(results) {
            match result {
                Ok(record) => {
                    let warnings = if !support.pronouns && contact.fields.pronouns.is_some() {
                        vec![engine::pronouns_warning(provider)]
                    } else {
                        Vec::new()
                    };
                    // What we sent is what both sides now agree on: the intent moves straight
                    // to that link.
                    let link = ContactLink {
                        external_id: intent.external_id.clone(),
                        version: intent.version,
                        ..ContactLink::synced(
                            tenant,
                            &contact.id,
                            provider,
                            &record.id,
                            record.updated_at,
                            sent,
                            warnings,
                            self.now(),
                        )
                    };
                    self.links.rekey_link(&link, &record.id).await?;
                    self.state
                        .set_issue(tenant, &contact.id, provider, None)
                        .await?;
                    self.state
                        .record_outcome(tenant, provider, Ok(()), 0)
                        .await?;
                    let created = CrmDecision {
                        provider,
                        record_id: Some(record.id.clone()),
                        action: DecisionAction::Created,
                        crm_writes: all_set(&link.base),
                        app_writes: Vec::new(),
                        conflicts: Vec::new(),
                        error: None,
                    };
                    self.record_history(tenant, &contact.id, Trigger::SyncNow, vec![created])
                        .await;
                    done += 1;
                }
                Err(err) => {
                    self.settle_failed_create(&intent, &err).await?;
                    // Not a failure of the contact: it waits for the budget's reset with the
                    // rest of the backfill.
                    if self.hold_for_budget(tenant, provider, &err).await? {
                        continue;
                    }
                    let err = SyncError::from(err);
                    cut |= err.is_out_of_time();
                    self.backfill_failed(tenant, &contact.id, provider, &err)
                        .await;
                }
            }
        }
        Ok((done, cut))
    }

    /// A contact the backfill could not sync: the failure recorded, and told in its history.
    async fn backfill_failed(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        err: &SyncError,
    ) {
        self.record_failure(tenant, contact_id, provider, err).await;
        let failed = history::failure(provider, err);
        self.record_history(
            tenant,
            contact_id,
            Trigger::SyncNow,
            failed.into_iter().collect(),
        )
        .await;
    }

    /// The tenant's contacts with an email and no link to `provider` (the links' index may
    /// lag: a contact it shows unlinked is checked again by key before anything is created).
    pub(super) async fn unlinked(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<Vec<Contact>, SyncError> {
        let linked: std::collections::HashSet<String> = self
            .links
            .links_for_tenant(tenant)
            .await?
            .into_iter()
            .filter(|l| l.provider == provider)
            .map(|l| l.contact_id)
            .collect();
        Ok(self
            .all_contacts(tenant)
            .await?
            .into_iter()
            .filter(|c| !linked.contains(&c.id) && c.fields.email.is_some())
            .collect())
    }

    /// A spent daily budget pauses the CRM for the tenant until its reset: true for that error
    /// (the pause recorded), false for any other.
    pub(super) async fn hold_for_budget(
        &self,
        tenant: &TenantId,
        provider: Provider,
        err: &CrmError,
    ) -> Result<bool, SyncError> {
        let CrmError::QuotaExhausted { until, .. } = err else {
            return Ok(false);
        };
        self.state
            .set_paused_until(tenant, provider, Some(*until))
            .await?;
        self.quota_paused(tenant, provider, *until).await;
        Ok(true)
    }
}

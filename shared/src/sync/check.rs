//! Our writes to a CRM, checked. Neither CRM has a conditional write, so a CRM user's edit can
//! land between our read of a record and our write over it, and our write replaces it. The
//! user's change event reports the value (the pair stage recognises it, see
//! [`RecentWrites::overwritten`](crate::domain::RecentWrites::overwritten)), but an event can be
//! lost. So each write stays unchecked on its
//! link until something has shown what it replaced:
//! - its **echo**: Pipedrive's webhook of our own write says what the fields held just before
//!   it ([`ChangeKind::Echo`](crate::domain::ChangeKind::Echo)); no CRM call;
//! - a **check**: the record read with the history of the fields written (HubSpot's
//!   `propertiesWithHistory`, in the same read; Pipedrive's changelog, 20 tokens); what each
//!   write replaced is the value before its own entry. In a CRM whose echoes do not say
//!   (HubSpot) the sync checks its write at once. Otherwise a [`Job::Check`](crate::domain::Job::Check)
//!   does, queued by the poll for each record it lists whose link has unchecked writes and by
//!   Sync Now for every such link, and waiting until [`CHECK_GRACE_SECS`] after the write for
//!   the echo to come first.
//!
//! A user's value found either way goes to the pair stage as a reported value: restored (the
//! default policy, CRM wins) or logged as the losing side of a conflict.

use chrono::{DateTime, Utc};
use tracing::info;

use super::{Known, SyncReport, SyncService};
use crate::domain::{
    ChangeEvent, ContactLink, LinkStatus, Provider, RecentWrites, Reported, TenantId, Trigger,
};
use crate::error::{StoreError, SyncError};
use crate::ports::{CrmClient, CrmContext};

/// How long after a write its check waits for the write's echo (seconds).
pub const CHECK_GRACE_SECS: i64 = 60;

/// How often a lost race on the link is retried when marking writes checked.
const MARK_RETRIES: usize = 5;

impl SyncService {
    /// The echo of our write to a record: what the fields it changed held just before it. A
    /// value we had not read there is a user's edit the write overwrote: the pair is synced
    /// with it reported. Either way the write is checked.
    pub(super) async fn confirm_echo(&self, event: &ChangeEvent) -> Result<SyncReport, SyncError> {
        let tenant = &event.tenant;
        let Some(provider) = event.origin.provider() else {
            return Ok(SyncReport::default());
        };
        let Some(link) = self
            .links
            .get_link(tenant, provider, &event.record_id)
            .await?
        else {
            return Ok(SyncReport::default());
        };
        if link.writes.is_empty() {
            return Ok(SyncReport::default());
        }
        let mut report = SyncReport::default();
        let lost = lost_to(&link.writes, event.reported.clone());
        if !lost.is_empty() && link.status != LinkStatus::Deleted {
            info!(%tenant, %provider, record = %event.record_id, "the echo of our write shows a value we had not read; syncing with it");
            report = self
                .sync_contact(
                    tenant,
                    &link.contact_id,
                    Some(provider),
                    None,
                    &lost,
                    Trigger::Check,
                    None,
                    None,
                )
                .await?;
        }
        // The writes it names are checked, each only if it names every field the write
        // changed (a field its webhooks leave out, as Pipedrive's standard job title, waits for
        // a check of the history).
        self.update_writes(tenant, provider, &event.record_id, |w| {
            w.confirmed_by(&event.reported)
        })
        .await?;
        report.contact_id = Some(link.contact_id);
        Ok(report)
    }

    /// Checks our unchecked writes to a record against its field history, once their echoes
    /// had time to arrive (until then the job waits; [`SyncError::CheckDue`]).
    pub async fn check_writes(
        &self,
        tenant: &TenantId,
        provider: Provider,
        record_id: &str,
    ) -> Result<SyncReport, SyncError> {
        self.tenant(tenant).await?;
        let Some(client) = self.tenants.client(tenant, provider) else {
            return Ok(SyncReport::default());
        };
        let Some(link) = self.links.get_link(tenant, provider, record_id).await? else {
            return Ok(SyncReport::default());
        };
        if let Some(first) = link.writes.unchecked().iter().min() {
            let due = *first + self.check_grace;
            if due > self.now() {
                return Err(SyncError::CheckDue {
                    provider,
                    record_id: record_id.to_string(),
                    until: due,
                });
            }
        }
        self.check_link(client.as_ref(), link).await
    }

    /// Checks at once what our writes to a contact's record in a CRM whose echoes do not say
    /// (HubSpot) replaced: right after a sync wrote it. A check that fails is left to the
    /// poll or Sync Now (the write stays unchecked); the sync itself stands.
    pub(super) async fn check_after_write(
        &self,
        tenant: &TenantId,
        client: &dyn CrmClient,
        contact_id: &str,
    ) -> SyncReport {
        let checked = async {
            match self
                .links
                .link_for_contact(tenant, contact_id, client.provider())
                .await?
            {
                // Boxed: a check that restores a value writes, and that write is checked too.
                Some(link) => Box::pin(self.check_link(client, link)).await,
                None => Ok(SyncReport::default()),
            }
        };
        match checked.await {
            Ok(report) => report,
            Err(e) => {
                info!(%tenant, contact_id, provider = %client.provider(), error = %e, "our write is checked later");
                SyncReport::default()
            }
        }
    }

    /// Checks our unchecked writes to a record right after the latest landed, before the link
    /// records them: one read of the record with its fields' history. True when none replaced
    /// a user's value unseen, and `writes` now say so; false (checked again after the sync)
    /// when one did, or the read failed.
    pub(super) async fn check_landed(
        &self,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        record_id: &str,
        writes: &mut RecentWrites,
    ) -> bool {
        let Some(since) = writes.check_since() else {
            return true;
        };
        let unchecked = writes.unchecked();
        let fields = writes.unchecked_fields();
        match client
            .get_with_history(ctx, record_id, &fields, since)
            .await
        {
            Ok((_, history)) if lost_to(writes, writes.replaced_in(&history)).is_empty() => {
                *writes = writes.clone().checked(&unchecked);
                true
            }
            Ok(_) => false,
            Err(e) => {
                info!(tenant = %ctx.tenant, record_id, provider = %client.provider(), error = %e, "our write is checked after the sync");
                false
            }
        }
    }

    /// Reads the record with the history of the fields our unchecked writes to it wrote, syncs
    /// the pair with what each write replaced, and marks them checked.
    async fn check_link(
        &self,
        client: &dyn CrmClient,
        link: ContactLink,
    ) -> Result<SyncReport, SyncError> {
        let (tenant, provider) = (&link.tenant, link.provider);
        let record_id = link.external_id.as_str();
        let unchecked = link.writes.unchecked();
        let Some(since) = link.writes.check_since() else {
            return Ok(SyncReport::default());
        };
        if link.status == LinkStatus::Deleted {
            // The record is gone from the CRM: nothing of it is synced any more.
            self.mark_checked(tenant, provider, record_id, &unchecked)
                .await?;
            return Ok(SyncReport::default());
        }
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, client).await?;
        let fields = link.writes.unchecked_fields();
        let (record, history) = client
            .get_with_history(&ctx, record_id, &fields, since)
            .await?;
        // Per write: the value before its own entry in the history is what it replaced; judged
        // against the writes as read here (the sync re-reads a link that may have moved on).
        let replaced = lost_to(&link.writes, link.writes.replaced_in(&history));
        let mut report = SyncReport::default();
        if !replaced.is_empty() {
            let known = Known {
                id: record_id.to_string(),
                record,
                link_version: Some(link.version),
            };
            report = self
                .sync_contact(
                    tenant,
                    &link.contact_id,
                    Some(provider),
                    Some(known),
                    &replaced,
                    Trigger::Check,
                    None,
                    None,
                )
                .await?;
        }
        self.mark_checked(tenant, provider, record_id, &unchecked)
            .await?;
        report.contact_id = Some(link.contact_id);
        Ok(report)
    }

    /// The writes that landed at `landings` are checked (a write landed since stays unchecked).
    async fn mark_checked(
        &self,
        tenant: &TenantId,
        provider: Provider,
        record_id: &str,
        landings: &[DateTime<Utc>],
    ) -> Result<(), SyncError> {
        self.update_writes(tenant, provider, record_id, |w| w.checked(landings))
            .await
    }

    /// The link's writes made `f` of themselves, by the link's version (re-read after a lost
    /// race); nothing is written when they stay as they are.
    async fn update_writes(
        &self,
        tenant: &TenantId,
        provider: Provider,
        record_id: &str,
        f: impl Fn(RecentWrites) -> RecentWrites,
    ) -> Result<(), SyncError> {
        let mut attempt = 0;
        loop {
            let Some(link) = self.links.get_link(tenant, provider, record_id).await? else {
                return Ok(());
            };
            let writes = f(link.writes.clone());
            if writes == link.writes {
                return Ok(());
            }
            match self.links.put_link(&ContactLink { writes, ..link }).await {
                Err(StoreError::Conflict(_)) if attempt < MARK_RETRIES => attempt += 1,
                other => return other.map(|_| ()).map_err(Into::into),
            }
        }
    }
}

/// The reports, of those naming a write of ours, that show a value it replaced unseen, as
/// `writes` judge them.
fn lost_to(writes: &RecentWrites, reports: Vec<Reported>) -> Vec<Reported> {
    reports
        .into_iter()
        .filter(|r| writes.foreign(std::slice::from_ref(r)))
        .collect()
}

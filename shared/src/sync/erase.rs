//! Erasure: a person removed everywhere on request — the app contact, its records in every CRM
//! (through their deletion APIs: HubSpot's GDPR delete), the links' values, its history, its
//! conflicts, and its email wherever else the state names it. What stays is an anonymous
//! tombstone per CRM record (the link: its ids, no values), so a late event for the record
//! imports nothing. Every step is idempotent: a job cut off anywhere is run again from the
//! start, and a step already done does nothing.

use tracing::info;

use super::{SyncReport, SyncService};
use crate::domain::{ContactFields, ContactLink, LinkStatus, Provider, RecentWrites, TenantId};
use crate::error::SyncError;

impl SyncService {
    /// Erases contact `contact_id` everywhere (see the module). Never logs the person's data.
    pub async fn erase(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<SyncReport, SyncError> {
        self.tenant(tenant).await?;
        let contact = self.contacts.get(tenant, contact_id).await?;
        let links = self.links.links_for_contact(tenant, contact_id).await?;
        let email = contact
            .as_ref()
            .and_then(|c| c.fields.email.clone())
            .or_else(|| links.iter().find_map(|l| l.base.email.clone()));
        // First the contact stops syncing: a sync running meanwhile archives, never creates.
        if let Some(mut c) = contact.filter(|c| !c.deleted) {
            c.deleted = true;
            c.last_app_modified = self.now();
            self.contacts.update(&c).await?;
        }
        let now = self.now();
        let mut report = SyncReport::default();
        for link in &links {
            let Some(client) = self.tenants.client(tenant, link.provider) else {
                continue;
            };
            let ctx = self.crm_context(tenant, client.as_ref()).await?;
            if link.is_placeholder() {
                // A create under way: its record is erased once the create settles.
                let abandoned_at = link.last_synced_at.unwrap_or_default() + self.create_grace;
                if abandoned_at > now {
                    return Err(SyncError::Busy {
                        provider: link.provider,
                        contact_id: contact_id.to_string(),
                        until: abandoned_at.min(now + chrono::Duration::seconds(1)),
                    });
                }
                // Abandoned: whatever it may have created is found by its email.
                if let Some(email) = link.base.email.as_deref()
                    && let Some(r) = client.find_by_email(&ctx, email).await?
                    && self
                        .links
                        .get_link(tenant, link.provider, &r.id)
                        .await?
                        .is_none()
                {
                    client.erase(&ctx, &r.id).await?;
                    report.crm_writes += 1;
                }
                continue;
            }
            client.erase(&ctx, &link.external_id).await?;
            report.crm_writes += 1;
        }
        self.state
            .erase_contact_state(tenant, contact_id, email.as_deref())
            .await?;
        for link in links {
            if link.is_placeholder() {
                // Its key is the email: withdrawn, not kept.
                self.links.delete_link(&link).await?;
            } else if link != erased(&link) {
                self.links.put_link(&erased(&link)).await?;
            }
        }
        self.contacts.erase(tenant, contact_id).await?;
        info!(%tenant, contact_id, crm_records = report.crm_writes, "contact erased everywhere");
        report.contact_id = Some(contact_id.to_string());
        Ok(report)
    }

    /// A CRM erased the person behind one of its records (HubSpot's privacy deletion): erased
    /// everywhere else too. Nothing of ours for a record we never linked.
    pub(super) async fn erase_record(
        &self,
        tenant: &TenantId,
        provider: Provider,
        record_id: &str,
    ) -> Result<SyncReport, SyncError> {
        match self.links.get_link(tenant, provider, record_id).await? {
            Some(link) => self.erase(tenant, &link.contact_id).await,
            None => Ok(SyncReport::default()),
        }
    }
}

/// A link as an erasure leaves it: a tombstone with its ids and no values.
fn erased(link: &ContactLink) -> ContactLink {
    let base = ContactFields::default();
    ContactLink {
        status: LinkStatus::Deleted,
        last_error: None,
        crm_last_modified: None,
        base_hash: base.content_hash(),
        base,
        warnings: Vec::new(),
        pending: None,
        app_synced: None,
        writes: RecentWrites::default(),
        ..link.clone()
    }
}

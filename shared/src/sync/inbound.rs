//! A CRM record reported changed, mapped to its app contact: through its link (revived when the
//! record was restored), re-keyed after a merge, matched by email on first sight, or imported
//! into the app as a new contact.

use tracing::{info, warn};

use super::{Known, SyncService};
use crate::domain::{
    ChangeEvent, ChangeKind, Contact, ContactLink, LinkStatus, Provider, TenantId,
};
use crate::engine::{self, AppAction, AppSide, CrmSide, PlanInput};
use crate::error::{StoreError, SyncError};
use crate::ports::CrmClient;
use crate::tenant::TenantConfig;

/// The app contact behind a CRM record, and the record when this stage read it (handed on to
/// the pair stage).
pub(super) struct Inbound {
    pub contact_id: String,
    pub record: Option<Known>,
    /// The import that made the contact, for its history.
    pub imported: Option<crate::domain::CrmDecision>,
}

impl SyncService {
    /// Maps the event's CRM record to its app contact; `None` when there is nothing to sync
    /// (an unknown record that is gone, a tombstoned link that stays deleted, no email).
    pub(super) async fn inbound(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        event: &ChangeEvent,
        known: Option<Known>,
    ) -> Result<Option<Inbound>, SyncError> {
        if let ChangeKind::Merge { merged_ids } = &event.kind {
            self.rekey_merged(&cfg.id, client.provider(), &event.record_id, merged_ids)
                .await?;
        }
        self.resolve(cfg, client, &event.record_id, known).await
    }

    async fn resolve(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        record_id: &str,
        known: Option<Known>,
    ) -> Result<Option<Inbound>, SyncError> {
        let tenant = &cfg.id;
        let provider = client.provider();
        if let Some(mut link) = self.links.get_link(tenant, provider, record_id).await? {
            if link.status != LinkStatus::Deleted {
                if link.status == LinkStatus::Pending
                    && self.contacts.get(tenant, &link.contact_id).await?.is_none()
                {
                    // An import cut off after its link: the contact is made now.
                    let fields = link.base.clone();
                    self.complete_import(&link, fields).await?;
                }
                return Ok(Some(Inbound {
                    contact_id: link.contact_id,
                    record: known,
                    imported: None,
                }));
            }
            // Restored in the CRM? Revive the link; otherwise nothing to do.
            self.ensure_not_paused(tenant, provider).await?;
            let ctx = self.crm_context(tenant, client).await?;
            let record = match known {
                Some(k) if k.link_version == Some(link.version) => k.record,
                _ => client.get(&ctx, record_id).await?,
            };
            return match record {
                Some(r) if !r.archived => {
                    link.status = LinkStatus::Pending;
                    let revived = self.links.put_link(&link).await?;
                    Ok(Some(Inbound {
                        contact_id: revived.contact_id,
                        record: Some(Known {
                            id: r.id.clone(),
                            record: Some(r),
                            link_version: Some(revived.version),
                        }),
                        imported: None,
                    }))
                }
                _ => Ok(None),
            };
        }
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, client).await?;
        // A record read while it was linked (the link is gone since) is read again.
        let record = match known {
            Some(k) if k.link_version.is_none() => k.record,
            _ => client.get(&ctx, record_id).await?,
        };
        let Some(record) = record.filter(|r| !r.archived) else {
            return Ok(None);
        };
        // A record created under an intent whose create has not answered yet: it belongs to
        // the intent's contact (live, or deleted meanwhile: then it is archived, not imported).
        if let Some(email) = record.fields.email.as_deref()
            && let Some(intent) = self.intent_for_email(tenant, provider, email).await?
        {
            return Ok(Some(Inbound {
                contact_id: intent.contact_id,
                record: None,
                imported: None,
            }));
        }
        // The intent may have moved to this record since the first look (a rekey is atomic,
        // so looking at its old key and then at its new one cannot miss it).
        if let Some(link) = self.links.get_link(tenant, provider, &record.id).await? {
            return Ok((link.status != LinkStatus::Deleted).then_some(Inbound {
                contact_id: link.contact_id,
                record: None,
                imported: None,
            }));
        }
        if let Some(email) = record.fields.email.as_deref()
            && let Some(existing) = self.contacts.find_by_email(tenant, email).await?
        {
            // First sight of a CRM record matching an app contact by email: the pair stage
            // links them.
            return Ok(Some(Inbound {
                contact_id: existing.id,
                record: Some(Known {
                    id: record.id.clone(),
                    record: Some(record),
                    link_version: None,
                }),
                imported: None,
            }));
        }
        let now = self.now();
        let planning = crate::timing::start();
        let plan = engine::plan(&PlanInput {
            provider,
            app: AppSide::Missing,
            crm: CrmSide::Live(&record.fields),
            base: None,
            policy: cfg.conflict_policy,
            rules: &cfg.field_rules,
            app_modified: None,
            crm_modified: record.updated_at,
            support: ctx.support(),
            now,
            overwritten: None,
        });
        crate::timing::plan(planning);
        let AppAction::Create { fields } = plan.app else {
            for w in &plan.warnings {
                warn!(%tenant, %provider, record_id, "{w}");
            }
            return Ok(None);
        };
        // The link first, then the contact: a worker cut off in between leaves a link whose
        // contact is missing, which the next event for the record completes. (The other order
        // would leave an app contact without its link, and a lagging search could then let a
        // sync create the record a second time.)
        let contact_id = self.new_contact_id();
        let linked = self
            .links
            .put_link(&ContactLink {
                status: LinkStatus::Pending,
                ..ContactLink::synced(
                    tenant,
                    &contact_id,
                    provider,
                    &record.id,
                    record.updated_at,
                    plan.new_base,
                    plan.warnings,
                    now,
                )
            })
            .await?;
        let contact = self.complete_import(&linked, fields).await?;
        self.state
            .record_outcome(tenant, provider, Ok(()), 0)
            .await?;
        info!(%tenant, %provider, record_id, contact_id = %contact.id, "imported a new CRM record into the app");
        let imported = crate::domain::CrmDecision {
            provider,
            record_id: Some(record.id.clone()),
            action: crate::domain::DecisionAction::Imported,
            crm_writes: Vec::new(),
            app_writes: crate::domain::history::all_set(&contact.fields),
            conflicts: Vec::new(),
            error: None,
        };
        Ok(Some(Inbound {
            contact_id: contact.id,
            record: Some(Known {
                id: record.id.clone(),
                record: Some(record),
                link_version: Some(linked.version),
            }),
            imported: Some(imported),
        }))
    }

    /// Inserts the app contact of an import whose link is written. If its email was taken
    /// meanwhile (the app created a contact with it), the link is withdrawn and the job retried:
    /// the next run links the record to that contact.
    async fn complete_import(
        &self,
        link: &ContactLink,
        fields: crate::domain::ContactFields,
    ) -> Result<Contact, SyncError> {
        let contact = Contact::new(
            link.tenant.clone(),
            link.contact_id.clone(),
            fields,
            self.now(),
        );
        match self.contacts.insert(&contact).await {
            Ok(c) => Ok(c),
            Err(StoreError::Duplicate(what)) => {
                match self.contacts.get(&link.tenant, &link.contact_id).await? {
                    // Inserted already (a retry whose first answer was lost).
                    Some(c) => Ok(c),
                    None => {
                        self.links.delete_link(link).await?;
                        Err(StoreError::Conflict(what).into())
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A CRM merge retired `merged_ids` in favour of `survivor`: re-point their links instead of
    /// treating them as deletes.
    async fn rekey_merged(
        &self,
        tenant: &TenantId,
        provider: Provider,
        survivor: &str,
        merged_ids: &[String],
    ) -> Result<(), SyncError> {
        for old in merged_ids.iter().filter(|id| id.as_str() != survivor) {
            let Some(link) = self.links.get_link(tenant, provider, old).await? else {
                continue;
            };
            if self
                .links
                .get_link(tenant, provider, survivor)
                .await?
                .is_none()
            {
                let pending = ContactLink {
                    status: LinkStatus::Pending,
                    ..link
                };
                self.links.rekey_link(&pending, survivor).await?;
            } else if link.status != LinkStatus::Deleted {
                let mut tomb = link;
                tomb.status = LinkStatus::Deleted;
                tomb.last_error = Some(format!("merged into {survivor}"));
                self.links.put_link(&tomb).await?;
            }
        }
        Ok(())
    }
}

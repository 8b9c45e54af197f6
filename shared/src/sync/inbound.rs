//! A CRM record reported changed, mapped to its app contact: through its link (revived when the
//! record was restored), re-keyed after a merge, matched by email on first sight, or imported
//! into the app as a new contact.

use chrono::Utc;
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
                return Ok(Some(Inbound {
                    contact_id: link.contact_id,
                    record: known,
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
            }));
        }
        let now = Utc::now();
        let plan = engine::plan(&PlanInput {
            provider,
            app: AppSide::Missing,
            crm: CrmSide::Live(&record.fields),
            base: None,
            policy: cfg.conflict_policy,
            support: ctx.support(),
            now,
        });
        let AppAction::Create { fields } = plan.app else {
            for w in &plan.warnings {
                warn!(%tenant, %provider, record_id, "{w}");
            }
            return Ok(None);
        };
        let contact = Contact::new(
            tenant.clone(),
            uuid::Uuid::new_v4().to_string(),
            fields,
            now,
        );
        let contact = match self.contacts.insert(&contact).await {
            Ok(c) => c,
            // The same email arrived concurrently: retry the job, the next run links it.
            Err(StoreError::Duplicate(what)) => return Err(StoreError::Conflict(what).into()),
            Err(e) => return Err(e.into()),
        };
        let linked = self
            .links
            .put_link(&ContactLink::synced(
                tenant,
                &contact.id,
                provider,
                &record.id,
                record.updated_at,
                plan.new_base,
                plan.warnings,
                now,
            ))
            .await?;
        self.state
            .record_outcome(tenant, provider, Ok(()), 0)
            .await?;
        info!(%tenant, %provider, record_id, contact_id = %contact.id, "imported a new CRM record into the app");
        Ok(Some(Inbound {
            contact_id: contact.id,
            record: Some(Known {
                id: record.id.clone(),
                record: Some(record),
                link_version: Some(linked.version),
            }),
        }))
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

//! One app contact against one CRM: read both sides, plan with the pure engine, apply the plan
//! (CRM first, then the app), store the link with the new base, log conflicts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Known, SyncReport, SyncService};
use crate::domain::{
    ConflictRecord, Contact, ContactLink, CrmRecord, LinkStatus, Provider, TenantId,
};
use crate::engine::{
    self, AppAction, AppSide, CrmAction, CrmSide, LinkOutcome, PlanInput, SyncPlan,
};
use crate::error::{CrmError, StoreError, SyncError};
use crate::ports::{CrmClient, CrmContext};
use crate::tenant::TenantConfig;

/// How often a lost optimistic-concurrency race is retried before the job fails.
const CONFLICT_RETRIES: usize = 5;

/// What a pair stands on before planning: the contact, its active link with this CRM and the
/// CRM record.
struct PairState {
    contact: Contact,
    active: Option<ContactLink>,
    record: Option<CrmRecord>,
}

impl SyncService {
    /// Syncs one app contact with every CRM of its tenant, `first` first (with `known`, the
    /// record an earlier stage read from it). A failure with one CRM does not stop the others;
    /// the first error is returned so the job is retried.
    pub async fn sync_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        first: Option<Provider>,
        known: Option<Known>,
    ) -> Result<SyncReport, SyncError> {
        let cfg = self.tenant(tenant)?;
        let mut clients: Vec<Arc<dyn CrmClient>> = self.tenants.clients(tenant).to_vec();
        clients.sort_by_key(|c| Some(c.provider()) != first);
        let mut known = known;
        let mut report = SyncReport::default();
        let mut first_error = None;
        for client in clients {
            let hint = if Some(client.provider()) == first {
                known.take()
            } else {
                None
            };
            match self
                .sync_pair_retrying(cfg, client.as_ref(), contact_id, hint)
                .await
            {
                Ok(r) => report.add(&r),
                Err(err) => {
                    self.record_failure(tenant, contact_id, client.provider(), &err)
                        .await;
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(report),
        }
    }

    /// Makes a failed sync visible: on the contact's link (or as an issue of the contact when it
    /// has none yet) and in the CRM's stats; a spent quota pauses the CRM for the tenant.
    pub(super) async fn record_failure(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        err: &SyncError,
    ) {
        warn!(%tenant, contact_id, %provider, error = %err, "sync failed");
        let message = err.to_string();
        if let Some(until) = err.deferred_until() {
            let _ = self
                .state
                .set_paused_until(tenant, provider, Some(until))
                .await;
        }
        let _ = self
            .state
            .record_outcome(tenant, provider, Err(message.clone()), 0)
            .await;
        let status = if err.deferred_until().is_some() {
            LinkStatus::Pending
        } else {
            LinkStatus::Error
        };
        let link = self
            .links
            .link_for_contact(tenant, contact_id, provider)
            .await
            .unwrap_or_default();
        match link.filter(|l| l.status != LinkStatus::Deleted) {
            Some(mut link) => {
                link.status = status;
                link.last_error = Some(message);
                let _ = self.links.put_link(&link).await;
            }
            None => {
                let _ = self
                    .state
                    .set_issue(tenant, contact_id, provider, Some(&message))
                    .await;
            }
        }
    }

    /// [`sync_pair`](Self::sync_pair), re-read and re-planned after a lost write race; a record
    /// known beforehand serves the first attempt only.
    pub(super) async fn sync_pair_retrying(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        contact_id: &str,
        known: Option<Known>,
    ) -> Result<SyncReport, SyncError> {
        let mut known = known;
        let mut attempt = 0;
        loop {
            match self.sync_pair(cfg, client, contact_id, known.take()).await {
                Err(SyncError::Store(StoreError::Conflict(what))) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    info!(tenant = %cfg.id, contact_id, what, attempt, "lost a write race; re-reading");
                }
                other => return other,
            }
        }
    }

    /// One app contact against one CRM: read both, plan, apply, store the link.
    async fn sync_pair(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        contact_id: &str,
        known: Option<Known>,
    ) -> Result<SyncReport, SyncError> {
        let tenant = &cfg.id;
        let provider = client.provider();
        let Some(contact) = self.contacts.get(tenant, contact_id).await? else {
            return Ok(SyncReport::default());
        };
        // Read by key, consistently: a decision is never made from an index that may lag.
        let active = match self
            .links
            .link_for_contact(tenant, contact_id, provider)
            .await?
        {
            // The CRM record was deleted: delete protection, nothing is recreated.
            Some(l) if l.status == LinkStatus::Deleted => return Ok(SyncReport::default()),
            other => other,
        };
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, client).await?;
        let record = Self::read_crm_side(client, &ctx, &contact, active.as_ref(), known).await?;
        let pair = PairState {
            contact,
            active,
            record,
        };
        self.check_unclaimed(tenant, provider, &pair).await?;
        let now = Utc::now();
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
            base: pair.active.as_ref().map(|l| &l.base),
            policy: cfg.conflict_policy,
            support: ctx.support(),
            now,
        });
        self.apply(tenant, client, &ctx, pair, plan, now).await
    }

    /// The CRM side of a pair: the linked record (as already read, else read now), else the
    /// record an earlier stage found for the contact, else one with the contact's email.
    async fn read_crm_side(
        client: &dyn CrmClient,
        ctx: &CrmContext,
        contact: &Contact,
        active: Option<&ContactLink>,
        known: Option<Known>,
    ) -> Result<Option<CrmRecord>, CrmError> {
        match (active, known) {
            (Some(link), Some(k)) if k.id == link.external_id => Ok(k.record),
            (Some(link), _) => client.get(ctx, &link.external_id).await,
            (
                None,
                Some(Known {
                    record: Some(r), ..
                }),
            ) => Ok(Some(r)),
            (None, _) if !contact.deleted => match contact.fields.email.as_deref() {
                Some(email) => client.find_by_email(ctx, email).await,
                None => Ok(None),
            },
            (None, _) => Ok(None),
        }
    }

    /// A CRM record found by email that another contact already links is not taken over.
    async fn check_unclaimed(
        &self,
        tenant: &TenantId,
        provider: Provider,
        pair: &PairState,
    ) -> Result<(), SyncError> {
        if pair.active.is_none()
            && let Some(r) = &pair.record
            && let Some(other) = self.links.get_link(tenant, provider, &r.id).await?
            && other.contact_id != pair.contact.id
        {
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
        Ok(())
    }

    /// Applies a plan: the CRM write, then the app write (conditional on the contact's version),
    /// then the link with the new base, the conflict log and the stats.
    async fn apply(
        &self,
        tenant: &TenantId,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        pair: PairState,
        plan: SyncPlan,
        now: DateTime<Utc>,
    ) -> Result<SyncReport, SyncError> {
        let provider = client.provider();
        let PairState {
            contact,
            active,
            record,
        } = pair;
        let mut report = SyncReport {
            conflicts: plan.conflicts.len(),
            ..Default::default()
        };
        let mut external_id = active
            .as_ref()
            .map(|l| l.external_id.clone())
            .or_else(|| record.as_ref().map(|r| r.id.clone()));
        let mut crm_modified = record.as_ref().and_then(|r| r.updated_at);
        match &plan.crm {
            CrmAction::None => {}
            CrmAction::Create { fields } => {
                let created = match client.create(ctx, fields).await {
                    Ok(created) => created,
                    // Someone created it meanwhile (or search lagged): link to it and re-plan.
                    Err(CrmError::AlreadyExists { existing_id, .. }) => {
                        return Err(StoreError::Conflict(format!(
                            "{provider} record {existing_id} appeared while creating"
                        ))
                        .into());
                    }
                    Err(e) => return Err(e.into()),
                };
                external_id = Some(created.id.clone());
                crm_modified = created.updated_at;
                report.crm_writes += 1;
            }
            CrmAction::Update { patch } => {
                let id = external_id.as_deref().unwrap_or_default();
                let updated = client.update(ctx, id, patch).await?;
                crm_modified = updated.updated_at;
                report.crm_writes += 1;
            }
            CrmAction::Archive => {
                let id = external_id.as_deref().unwrap_or_default();
                client.archive(ctx, id).await?;
                report.crm_writes += 1;
            }
        }
        if let AppAction::Update { patch } = &plan.app {
            let mut updated = contact.clone();
            updated.fields.apply(patch);
            self.contacts.update(&updated).await?;
            report.app_writes += 1;
        }
        let Some(external_id) = external_id else {
            return Ok(report);
        };
        let first_sync = active.is_none();
        match plan.link {
            LinkOutcome::Skip => {}
            LinkOutcome::Tombstone => {
                if let Some(mut link) = active {
                    link.status = LinkStatus::Deleted;
                    link.last_synced_at = Some(now);
                    link.last_error = None;
                    self.links.put_link(&link).await?;
                }
            }
            LinkOutcome::Synced => {
                let link = ContactLink {
                    version: active.as_ref().map_or(0, |l| l.version),
                    ..ContactLink::synced(
                        tenant,
                        &contact.id,
                        provider,
                        &external_id,
                        crm_modified,
                        plan.new_base.clone(),
                        plan.warnings.clone(),
                        now,
                    )
                };
                if active.as_ref() != Some(&link) || link.version == 0 {
                    self.links.put_link(&link).await?;
                }
            }
        }
        for conflict in &plan.conflicts {
            self.state
                .log_conflict(&ConflictRecord {
                    tenant: tenant.clone(),
                    contact_id: contact.id.clone(),
                    provider,
                    external_id: external_id.clone(),
                    conflict: conflict.clone(),
                })
                .await?;
        }
        self.state
            .record_outcome(tenant, provider, Ok(()), plan.conflicts.len() as u64)
            .await?;
        // Issues are recorded only for contacts without a link, so only a first sync clears one
        // (no extra write on every later sync).
        if first_sync {
            self.state
                .set_issue(tenant, &contact.id, provider, None)
                .await?;
        }
        if report.app_writes + report.crm_writes > 0 {
            info!(%tenant, contact_id = %contact.id, %provider, app_writes = report.app_writes, crm_writes = report.crm_writes, conflicts = report.conflicts, "synced");
        }
        Ok(report)
    }
}

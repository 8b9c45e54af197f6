//! The sync service: handles one ChangeEvent through the ports (read current state, plan,
//! apply, update links and stats).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use tracing::{info, warn};

use crate::domain::{
    ChangeEvent, ChangeKind, ConflictRecord, Contact, ContactLink, CrmRecord, FieldSupport,
    LinkStatus, Provider, TenantId,
};
use crate::engine::{self, AppAction, AppSide, CrmAction, CrmSide, LinkOutcome, PlanInput};
use crate::error::{CrmError, StoreError, SyncError};
use crate::ports::{
    ChangedRecord, ContactStore, CrmClient, CrmContext, JobQueue, LinkStore, SyncState,
};
use crate::tenant::{TenantConfig, Tenants};

/// Name of the pronouns field in the field-key map.
pub const PRONOUNS: &str = "pronouns";
/// How often a lost optimistic-concurrency race is retried before the job fails.
const CONFLICT_RETRIES: usize = 5;

/// How long one Sync Now job works before it queues its continuation, by default.
const RECONCILE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
/// Continuations of one Sync Now at most (a guard against a backfill that never shrinks).
const MAX_RECONCILE_ROUNDS: u32 = 500;
/// `provenance` of a Sync Now job that continues an earlier one.
pub const RECONCILE_CONTINUE: &str = "continue";

/// Progress of a Sync Now run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncNowProgress {
    pub running: bool,
    pub phase: String,
    pub started_at: Option<chrono::DateTime<Utc>>,
    pub finished_at: Option<chrono::DateTime<Utc>>,
    /// Contacts linked by batch backfill.
    pub backfilled: usize,
    /// Jobs this Sync Now took so far (it continues itself when its time budget runs out).
    #[serde(default)]
    pub rounds: u32,
    /// Sync jobs queued (changed CRM records, failed contacts).
    pub enqueued: usize,
    pub errors: Vec<String>,
}

/// What one handled event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub contact_id: Option<String>,
    pub app_writes: usize,
    pub crm_writes: usize,
    pub conflicts: usize,
}

impl SyncReport {
    fn add(&mut self, other: &SyncReport) {
        self.app_writes += other.app_writes;
        self.crm_writes += other.crm_writes;
        self.conflicts += other.conflicts;
    }
}

/// How long a prefetched CRM record may stand in for a fresh read.
const PREFETCH_TTL: std::time::Duration = std::time::Duration::from_secs(10);

type PrefetchKey = (TenantId, Provider, String);

/// CRM records read in one batch call for the events of one queue batch; each is used at most
/// once (the first read of that record), then reads go to the CRM again.
#[derive(Default)]
struct Prefetched(std::sync::Mutex<HashMap<PrefetchKey, (std::time::Instant, Option<CrmRecord>)>>);

/// Whether a polled record holds what its link last agreed. With the record's values at hand
/// (Pipedrive's listing), they decide: equal to the base on every field the CRM stores means
/// nothing to sync, whatever the timestamps say. Otherwise the modification time decides; a
/// timestamp in whole seconds cannot tell our write from a user's edit in the same second, so
/// equality counts as seen only with sub-second precision (HubSpot's milliseconds).
fn already_agreed(rec: &ChangedRecord, link: &ContactLink, support: FieldSupport) -> bool {
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

/// The sync logic over the ports.
#[derive(Clone)]
pub struct SyncService {
    pub contacts: Arc<dyn ContactStore>,
    pub links: Arc<dyn LinkStore>,
    pub state: Arc<dyn SyncState>,
    pub tenants: Arc<Tenants>,
    prefetched: Arc<Prefetched>,
    reconcile_budget: std::time::Duration,
}

impl SyncService {
    pub fn new(
        contacts: Arc<dyn ContactStore>,
        links: Arc<dyn LinkStore>,
        state: Arc<dyn SyncState>,
        tenants: Arc<Tenants>,
    ) -> Self {
        Self {
            contacts,
            links,
            state,
            tenants,
            prefetched: Arc::default(),
            reconcile_budget: RECONCILE_BUDGET,
        }
    }

    /// How long one Sync Now job works before it queues its continuation (default 10 s).
    pub fn with_reconcile_budget(mut self, budget: std::time::Duration) -> Self {
        self.reconcile_budget = budget;
        self
    }

    /// Reads the CRM records behind a batch of events with the CRMs' batch endpoints (HubSpot:
    /// batch read, 100 per call), so handling the events afterwards needs no single reads.
    pub async fn prefetch(&self, events: &[ChangeEvent]) {
        let mut groups: HashMap<(TenantId, Provider), Vec<String>> = HashMap::new();
        for e in events {
            if let (Some(p), ChangeKind::Upsert | ChangeKind::Delete) =
                (e.origin.provider(), &e.kind)
            {
                groups
                    .entry((e.tenant.clone(), p))
                    .or_default()
                    .push(e.record_id.clone());
            }
        }
        for ((tenant, provider), mut ids) in groups {
            ids.sort();
            ids.dedup();
            if ids.len() < 2 || self.ensure_not_paused(&tenant, provider).await.is_err() {
                continue;
            }
            let Some(client) = self.tenants.client(&tenant, provider).cloned() else {
                continue;
            };
            let Ok(ctx) = self.crm_context(&tenant, provider).await else {
                continue;
            };
            match client.get_many(&ctx, &ids).await {
                Ok(mut found) => {
                    let now = std::time::Instant::now();
                    let mut cache = self.prefetched.0.lock().unwrap_or_else(|p| p.into_inner());
                    cache.retain(|_, (at, _)| at.elapsed() < PREFETCH_TTL);
                    for id in ids {
                        let record = found.remove(&id);
                        cache.insert((tenant.clone(), provider, id), (now, record));
                    }
                }
                Err(e) => {
                    warn!(%tenant, %provider, error = %e, "batch read failed; records are read one by one")
                }
            }
        }
    }

    /// A CRM record: the prefetched copy when there is a fresh one, else a read. `consume`
    /// drops the copy (the caller may write the record next); otherwise it stays for the
    /// sync that follows in the same event.
    async fn read_record(
        &self,
        client: &dyn CrmClient,
        ctx: &CrmContext,
        id: &str,
        consume: bool,
    ) -> Result<Option<CrmRecord>, CrmError> {
        let key = (ctx.tenant.clone(), client.provider(), id.to_string());
        let cached = {
            let mut cache = self.prefetched.0.lock().unwrap_or_else(|p| p.into_inner());
            if consume {
                cache.remove(&key)
            } else {
                cache.get(&key).cloned()
            }
        };
        match cached {
            Some((at, record)) if at.elapsed() < PREFETCH_TTL => Ok(record),
            _ => client.get(ctx, id).await,
        }
    }

    fn tenant(&self, id: &TenantId) -> Result<&TenantConfig, SyncError> {
        self.tenants
            .get(id)
            .ok_or_else(|| SyncError::UnknownTenant(id.to_string()))
    }

    /// The per-call CRM context: tenant and field keys.
    pub async fn crm_context(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<CrmContext, SyncError> {
        Ok(CrmContext {
            tenant: tenant.clone(),
            pronouns_key: self.state.field_key(tenant, provider, PRONOUNS).await?,
            job_title_key: match provider {
                Provider::Pipedrive => {
                    self.state
                        .field_key(tenant, provider, crate::crm::pipedrive::JOB_TITLE_FIELD)
                        .await?
                }
                Provider::HubSpot => None,
            },
        })
    }

    /// Handles one change event. Idempotent: duplicated, late or reordered events are harmless
    /// because the current state is read from its source.
    #[tracing::instrument(skip(self, event), fields(tenant = %event.tenant, origin = ?event.origin, record = %event.record_id))]
    pub async fn handle(&self, event: &ChangeEvent) -> Result<SyncReport, SyncError> {
        let result = self.handle_inner(event).await;
        // A prefetched copy serves this event only: later events read the CRM again.
        if let Some(provider) = event.origin.provider() {
            self.prefetched
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(event.tenant.clone(), provider, event.record_id.clone()));
        }
        result
    }

    async fn handle_inner(&self, event: &ChangeEvent) -> Result<SyncReport, SyncError> {
        let cfg = self.tenant(&event.tenant)?;
        let contact_id = match event.origin.provider() {
            None => Some(event.record_id.clone()),
            Some(provider) => {
                let Some(client) = self.tenants.client(&cfg.id, provider).cloned() else {
                    warn!(%provider, "event for a provider this tenant does not use");
                    return Ok(SyncReport::default());
                };
                if let ChangeKind::Merge { merged_ids } = &event.kind {
                    self.rekey_merged(&cfg.id, provider, &event.record_id, merged_ids)
                        .await?;
                }
                self.resolve_crm_record(cfg, client.as_ref(), &event.record_id)
                    .await?
            }
        };
        let Some(contact_id) = contact_id else {
            return Ok(SyncReport::default());
        };
        let mut report = self
            .sync_contact(&cfg.id, &contact_id, event.origin.provider())
            .await?;
        report.contact_id = Some(contact_id);
        Ok(report)
    }

    /// Syncs one app contact with every CRM of its tenant, `first` first. A failure with one CRM
    /// does not stop the others; the first error is returned so the job is retried.
    pub async fn sync_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        first: Option<Provider>,
    ) -> Result<SyncReport, SyncError> {
        let cfg = self.tenant(tenant)?;
        let mut clients: Vec<Arc<dyn CrmClient>> = self.tenants.clients(tenant).to_vec();
        clients.sort_by_key(|c| Some(c.provider()) != first);
        let mut report = SyncReport::default();
        let mut first_error = None;
        for client in clients {
            match self
                .sync_pair_retrying(cfg, client.as_ref(), contact_id, None)
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

    async fn record_failure(
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
        let links = self
            .links
            .links_for_contact(tenant, contact_id)
            .await
            .unwrap_or_default();
        match links
            .into_iter()
            .find(|l| l.provider == provider && l.status != LinkStatus::Deleted)
        {
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

    async fn sync_pair_retrying(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        contact_id: &str,
        hint: Option<CrmRecord>,
    ) -> Result<SyncReport, SyncError> {
        let mut attempt = 0;
        loop {
            match self.sync_pair(cfg, client, contact_id, hint.clone()).await {
                Err(SyncError::Store(StoreError::Conflict(what))) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    info!(tenant = %cfg.id, contact_id, what, attempt, "lost a write race; re-reading");
                }
                other => return other,
            }
        }
    }

    async fn ensure_not_paused(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<(), SyncError> {
        let stats = self.state.stats(tenant, provider).await?;
        match stats.paused_until {
            Some(until) if until > Utc::now() => {
                Err(CrmError::QuotaExhausted { provider, until }.into())
            }
            Some(_) => {
                self.state.set_paused_until(tenant, provider, None).await?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// One app contact against one CRM: read both, plan, apply, store the link.
    async fn sync_pair(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        contact_id: &str,
        hint: Option<CrmRecord>,
    ) -> Result<SyncReport, SyncError> {
        let tenant = &cfg.id;
        let provider = client.provider();
        let Some(contact) = self.contacts.get(tenant, contact_id).await? else {
            return Ok(SyncReport::default());
        };
        let links = self.links.links_for_contact(tenant, contact_id).await?;
        let active = links
            .iter()
            .find(|l| l.provider == provider && l.status != LinkStatus::Deleted)
            .cloned();
        if active.is_none() && links.iter().any(|l| l.provider == provider) {
            // The CRM record was deleted: delete protection, nothing is recreated.
            return Ok(SyncReport::default());
        }
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, provider).await?;
        let record = match (&active, hint) {
            (Some(link), _) => {
                self.read_record(client, &ctx, &link.external_id, true)
                    .await?
            }
            (None, Some(hint)) => Some(hint),
            (None, None) if !contact.deleted => match contact.fields.email.as_deref() {
                Some(email) => client.find_by_email(&ctx, email).await?,
                None => None,
            },
            (None, None) => None,
        };
        if active.is_none()
            && let Some(r) = &record
            && let Some(other) = self.links.get_link(tenant, provider, &r.id).await?
            && other.contact_id != contact.id
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

        let support = FieldSupport {
            pronouns: ctx.pronouns_key.is_some(),
        };
        let now = Utc::now();
        let plan = engine::plan(&PlanInput {
            provider,
            app: if contact.deleted {
                AppSide::Deleted
            } else {
                AppSide::Live(&contact.fields)
            },
            crm: match &record {
                None => CrmSide::Missing,
                Some(r) if r.archived => CrmSide::Archived,
                Some(r) => CrmSide::Live(&r.fields),
            },
            base: active.as_ref().map(|l| &l.base),
            policy: cfg.conflict_policy,
            support,
            now,
        });

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
                let created = match client.create(&ctx, fields).await {
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
                let updated = client.update(&ctx, id, patch).await?;
                crm_modified = updated.updated_at;
                report.crm_writes += 1;
            }
            CrmAction::Archive => {
                let id = external_id.as_deref().unwrap_or_default();
                client.archive(&ctx, id).await?;
                report.crm_writes += 1;
            }
        }
        match &plan.app {
            AppAction::None | AppAction::Create { .. } => {}
            AppAction::Update { patch } => {
                let mut updated = contact.clone();
                updated.fields.apply(patch);
                self.contacts.update(&updated).await?;
                report.app_writes += 1;
            }
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

    /// Maps a CRM record to its app contact, importing it into the app when it is new.
    async fn resolve_crm_record(
        &self,
        cfg: &TenantConfig,
        client: &dyn CrmClient,
        record_id: &str,
    ) -> Result<Option<String>, SyncError> {
        let tenant = &cfg.id;
        let provider = client.provider();
        if let Some(mut link) = self.links.get_link(tenant, provider, record_id).await? {
            if link.status == LinkStatus::Deleted {
                // Restored in the CRM? Revive the link; otherwise nothing to do.
                self.ensure_not_paused(tenant, provider).await?;
                let ctx = self.crm_context(tenant, provider).await?;
                match client.get(&ctx, record_id).await? {
                    Some(r) if !r.archived => {
                        link.status = LinkStatus::Pending;
                        self.links.put_link(&link).await?;
                    }
                    _ => return Ok(None),
                }
            }
            return Ok(Some(link.contact_id));
        }
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, provider).await?;
        let Some(record) = self.read_record(client, &ctx, record_id, false).await? else {
            return Ok(None);
        };
        if record.archived {
            return Ok(None);
        }
        if let Some(email) = record.fields.email.as_deref()
            && let Some(existing) = self.contacts.find_by_email(tenant, email).await?
        {
            // First sight of a CRM record matching an app contact by email: link them.
            self.sync_pair_retrying(cfg, client, &existing.id, Some(record))
                .await?;
            return Ok(Some(existing.id));
        }
        let support = FieldSupport {
            pronouns: ctx.pronouns_key.is_some(),
        };
        let now = Utc::now();
        let plan = engine::plan(&PlanInput {
            provider,
            app: AppSide::Missing,
            crm: CrmSide::Live(&record.fields),
            base: None,
            policy: cfg.conflict_policy,
            support,
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
        self.links
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
        Ok(Some(contact.id))
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
                let mut moved = link.clone();
                moved.external_id = survivor.to_string();
                moved.status = LinkStatus::Pending;
                moved.version = 0;
                self.links.put_link(&moved).await?;
                self.links
                    .delete_link(tenant, provider, old, link.version)
                    .await?;
            } else if link.status != LinkStatus::Deleted {
                let mut tomb = link;
                tomb.status = LinkStatus::Deleted;
                tomb.last_error = Some(format!("merged into {survivor}"));
                self.links.put_link(&tomb).await?;
            }
        }
        Ok(())
    }

    /// Sync Now: backfills unlinked contacts into every CRM, polls every CRM for changes and
    /// re-queues contacts whose last sync failed. Progress is readable (`sync_now_progress`)
    /// while it runs.
    pub async fn reconcile(
        &self,
        tenant: &TenantId,
        queue: &dyn JobQueue,
        continuing: bool,
    ) -> Result<SyncNowProgress, SyncError> {
        self.tenant(tenant)?;
        let mut progress = match self.sync_now_progress(tenant).await? {
            Some(previous) if continuing => SyncNowProgress {
                rounds: previous.rounds + 1,
                ..previous
            },
            _ => SyncNowProgress {
                running: true,
                started_at: Some(Utc::now()),
                rounds: 1,
                ..Default::default()
            },
        };
        self.save_progress(tenant, &progress).await?;
        // One job does what fits in its time budget, then queues its own continuation, so a
        // large first backfill never outruns the worker's timeout.
        let deadline = std::time::Instant::now() + self.reconcile_budget;
        for provider in self.tenants.providers(tenant) {
            progress.phase = format!("backfill {provider}");
            self.save_progress(tenant, &progress).await?;
            match self.backfill(tenant, provider, Some(deadline)).await {
                Ok((n, more)) => {
                    progress.backfilled += n;
                    if more && progress.rounds < MAX_RECONCILE_ROUNDS {
                        progress.phase = format!("backfill {provider} (continuing)");
                        self.save_progress(tenant, &progress).await?;
                        let mut next = ChangeEvent::new(
                            tenant.clone(),
                            crate::domain::Origin::App,
                            "*",
                            ChangeKind::Reconcile,
                        );
                        next.provenance = Some(RECONCILE_CONTINUE.into());
                        queue.enqueue(&[next]).await?;
                        return Ok(progress);
                    }
                }
                Err(e) => progress.errors.push(format!("{provider} backfill: {e}")),
            }
            progress.phase = format!("poll {provider}");
            self.save_progress(tenant, &progress).await?;
            match self.poll(tenant, provider, queue, 50).await {
                Ok(n) => progress.enqueued += n,
                Err(e) => progress.errors.push(format!("{provider} poll: {e}")),
            }
        }
        progress.phase = "retry failed".into();
        let mut retry: Vec<String> = self
            .links
            .links_for_tenant(tenant)
            .await?
            .into_iter()
            .filter(|l| matches!(l.status, LinkStatus::Error | LinkStatus::Pending))
            .map(|l| l.contact_id)
            .collect();
        retry.sort();
        retry.dedup();
        let events: Vec<ChangeEvent> = retry
            .iter()
            .map(|id| {
                ChangeEvent::new(
                    tenant.clone(),
                    crate::domain::Origin::App,
                    id.clone(),
                    ChangeKind::Upsert,
                )
            })
            .collect();
        for chunk in events.chunks(100) {
            queue.enqueue(chunk).await?;
        }
        progress.enqueued += events.len();
        progress.running = false;
        progress.phase = "done".into();
        progress.finished_at = Some(Utc::now());
        self.save_progress(tenant, &progress).await?;
        info!(%tenant, backfilled = progress.backfilled, enqueued = progress.enqueued, errors = progress.errors.len(), "sync now finished");
        Ok(progress)
    }

    async fn save_progress(&self, tenant: &TenantId, p: &SyncNowProgress) -> Result<(), SyncError> {
        let json = serde_json::to_string(p).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.state.set_cursor(tenant, "sync_now", &json).await?;
        Ok(())
    }

    /// The last (or running) Sync Now's progress.
    pub async fn sync_now_progress(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<SyncNowProgress>, SyncError> {
        Ok(self
            .state
            .cursor(tenant, "sync_now")
            .await?
            .and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Creates the pronouns field in every CRM of the tenant (idempotent) and stores its key.
    pub async fn setup_pronouns(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Provider, Result<String, CrmError>)>, SyncError> {
        self.tenant(tenant)?;
        let mut out = Vec::new();
        for client in self.tenants.clients(tenant).to_vec() {
            let provider = client.provider();
            let ctx = self.crm_context(tenant, provider).await?;
            let result = client.ensure_pronouns_field(&ctx).await;
            if let Ok(key) = &result {
                self.state
                    .set_field_key(tenant, provider, PRONOUNS, Some(key))
                    .await?;
                info!(%tenant, %provider, key, "pronouns field ready");
            }
            out.push((provider, result));
        }
        Ok(out)
    }

    /// Looks the pronouns field up in every CRM (without creating it) and stores what it finds.
    pub async fn refresh_pronouns_fields(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Provider, Result<Option<String>, CrmError>)>, SyncError> {
        self.tenant(tenant)?;
        let mut out = Vec::new();
        for client in self.tenants.clients(tenant).to_vec() {
            let provider = client.provider();
            let ctx = self.crm_context(tenant, provider).await?;
            let found = client.find_pronouns_field(&ctx).await;
            if let Ok(key) = &found {
                self.state
                    .set_field_key(tenant, provider, PRONOUNS, key.as_deref())
                    .await?;
            }
            out.push((provider, found));
        }
        Ok(out)
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
        self.tenant(tenant)?;
        let Some(client) = self.tenants.client(tenant, provider).cloned() else {
            return Ok(0);
        };
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, provider).await?;
        let support = FieldSupport {
            pronouns: ctx.pronouns_key.is_some(),
        };
        let cursor_name = format!("poll#{provider}");
        let mut cursor = self.state.cursor(tenant, &cursor_name).await?;
        let mut enqueued = 0;
        for _ in 0..max_pages.max(1) {
            let page = client.changed_since(&ctx, cursor.as_deref()).await?;
            let mut events = Vec::new();
            for rec in &page.records {
                // Already agreed (e.g. our own write): skip the trigger.
                if let Some(link) = self.links.get_link(tenant, provider, &rec.id).await?
                    && link.status == LinkStatus::Synced
                    && already_agreed(rec, &link, support)
                {
                    continue;
                }
                let mut e = ChangeEvent::new(
                    tenant.clone(),
                    provider.into(),
                    rec.id.clone(),
                    ChangeKind::Upsert,
                );
                e.provenance = Some("poll".into());
                events.push(e);
            }
            for chunk in events.chunks(100) {
                queue.enqueue(chunk).await?;
            }
            enqueued += events.len();
            if let Some(next) = &page.next_cursor {
                self.state.set_cursor(tenant, &cursor_name, next).await?;
            }
            if !page.has_more || page.next_cursor.is_none() || page.next_cursor == cursor {
                break;
            }
            cursor = page.next_cursor;
        }
        if enqueued > 0 {
            info!(%tenant, %provider, enqueued, "poll found changed records");
        }
        Ok(enqueued)
    }

    /// First sync of a tenant's unlinked contacts with one CRM, in batches (HubSpot: 100 per
    /// batch upsert). Returns how many contacts were linked.
    pub async fn backfill(
        &self,
        tenant: &TenantId,
        provider: Provider,
        deadline: Option<std::time::Instant>,
    ) -> Result<(usize, bool), SyncError> {
        self.tenant(tenant)?;
        let Some(client) = self.tenants.client(tenant, provider).cloned() else {
            return Ok((0, false));
        };
        self.ensure_not_paused(tenant, provider).await?;
        let ctx = self.crm_context(tenant, provider).await?;
        let support = FieldSupport {
            pronouns: ctx.pronouns_key.is_some(),
        };
        let linked: std::collections::HashSet<String> = self
            .links
            .links_for_tenant(tenant)
            .await?
            .into_iter()
            .filter(|l| l.provider == provider)
            .map(|l| l.contact_id)
            .collect();
        let mut pending = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.contacts.list(tenant, after.as_deref(), 500).await?;
            pending.extend(
                page.items
                    .into_iter()
                    .filter(|c| !linked.contains(&c.id) && c.fields.email.is_some()),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut done = 0;
        let chunks: Vec<_> = pending.chunks(100).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok((done, true));
            }
            let inputs: Vec<_> = chunk
                .iter()
                .map(|c| {
                    let mut f = c.fields.clone();
                    if !support.pronouns {
                        f.pronouns = None;
                    }
                    f
                })
                .collect();
            let results = client.upsert_many(&ctx, &inputs).await?;
            let now = Utc::now();
            for ((contact, sent), result) in chunk.iter().zip(&inputs).zip(results) {
                match result {
                    Ok(record) => {
                        // What we sent is what both sides now agree on.
                        let warnings = if !support.pronouns && contact.fields.pronouns.is_some() {
                            vec![engine::pronouns_warning(provider)]
                        } else {
                            Vec::new()
                        };
                        let link = ContactLink::synced(
                            tenant,
                            &contact.id,
                            provider,
                            &record.id,
                            record.updated_at,
                            sent.clone(),
                            warnings,
                            now,
                        );
                        match self.links.put_link(&link).await {
                            Ok(_) => done += 1,
                            // Linked concurrently by a webhook-driven sync: that one stands.
                            Err(StoreError::Conflict(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                        self.state
                            .record_outcome(tenant, provider, Ok(()), 0)
                            .await?;
                    }
                    Err(err) => {
                        self.record_failure(tenant, &contact.id, provider, &err.into())
                            .await;
                    }
                }
            }
        }
        Ok((done, false))
    }
}

#[cfg(test)]
mod tests;

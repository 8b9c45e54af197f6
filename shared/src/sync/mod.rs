//! The sync service, by stage. A [`ChangeEvent`] enters at [`SyncService::handle`]:
//!
//! 1. [`inbound`]: a CRM record is mapped to its app contact (linked, imported, re-keyed after a
//!    merge, revived after a restore);
//! 2. [`pair`]: the contact is synced with each CRM of its tenant — read both sides, plan with
//!    the pure engine, [`apply`] the plan, store the link ([`create`]: a record is created
//!    once, under an intent);
//! 3. [`reconcile`]: Sync Now, the scheduled poll and the batch backfill find what events missed;
//!    [`check`]: our writes checked against their echoes or the CRM's field history (a user's
//!    edit a write overwrote is found even when its event was lost);
//! 4. [`fields`]: our custom fields in the CRMs (pronouns, job title);
//! 5. [`worker`]: runs queued [`Job`]s and settles them (retry, defer, dead letter), locally and
//!    in Lambda alike.

mod apply;
mod check;
mod create;
mod erase;
mod failure;
mod fields;
mod health;
mod history;
mod inbound;
mod pair;
mod reconcile;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::domain::{
    ChangeEvent, ChangeKind, ContactLink, CrmRecord, CustomField, Job, Provider, TenantId,
};
use crate::error::{CrmError, StoreError, SyncError};
use crate::ports::{Clock, ContactStore, CrmClient, CrmContext, LinkStore, SyncState};
use crate::tenant::{TenantConfig, Tenants};

pub use crate::ports::SyncNowProgress;
pub use check::CHECK_GRACE_SECS;
pub use health::{CrmHealthReport, ReasonCount, WEBHOOK_GRACE_SECS, WebhookState};
pub use reconcile::{
    ConflictExample, ConflictGroup, CrmPreview, PreviewExample, PreviewGroup, SyncPreview,
};

/// How long one Sync Now job works before it queues its continuation, by default.
const RECONCILE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a create's intent holds off other workers, by default (seconds).
const CREATE_GRACE_SECS: i64 = 30;

/// What one handled event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub contact_id: Option<String>,
    pub app_writes: usize,
    pub crm_writes: usize,
    /// Of `crm_writes`, those already checked for a user's edit they replaced (a create, or
    /// an update checked before its link was written): no check after the sync.
    pub crm_writes_checked: usize,
    pub conflicts: usize,
    /// The record a pair's sync ended linked to (one pair's report only).
    pub record_id: Option<String>,
    /// Per CRM, what the sync decided, for the contact's history.
    pub decisions: Vec<crate::domain::CrmDecision>,
}

impl SyncReport {
    fn add(&mut self, other: &SyncReport) {
        self.app_writes += other.app_writes;
        self.crm_writes += other.crm_writes;
        self.crm_writes_checked += other.crm_writes_checked;
        self.conflicts += other.conflicts;
        self.decisions.extend(other.decisions.iter().cloned());
    }

    /// Adds one CRM's outcome: its report, or its error (the first one kept).
    fn merge(&mut self, done: Result<SyncReport, SyncError>, first_error: &mut Option<SyncError>) {
        match done {
            Ok(r) => self.add(&r),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
}

/// A CRM record already read (by a batch read of a queue batch, or by an earlier stage): what
/// the CRM holds under `id`, `record: None` when nothing live is there. Handed on to the stage
/// that needs it instead of being read again.
///
/// `link_version` is the version of the record's link read *before* the record (`None`: it had
/// none). The record is trusted for a decision only while its link is unchanged: a worker that
/// synced the pair since may have written a newer value to the CRM, and a decision from the
/// older read would take the CRM's old value for a change and revert the app's new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub id: String,
    pub record: Option<CrmRecord>,
    pub link_version: Option<u64>,
}

impl Known {
    /// Whether the record still shows what the CRM held after the link's last write: the link
    /// now stored (`None`: none, or an intent) is the one seen before the record was read.
    fn still_current(&self, link: Option<&ContactLink>) -> bool {
        match link.filter(|l| !l.is_placeholder()) {
            Some(l) => l.external_id == self.id && Some(l.version) == self.link_version,
            None => link.is_none() && self.link_version.is_none(),
        }
    }
}

/// Records read by [`SyncService::read_batch`], by tenant, CRM and record id.
pub type BatchRead = HashMap<(TenantId, Provider, String), Known>;

/// The sync logic over the ports.
#[derive(Clone)]
pub struct SyncService {
    pub contacts: Arc<dyn ContactStore>,
    pub links: Arc<dyn LinkStore>,
    pub state: Arc<dyn SyncState>,
    pub tenants: Arc<Tenants>,
    reconcile_budget: std::time::Duration,
    create_grace: chrono::Duration,
    check_grace: chrono::Duration,
    clock: Clock,
    new_id: IdSource,
    /// How long a CRM's webhook may take before a poll counts its change as missed.
    webhook_grace: chrono::Duration,
    /// When this process last marked each tenant's CRM webhook as seen.
    webhook_marks: Arc<std::sync::Mutex<HashMap<(TenantId, Provider), std::time::Instant>>>,
    /// Where sync outcomes are published (the log, unless configured).
    outcomes: Arc<dyn crate::ports::OutcomeSink>,
}

/// Where the ids of contacts imported from a CRM come from: random UUIDs, or a simulation's
/// sequence.
pub type IdSource = Arc<dyn Fn() -> String + Send + Sync>;

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
            reconcile_budget: RECONCILE_BUDGET,
            create_grace: chrono::Duration::seconds(CREATE_GRACE_SECS),
            check_grace: chrono::Duration::seconds(CHECK_GRACE_SECS),
            clock: Arc::new(Utc::now),
            new_id: Arc::new(|| uuid::Uuid::new_v4().to_string()),
            webhook_grace: chrono::Duration::seconds(WEBHOOK_GRACE_SECS as i64),
            webhook_marks: Default::default(),
            outcomes: Arc::new(crate::outcomes::LogSink),
        }
    }

    /// Publishes sync outcomes to `sink` (EventBridge, a webhook URL) instead of the log.
    pub fn with_outcomes(mut self, sink: Arc<dyn crate::ports::OutcomeSink>) -> Self {
        self.outcomes = sink;
        self
    }

    /// Publishes outcomes; a failure is logged (the outcomes are lost), never the caller's.
    pub async fn publish(&self, outcomes: Vec<crate::domain::SyncOutcome>) {
        if outcomes.is_empty() {
            return;
        }
        if let Err(e) = self.outcomes.publish(&outcomes).await {
            let tenant = outcomes[0].tenant();
            warn!(%tenant, error = %e, "could not publish sync outcomes");
        }
    }

    /// How long a CRM's webhook may take before a poll that finds its change counts it as
    /// missed (default 5 minutes).
    pub fn with_webhook_grace(mut self, grace: std::time::Duration) -> Self {
        self.webhook_grace = chrono::Duration::from_std(grace)
            .unwrap_or(chrono::Duration::seconds(WEBHOOK_GRACE_SECS as i64));
        self
    }

    /// Takes the ids of imported contacts from `ids` (a simulation's reproducible sequence).
    pub fn with_id_source(mut self, ids: IdSource) -> Self {
        self.new_id = ids;
        self
    }

    /// Reads the time from `clock` instead of the system's (a simulation's virtual time, so a
    /// create's grace and a deferral run out by its schedule).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time by the service's clock.
    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// A new contact id.
    fn new_contact_id(&self) -> String {
        (self.new_id)()
    }

    /// How long one Sync Now job works before it queues its continuation (default 10 s).
    pub fn with_reconcile_budget(mut self, budget: std::time::Duration) -> Self {
        self.reconcile_budget = budget;
        self
    }

    /// How long a create's intent holds off other workers before it counts as abandoned (its
    /// worker cut off) and is taken over (default 30 s): longer than any create call, and than
    /// the CRMs' search lag, so the taker finds a record that was created.
    pub fn with_create_grace(mut self, grace: std::time::Duration) -> Self {
        self.create_grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        self
    }

    /// How long after a write its check waits for the write's echo (default
    /// [`CHECK_GRACE_SECS`]): longer than the CRM's webhooks take to arrive.
    pub fn with_check_grace(mut self, grace: std::time::Duration) -> Self {
        self.check_grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        self
    }

    /// The tenant, loaded when it is not in memory yet (or its copy has aged).
    async fn tenant(&self, id: &TenantId) -> Result<TenantConfig, SyncError> {
        self.tenants
            .resolve(id)
            .await?
            .ok_or_else(|| SyncError::UnknownTenant(id.to_string()))
    }

    /// The tenant, with its field rules loaded: where a sync plans.
    async fn tenant_planning(&self, id: &TenantId) -> Result<TenantConfig, SyncError> {
        let mut cfg = self.tenant(id).await?;
        cfg.field_rules = self.state.field_rules(id).await?;
        Ok(cfg)
    }

    /// The per-call CRM context: the tenant and the stored keys of the CRM's custom fields.
    pub async fn crm_context(
        &self,
        tenant: &TenantId,
        client: &dyn CrmClient,
    ) -> Result<CrmContext, SyncError> {
        let mut ctx = CrmContext::new(tenant.clone());
        for (field, key) in self
            .field_keys(tenant, client.provider(), client.custom_fields())
            .await?
        {
            ctx = ctx.with_field(field, key);
        }
        Ok(ctx)
    }

    /// The stored keys of these custom fields of ours in a CRM (those that have one).
    pub async fn field_keys(
        &self,
        tenant: &TenantId,
        provider: Provider,
        fields: &[CustomField],
    ) -> Result<Vec<(CustomField, String)>, StoreError> {
        let mut keys = Vec::new();
        for &field in fields {
            if let Some(key) = self.state.field_key(tenant, provider, field).await? {
                keys.push((field, key));
            }
        }
        Ok(keys)
    }

    /// Fails with the CRM's quota error while its daily quota is spent for the tenant (the job
    /// is deferred, not retried); clears a pause that has run out.
    async fn ensure_not_paused(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<(), SyncError> {
        let stats = self.state.stats(tenant, provider).await?;
        match stats.paused_until {
            Some(until) if until > self.now() => {
                Err(CrmError::QuotaExhausted { provider, until }.into())
            }
            Some(_) => {
                self.state.set_paused_until(tenant, provider, None).await?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Reads the CRM records behind a batch of jobs with the CRMs' batch endpoints (HubSpot:
    /// batch read, 100 per call), so handling the jobs afterwards needs no single reads. A CRM
    /// with fewer than two records in the batch, paused or failing, is left to single reads.
    pub async fn read_batch(&self, jobs: &[&Job]) -> BatchRead {
        // In a fixed order (a simulation replays its calls exactly).
        let mut groups: BTreeMap<(TenantId, Provider), Vec<String>> = BTreeMap::new();
        for job in jobs {
            if let Job::Change(e) = job
                && let (Some(p), ChangeKind::Upsert | ChangeKind::Delete) =
                    (e.origin.provider(), &e.kind)
            {
                groups
                    .entry((e.tenant.clone(), p))
                    .or_default()
                    .push(e.record_id.clone());
            }
        }
        let mut read = BatchRead::new();
        for ((tenant, provider), mut ids) in groups {
            ids.sort();
            ids.dedup();
            if ids.len() < 2
                || self.tenant(&tenant).await.is_err()
                || self.ensure_not_paused(&tenant, provider).await.is_err()
            {
                continue;
            }
            let Some(client) = self.tenants.client(&tenant, provider) else {
                continue;
            };
            let Ok(ctx) = self.crm_context(&tenant, client.as_ref()).await else {
                continue;
            };
            // The links first: a record is trusted later only if its link has not moved since.
            let mut versions = HashMap::new();
            for id in &ids {
                match self.links.get_link(&tenant, provider, id).await {
                    Ok(link) => {
                        versions.insert(id.clone(), link.map(|l| l.version));
                    }
                    Err(e) => warn!(%tenant, %provider, error = %e, "link read failed"),
                }
            }
            match client.get_many(&ctx, &ids).await {
                Ok(mut found) => {
                    for id in ids {
                        let Some(&link_version) = versions.get(&id) else {
                            continue;
                        };
                        let known = Known {
                            record: found.remove(&id),
                            id: id.clone(),
                            link_version,
                        };
                        read.insert((tenant.clone(), provider, id), known);
                    }
                }
                Err(e) => {
                    warn!(%tenant, %provider, error = %e, "batch read failed; records are read one by one")
                }
            }
        }
        read
    }

    /// Handles one change event. Idempotent: duplicated, late or reordered events are harmless
    /// because the current state is read from its source.
    pub async fn handle(&self, event: &ChangeEvent) -> Result<SyncReport, SyncError> {
        self.handle_known(event, None).await
    }

    /// [`handle`](Self::handle), with the event's CRM record when a batch read already has it.
    #[tracing::instrument(skip(self, event, known), fields(tenant = %event.tenant, origin = ?event.origin, record = %event.record_id))]
    pub async fn handle_known(
        &self,
        event: &ChangeEvent,
        known: Option<Known>,
    ) -> Result<SyncReport, SyncError> {
        let mut cfg = self.tenant(&event.tenant).await?;
        if event.kind == ChangeKind::Echo {
            return self.confirm_echo(event).await;
        }
        if event.kind == ChangeKind::Erase {
            return match event.origin.provider() {
                None => self.erase(&cfg.id, &event.record_id).await,
                Some(p) => self.erase_record(&cfg.id, p, &event.record_id).await,
            };
        }
        let (contact_id, first, record, imported) = match event.origin.provider() {
            None => (event.record_id.clone(), None, None, None),
            Some(provider) => {
                // An import plans with the rules (the pairs' syncs load them for themselves).
                cfg.field_rules = self.state.field_rules(&cfg.id).await?;
                let Some(client) = self.tenants.client(&cfg.id, provider) else {
                    warn!(%provider, "event for a provider this tenant does not use");
                    return Ok(SyncReport::default());
                };
                let Some(found) = self.inbound(&cfg, client.as_ref(), event, known).await? else {
                    return Ok(SyncReport::default());
                };
                (
                    found.contact_id,
                    Some(provider),
                    found.record,
                    found.imported,
                )
            }
        };
        let mut report = self
            .sync_contact(
                &cfg.id,
                &contact_id,
                first,
                record,
                &event.reported,
                event.trigger(),
                imported,
                Some(event.occurred_at),
            )
            .await?;
        report.contact_id = Some(contact_id);
        Ok(report)
    }
}

#[cfg(test)]
mod tests;

//! Ports: one trait per capability. Adapters live in `adapters` (embedded, DynamoDB, SQS) and
//! `crm` (HubSpot, Pipedrive).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    ChangeEvent, ConflictRecord, Contact, ContactFields, ContactLink, CrmRecord, CustomField,
    Field, FieldPatch, Job, Provider, Reported, TenantId,
};
use crate::error::{CrmError, QueueError, StoreError};

/// A page of results with the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The app's contacts.
#[async_trait]
pub trait ContactStore: Send + Sync {
    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Contact>, StoreError>;
    /// Live (not deleted) contact with this (normalised) email.
    async fn find_by_email(
        &self,
        tenant: &TenantId,
        email: &str,
    ) -> Result<Option<Contact>, StoreError>;
    /// Live contacts ordered by id, starting after `after`.
    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Contact>, StoreError>;
    /// Inserts a new contact (version 1). `Duplicate` when the id or a live email exists.
    async fn insert(&self, contact: &Contact) -> Result<Contact, StoreError>;
    /// Replaces the contact if its stored version is still `contact.version`; returns it with the
    /// next version. `Conflict` when another writer got there first.
    async fn update(&self, contact: &Contact) -> Result<Contact, StoreError>;
    /// Removes the contact for good, with everything that finds it by its email (an erasure);
    /// nothing when it is gone already.
    async fn erase(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError>;
}

/// Where time is read: the system clock, or a simulation's virtual one.
pub type Clock = std::sync::Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// ContactLinks: keyed by tenant and `provider#externalId`. A contact has at most one link per
/// CRM (active, or kept as a tombstone): the first link of a (contact, CRM) claims that place,
/// and every decision reads it back consistently, by key.
#[async_trait]
pub trait LinkStore: Send + Sync {
    async fn get_link(
        &self,
        tenant: &TenantId,
        provider: Provider,
        external_id: &str,
    ) -> Result<Option<ContactLink>, StoreError>;
    /// The contact's link with one CRM, active or a tombstone, read consistently (by the
    /// contact's claim, never from an index that may lag).
    async fn link_for_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
    ) -> Result<Option<ContactLink>, StoreError>;
    /// All links of one app contact (the by-contact index: views, which may lag a write).
    async fn links_for_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<ContactLink>, StoreError>;
    /// All links of a tenant (status pages, reconcile).
    async fn links_for_tenant(&self, tenant: &TenantId) -> Result<Vec<ContactLink>, StoreError>;
    /// Writes a link if the stored version is `link.version`; returns it with the next version.
    /// A new link (version 0) must be the first of its contact with its CRM: `Conflict` when the
    /// record is linked already or the contact has another link with that CRM.
    async fn put_link(&self, link: &ContactLink) -> Result<ContactLink, StoreError>;
    /// Moves a link to another record of its CRM (a merge's survivor; a create's intent to the
    /// record created), keeping the contact's claim, if the stored version is `link.version` and
    /// no link holds `external_id`; returns the moved link.
    async fn rekey_link(
        &self,
        link: &ContactLink,
        external_id: &str,
    ) -> Result<ContactLink, StoreError>;
    /// Removes a link and frees its contact's claim, if the stored version is `link.version`
    /// (an intent whose create certainly failed).
    async fn delete_link(&self, link: &ContactLink) -> Result<(), StoreError>;
}
/// Per tenant and provider counters and health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderStats {
    pub provider: Option<Provider>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub synced: u64,
    pub errors: u64,
    pub conflicts: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Set while the provider's quota is spent: no calls until then.
    pub paused_until: Option<DateTime<Utc>>,
}

impl ProviderStats {
    /// Counts one sync outcome (every store applies the same rule).
    pub fn record(&mut self, outcome: &Result<(), String>, conflicts: u64, at: DateTime<Utc>) {
        self.conflicts += conflicts;
        match outcome {
            Ok(()) => {
                self.synced += 1;
                self.last_sync_at = Some(at);
            }
            Err(message) => {
                self.errors += 1;
                self.last_error = Some(message.clone());
                self.last_error_at = Some(at);
            }
        }
    }
}

/// Progress of a Sync Now run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncNowProgress {
    pub running: bool,
    pub phase: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Contacts linked by batch backfill.
    pub backfilled: usize,
    /// Rounds this Sync Now took so far (it continues itself when its time budget runs out).
    #[serde(default)]
    pub rounds: u32,
    /// Sync jobs queued (changed CRM records, failed contacts).
    pub enqueued: usize,
    pub errors: Vec<String>,
    /// CRMs whose backfill is through and which this Sync Now polled already (a CRM done
    /// early is polled while the others still backfill).
    #[serde(default)]
    pub polled: Vec<Provider>,
    /// Contacts a CRM's spent daily budget holds back; the backfill goes on by itself when
    /// the budget resets (the schedule resumes it).
    #[serde(default)]
    pub waiting: Vec<BudgetWait>,
}

/// A first sync larger than a day's budget: what waits for which CRM, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetWait {
    pub provider: Provider,
    /// Contacts not in the CRM yet.
    pub contacts: usize,
    /// When the CRM's budget resets and the backfill goes on.
    pub resume_at: DateTime<Utc>,
    /// What one contact cost so far (tokens), when the client counts them.
    pub cost_per_contact: Option<f64>,
    /// When the last of them should be in: a day's budget a day from `resume_at`, at the
    /// cost per contact measured so far (unknown without a daily budget or a measured cost).
    pub done_by: Option<DateTime<Utc>>,
}

/// A sync problem of a contact that has no link yet (e.g. the create failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactIssue {
    pub contact_id: String,
    pub provider: Provider,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// Where each poll and pass left off, by name (`poll#hubspot`, ...).
#[async_trait]
pub trait Cursors: Send + Sync {
    async fn cursor(&self, tenant: &TenantId, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_cursor(
        &self,
        tenant: &TenantId,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError>;
}

/// The progress of a tenant's Sync Now.
#[async_trait]
pub trait SyncNowLog: Send + Sync {
    /// The last (or running) Sync Now of the tenant.
    async fn sync_now_progress(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<SyncNowProgress>, StoreError>;
    async fn save_sync_now_progress(
        &self,
        tenant: &TenantId,
        progress: &SyncNowProgress,
    ) -> Result<(), StoreError>;
}

/// Per tenant and CRM: sync outcomes, errors, conflicts and a spent quota's pause.
#[async_trait]
pub trait CrmHealth: Send + Sync {
    /// Records the outcome of one sync with a provider (success or error text).
    async fn record_outcome(
        &self,
        tenant: &TenantId,
        provider: Provider,
        outcome: Result<(), String>,
        conflicts: u64,
    ) -> Result<(), StoreError>;
    async fn set_paused_until(
        &self,
        tenant: &TenantId,
        provider: Provider,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;
    async fn stats(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<ProviderStats, StoreError>;
}

/// The conflict log.
#[async_trait]
pub trait ConflictLog: Send + Sync {
    async fn log_conflict(&self, record: &ConflictRecord) -> Result<(), StoreError>;
    /// Newest first.
    async fn conflicts(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError>;
}

/// Webhook deliveries seen, so a redelivery is dropped.
#[async_trait]
pub trait Dedupe: Send + Sync {
    /// Marks an event key as seen; false when it was already seen within `ttl`.
    async fn first_sighting(
        &self,
        tenant: &TenantId,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Marks several event keys as seen at once (a webhook delivery's events); per key, true
    /// when it was not seen within `ttl`. A store that can do them in one transaction does.
    async fn first_sightings(
        &self,
        tenant: &TenantId,
        keys: &[String],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError>;
    /// Forgets a sighting (the event could not be enqueued: its redelivery must get through).
    async fn forget_sighting(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError>;
}

/// Where our custom fields live in each CRM of a tenant.
#[async_trait]
pub trait FieldKeys: Send + Sync {
    /// The key of one of our fields in a CRM (HubSpot property name, Pipedrive 40-char hash).
    async fn field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
    ) -> Result<Option<String>, StoreError>;
    async fn set_field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
        key: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Stores `key` unless a key is stored already, and returns the stored one: of two workers
    /// that each created the field, both use the first one stored.
    async fn claim_field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: CustomField,
        key: &str,
    ) -> Result<String, StoreError>;
}

/// Sync problems of contacts that have no link yet.
#[async_trait]
pub trait ContactIssues: Send + Sync {
    async fn set_issue(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        message: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn issues(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<ContactIssue>, StoreError>;
}

/// One rate limit of a CRM: at most `max` requests in any rolling `window`, counted per
/// tenant × provider × lane (e.g. HubSpot's ten-secondly burst, its search's per-second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimit {
    pub lane: &'static str,
    pub max: u32,
    pub window: Duration,
}

/// What a shared limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Sent: its place in each lane and its cost are taken.
    Go,
    /// A lane is full (or backing off): ask again after this long.
    Wait(Duration),
    /// Our daily budget cannot pay for it until then.
    Spent(DateTime<Utc>),
}

/// The limits every worker of a tenant shares, kept where all of them see them (the store):
/// the burst windows, their back-offs after a 429, and our own daily budgets. Updates are
/// conditional, so no two workers take the same place.
#[async_trait]
pub trait SharedLimits: Send + Sync {
    /// Takes a place in every lane and `cost` from today's `daily_budget` (UTC days), all or
    /// nothing.
    async fn admit(
        &self,
        tenant: &TenantId,
        provider: Provider,
        lanes: &[LaneLimit],
        cost: u64,
        daily_budget: Option<u64>,
    ) -> Result<Admission, StoreError>;
    /// Takes a place in every lane for a request sent now (with no daily budget to pay from),
    /// and up to `extra` more for sends within `lease` from now, fewer or none while a lane is
    /// at least half full: the caller spends those without asking again. Answers how many extra
    /// places it took.
    async fn admit_leased(
        &self,
        tenant: &TenantId,
        provider: Provider,
        lanes: &[LaneLimit],
        extra: u32,
        lease: Duration,
    ) -> Result<(Admission, u32), StoreError>;
    /// Holds every worker's requests in `lanes` back for `pause` (after a 429).
    async fn back_off(
        &self,
        tenant: &TenantId,
        provider: Provider,
        lanes: &[&'static str],
        pause: Duration,
    ) -> Result<(), StoreError>;
    /// Tokens spent today against our daily budget, by every worker.
    async fn spent_today(&self, tenant: &TenantId, provider: Provider) -> Result<u64, StoreError>;
}

/// Whether a CRM's webhooks reach us, per tenant: when one last came in, and what the last
/// poll found that no webhook had brought.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookHealth {
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub last_poll_at: Option<DateTime<Utc>>,
    /// Changes the last poll found that no webhook had delivered.
    pub missed_by_last_poll: u64,
    /// When a poll last found such a change.
    pub last_missed_at: Option<DateTime<Utc>>,
}

/// Where webhook deliveries and polls leave their marks (`webhooks#<provider>`).
#[async_trait]
pub trait WebhookWatch: Send + Sync {
    async fn note_webhook(
        &self,
        tenant: &TenantId,
        provider: Provider,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn note_poll(
        &self,
        tenant: &TenantId,
        provider: Provider,
        missed: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn webhook_health(
        &self,
        tenant: &TenantId,
        provider: Provider,
    ) -> Result<WebhookHealth, StoreError>;
}

/// Where sync outcomes are published (EventBridge, a webhook URL, the log). Best effort: a
/// failure is the caller's to log, never a sync's.
#[async_trait]
pub trait OutcomeSink: Send + Sync {
    async fn publish(
        &self,
        outcomes: &[crate::domain::SyncOutcome],
    ) -> Result<(), crate::error::PublishError>;
}

/// What the sync state holds of one person, removed on request (an erasure).
#[async_trait]
pub trait PersonalData: Send + Sync {
    /// Removes the contact's history, its conflicts and its issues, the kept email listings,
    /// and `email` wherever else the tenant's state mentions it (an error text, a Sync Now's
    /// errors).
    async fn erase_contact_state(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        email: Option<&str>,
    ) -> Result<(), StoreError>;
}

/// A tenant's field rules (`settings#fields`).
#[async_trait]
pub trait FieldRulesStore: Send + Sync {
    /// The stored rules (none stored: every field two-way under the tenant's policy).
    async fn field_rules(&self, tenant: &TenantId)
    -> Result<crate::domain::FieldRules, StoreError>;
    async fn set_field_rules(
        &self,
        tenant: &TenantId,
        rules: &crate::domain::FieldRules,
    ) -> Result<(), StoreError>;
}

/// Each contact's sync history: the last decisions that wrote something, met a conflict or
/// failed, kept for a bounded time and number.
#[async_trait]
pub trait SyncHistory: Send + Sync {
    async fn record_history(&self, entry: &crate::domain::HistoryEntry) -> Result<(), StoreError>;
    /// Newest first, at most `limit`.
    async fn history(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        limit: usize,
    ) -> Result<Vec<crate::domain::HistoryEntry>, StoreError>;
}

/// All of the sync's bookkeeping, for the service that needs every part of it. Each part is its
/// own narrow port; `adapters::state` lays them out once over a key-value store.
pub trait SyncState:
    Cursors
    + SyncNowLog
    + CrmHealth
    + ConflictLog
    + Dedupe
    + FieldKeys
    + ContactIssues
    + SyncHistory
    + FieldRulesStore
    + WebhookWatch
    + PersonalData
{
}

impl<T> SyncState for T where
    T: Cursors
        + SyncNowLog
        + CrmHealth
        + ConflictLog
        + Dedupe
        + FieldKeys
        + ContactIssues
        + SyncHistory
        + FieldRulesStore
        + WebhookWatch
        + PersonalData
{
}

/// A queued job and how often it was delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub job: Job,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// Opaque handle for ack/fail.
    pub receipt: String,
}

/// A count of queued jobs and whose jobs it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    pub jobs: usize,
    pub scope: DepthScope,
}

/// Whose jobs a [`QueueDepth`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DepthScope {
    /// Only the tenant's (the embedded queue).
    Tenant,
    /// Every tenant's: SQS counts a whole queue (`ApproximateNumberOfMessages*`), not by tenant.
    Deployment,
}

impl QueueDepth {
    pub fn tenant(jobs: usize) -> Self {
        Self {
            jobs,
            scope: DepthScope::Tenant,
        }
    }
}

/// What became of a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    WillRetry,
    DeadLettered,
}

/// The sync queue and its dead-letter queue.
#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError>;
    /// Enqueues change events, each as a [`Job::Change`].
    async fn enqueue_changes(&self, events: &[ChangeEvent]) -> Result<(), QueueError> {
        let jobs: Vec<Job> = events.iter().cloned().map(Job::Change).collect();
        self.enqueue(&jobs).await
    }
    /// Enqueues one job that becomes due after `delay` (deferral past a spent quota).
    async fn enqueue_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError>;
    /// Up to `max` jobs that are due; each delivery counts as an attempt.
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError>;
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError>;
    /// A failed attempt: retried after `retry_after`, or dead-lettered after the last attempt.
    async fn fail(
        &self,
        delivery: &Delivery,
        error: &str,
        retry_after: Duration,
    ) -> Result<FailOutcome, QueueError>;
    /// Puts the job back until `until` without counting the attempt (quota spent, not a failure).
    async fn defer(&self, delivery: &Delivery, until: DateTime<Utc>) -> Result<(), QueueError>;
    /// The tenant's jobs waiting or in flight (or the deployment's, where the backend cannot
    /// count per tenant: the figure says which).
    async fn depth(&self, tenant: &TenantId) -> Result<QueueDepth, QueueError>;
    /// The tenant's dead letters (or the deployment's: the figure says which).
    async fn dlq_depth(&self, tenant: &TenantId) -> Result<QueueDepth, QueueError>;
    /// Moves a tenant's dead letters back to the sync queue; returns how many moved.
    async fn replay_dlq(&self, tenant: &TenantId) -> Result<usize, QueueError>;
}

/// Per-call context for a CRM client: the tenant and the keys of its custom fields in this CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmContext {
    pub tenant: TenantId,
    /// Where each custom field lives for this tenant; absent while not set up (pronouns) or not
    /// stored yet (a client may then find it itself, as Pipedrive's job title).
    pub fields: std::collections::BTreeMap<CustomField, String>,
}

impl CrmContext {
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            fields: Default::default(),
        }
    }

    /// The context with `field` stored at `key`.
    pub fn with_field(mut self, field: CustomField, key: impl Into<String>) -> Self {
        self.fields.insert(field, key.into());
        self
    }

    pub fn field(&self, field: CustomField) -> Option<&str> {
        self.fields.get(&field).map(String::as_str)
    }

    /// Which synced fields the CRM can store for this tenant: pronouns only once set up.
    pub fn support(&self) -> crate::domain::FieldSupport {
        crate::domain::FieldSupport {
            pronouns: self.field(CustomField::Pronouns).is_some(),
        }
    }
}

/// A record reported changed by a poll, with its modification time when the CRM gives it, and
/// its values when the listing carries them (both CRMs' do), so that a poll can tell a record
/// it already agrees with from a changed one without reading it again.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedRecord {
    pub id: String,
    pub updated_at: Option<DateTime<Utc>>,
    pub fields: Option<ContactFields>,
}

/// Records changed since a cursor, and the next cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedRecords {
    pub records: Vec<ChangedRecord>,
    pub next_cursor: Option<String>,
    /// True when more pages are ready now.
    pub has_more: bool,
}

/// A listing of a CRM's live records (a preview's view of the CRM, reads only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordListing {
    /// Each record, with every email it is found by (lowercased: Pipedrive's persons have
    /// several).
    pub records: Vec<(CrmRecord, Vec<String>)>,
    /// Whether the listing reached the end (else it stopped at its limit).
    pub complete: bool,
    /// Requests it took, and tokens where the CRM prices calls in tokens.
    pub requests: u64,
    pub tokens: Option<u64>,
}

/// One CRM, seen through the universal contact mapping.
#[async_trait]
pub trait CrmClient: Send + Sync {
    fn provider(&self) -> Provider;

    /// Reads a record; `Ok(None)` when it does not exist, `archived: true` when archived.
    async fn get(&self, ctx: &CrmContext, id: &str) -> Result<Option<CrmRecord>, CrmError>;
    async fn find_by_email(
        &self,
        ctx: &CrmContext,
        email: &str,
    ) -> Result<Option<CrmRecord>, CrmError>;

    /// Reads a record with the recent history of some of its fields: the record as
    /// [`get`](Self::get) reads it, and each value `fields` were set to at or after `since`
    /// (by anyone, by the CRM's clock), as [`Reported`] values. Shows what our writes replaced
    /// when the events that would have said so may be lost (see `sync::check`).
    async fn get_with_history(
        &self,
        ctx: &CrmContext,
        id: &str,
        fields: &[Field],
        since: DateTime<Utc>,
    ) -> Result<(Option<CrmRecord>, Vec<Reported>), CrmError>;

    /// Reads many records, in as few calls as the API allows; ids that do not exist (or are
    /// archived) are absent from the result.
    async fn get_many(
        &self,
        ctx: &CrmContext,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, CrmRecord>, CrmError> {
        let mut out = std::collections::HashMap::new();
        for id in ids {
            if let Some(r) = self.get(ctx, id).await?.filter(|r| !r.archived) {
                out.insert(id.clone(), r);
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &CrmContext, fields: &ContactFields)
    -> Result<CrmRecord, CrmError>;
    async fn update(
        &self,
        ctx: &CrmContext,
        id: &str,
        patch: &FieldPatch,
    ) -> Result<CrmRecord, CrmError>;
    async fn archive(&self, ctx: &CrmContext, id: &str) -> Result<(), CrmError>;
    /// Deletes a record for good, as the CRM's privacy (GDPR) deletion does; a record that is
    /// gone already is no error. By default, an archive (where the CRM has no such deletion).
    async fn erase(&self, ctx: &CrmContext, id: &str) -> Result<(), CrmError> {
        self.archive(ctx, id).await
    }

    /// The live records with these emails, keyed by the email lowercased, in as few calls as
    /// the API allows (a consistent lookup where the API has one: HubSpot's batch read by
    /// email; Pipedrive's listing when it is cheaper than searching).
    async fn find_many_by_email(
        &self,
        ctx: &CrmContext,
        emails: &[String],
    ) -> Result<std::collections::HashMap<String, CrmRecord>, CrmError> {
        let mut out = std::collections::HashMap::new();
        for email in emails {
            if let Some(r) = self.find_by_email(ctx, email).await? {
                out.insert(email.trim().to_lowercase(), r);
            }
        }
        Ok(out)
    }

    /// Tokens this client allows itself per day (`None`: no daily budget of its own).
    fn daily_budget(&self) -> Option<u64> {
        None
    }

    /// Tokens this client spent since it started, where the CRM prices calls in tokens.
    fn tokens_spent(&self) -> Option<u64> {
        None
    }

    /// The live records whose email is one of `emails`, keyed by the email lowercased, from
    /// one listing of all the CRM's records (a listing does not lag like a search index), or
    /// `None` when listing them all would cost more than looking these emails up; the backfill
    /// then looks them up chunk by chunk ([`CrmClient::find_many_by_email`]).
    async fn email_index(
        &self,
        _ctx: &CrmContext,
        _emails: &[String],
    ) -> Result<Option<std::collections::HashMap<String, CrmRecord>>, CrmError> {
        Ok(None)
    }

    /// Lists the live records page by page, the most records a page allows, until the end or
    /// once `max` records are in: what a preview of the first sync matches against.
    async fn list_records(&self, ctx: &CrmContext, max: usize) -> Result<RecordListing, CrmError>;

    /// Creates many records, in as few calls as the API allows. One result per input, in order.
    async fn create_many(
        &self,
        ctx: &CrmContext,
        records: &[ContactFields],
    ) -> Result<Vec<Result<CrmRecord, CrmError>>, CrmError> {
        let mut out = Vec::with_capacity(records.len());
        for fields in records {
            out.push(self.create(ctx, fields).await);
        }
        Ok(out)
    }

    /// Ids of records changed since the cursor (reconcile and polling).
    async fn changed_since(
        &self,
        ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError>;

    /// What an update of `patch` over a record read as `current` sets in the CRM: the patch,
    /// plus what the API makes us send with it (Pipedrive's other half of a name, sent back as
    /// read). A user's edit of those can be overwritten too, so it is watched for as well.
    fn fields_written(&self, patch: &FieldPatch, _current: &ContactFields) -> FieldPatch {
        patch.clone()
    }

    /// Whether the CRM's webhook of our own write says what the fields held just before it
    /// (Pipedrive's `previous`): then that echo checks the write for free. Otherwise (HubSpot)
    /// a write is checked at once, by reading the record with its history.
    fn echo_shows_what_a_write_replaced(&self) -> bool {
        false
    }

    /// Whether [`get_many`](Self::get_many) reads many records in one call (HubSpot's batch
    /// read, Pipedrive's listing by ids): then Sync Now can afford to read every linked
    /// record, to find deleted ones.
    fn reads_in_batches(&self) -> bool {
        false
    }

    /// The custom fields this CRM keeps our data in (their keys go into [`CrmContext`]).
    fn custom_fields(&self) -> &'static [CustomField];
    /// Makes sure a custom field exists (finding it, else creating it); returns its key.
    async fn ensure_field(&self, ctx: &CrmContext, field: CustomField) -> Result<String, CrmError>;
    /// Looks a custom field up without creating it.
    async fn find_field(
        &self,
        ctx: &CrmContext,
        field: CustomField,
    ) -> Result<Option<String>, CrmError>;
}

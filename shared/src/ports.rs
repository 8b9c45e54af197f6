//! Ports: one trait per capability. Adapters live in `adapters` (embedded, DynamoDB, SQS) and
//! `crm` (HubSpot, Pipedrive).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    ChangeEvent, ConflictRecord, Contact, ContactFields, ContactLink, CrmRecord, FieldPatch,
    Provider, TenantId,
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
}

/// ContactLinks: keyed by tenant and `provider#externalId`.
#[async_trait]
pub trait LinkStore: Send + Sync {
    async fn get_link(
        &self,
        tenant: &TenantId,
        provider: Provider,
        external_id: &str,
    ) -> Result<Option<ContactLink>, StoreError>;
    /// All links of one app contact (the by-contact index).
    async fn links_for_contact(
        &self,
        tenant: &TenantId,
        contact_id: &str,
    ) -> Result<Vec<ContactLink>, StoreError>;
    /// All links of a tenant (status pages, reconcile).
    async fn links_for_tenant(&self, tenant: &TenantId) -> Result<Vec<ContactLink>, StoreError>;
    /// Writes a link if the stored version is `link.version` (0 = must not exist yet); returns it
    /// with the next version.
    async fn put_link(&self, link: &ContactLink) -> Result<ContactLink, StoreError>;
    /// Removes a link (merge re-keying) if its stored version is `version`.
    async fn delete_link(
        &self,
        tenant: &TenantId,
        provider: Provider,
        external_id: &str,
        version: u64,
    ) -> Result<(), StoreError>;
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

/// A sync problem of a contact that has no link yet (e.g. the create failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactIssue {
    pub contact_id: String,
    pub provider: Provider,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// Sync bookkeeping: cursors, stats, the conflict log, webhook dedupe, CRM field keys.
#[async_trait]
pub trait SyncState: Send + Sync {
    async fn cursor(&self, tenant: &TenantId, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_cursor(
        &self,
        tenant: &TenantId,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError>;

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

    async fn log_conflict(&self, record: &ConflictRecord) -> Result<(), StoreError>;
    /// Newest first.
    async fn conflicts(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>, StoreError>;

    /// Marks an event key as seen; false when it was already seen within `ttl`.
    async fn first_sighting(
        &self,
        tenant: &TenantId,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Forgets a sighting (the event could not be enqueued: its redelivery must get through).
    async fn forget_sighting(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError>;

    /// The key of one of our fields in a CRM (HubSpot property name, Pipedrive 40-char hash).
    async fn field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: &str,
    ) -> Result<Option<String>, StoreError>;
    async fn set_field_key(
        &self,
        tenant: &TenantId,
        provider: Provider,
        field: &str,
        key: Option<&str>,
    ) -> Result<(), StoreError>;

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

/// A queued sync job: the change event and how often it was delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub event: ChangeEvent,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError>;
    /// Enqueues one event that becomes due after `delay` (deferral past a spent quota).
    async fn enqueue_delayed(&self, event: &ChangeEvent, delay: Duration)
    -> Result<(), QueueError>;
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

/// Per-call context for a CRM client: the tenant and its CRM-side field keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmContext {
    pub tenant: TenantId,
    /// Where pronouns live in this CRM for this tenant; `None` while not set up.
    pub pronouns_key: Option<String>,
    /// Where job titles live when the CRM has no standard field for them in every account
    /// (Pipedrive: `job_title`, or the 40-character key of a custom field); `None` = not
    /// stored yet (the client finds it itself). HubSpot ignores it.
    pub job_title_key: Option<String>,
}

/// A record reported changed by a poll, with its modification time when the CRM gives it, and
/// its values when the listing carries them (Pipedrive's does), so that a poll can tell a record
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

    /// Creates-or-updates many records keyed by email, in as few calls as the API allows.
    /// One result per input, in order.
    async fn upsert_many(
        &self,
        ctx: &CrmContext,
        records: &[ContactFields],
    ) -> Result<Vec<Result<CrmRecord, CrmError>>, CrmError> {
        let mut out = Vec::with_capacity(records.len());
        for fields in records {
            let result = match fields.email.as_deref() {
                Some(email) => match self.find_by_email(ctx, email).await? {
                    Some(existing) => self.update(ctx, &existing.id, &patch_from(fields)).await,
                    None => self.create(ctx, fields).await,
                },
                None => self.create(ctx, fields).await,
            };
            out.push(result);
        }
        Ok(out)
    }

    /// Ids of records changed since the cursor (reconcile and polling).
    async fn changed_since(
        &self,
        ctx: &CrmContext,
        cursor: Option<&str>,
    ) -> Result<ChangedRecords, CrmError>;

    /// Makes sure the pronouns field exists; returns its key.
    async fn ensure_pronouns_field(&self, ctx: &CrmContext) -> Result<String, CrmError>;
    /// Looks the pronouns field up without creating it.
    async fn find_pronouns_field(&self, ctx: &CrmContext) -> Result<Option<String>, CrmError>;
}

/// A patch that sets every field of `fields` (absent ones are left alone).
pub fn patch_from(fields: &ContactFields) -> FieldPatch {
    let mut patch = FieldPatch::default();
    for f in crate::domain::Field::ALL {
        if let Some(v) = fields.get(f) {
            patch.insert(f, Some(v.to_string()));
        }
    }
    patch
}

/// The registry of tenants one deployment serves (written by the onboarding command).
#[async_trait]
pub trait TenantRegistry: Send + Sync {
    async fn put_tenant(&self, record: &crate::settings::TenantRecord) -> Result<(), StoreError>;
    async fn registered_tenants(&self) -> Result<Vec<crate::settings::TenantRecord>, StoreError>;
}

//! Domain types: tenants, providers, the universal contact, links and change events.

mod event;
pub mod history;
mod link;
mod outcome;
mod rules;
mod writes;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A customer of contact-sync. Every key, log line and metric carries it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct TenantId(String);

impl TenantId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CRM we sync with.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    HubSpot,
    Pipedrive,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::HubSpot, Provider::Pipedrive];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::HubSpot => "hubspot",
            Provider::Pipedrive => "pipedrive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hubspot" => Some(Provider::HubSpot),
            "pipedrive" => Some(Provider::Pipedrive),
            _ => None,
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Provider::HubSpot => "HubSpot",
            Provider::Pipedrive => "Pipedrive",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The synced fields of a contact.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Email,
    FirstName,
    LastName,
    Phone,
    JobTitle,
    Pronouns,
}

impl Field {
    pub const ALL: [Field; 6] = [
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::Phone,
        Field::JobTitle,
        Field::Pronouns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Phone => "phone",
            Field::JobTitle => "job_title",
            Field::Pronouns => "pronouns",
        }
    }
}

/// Values of the synced fields. `None` means "no value"; empty strings are normalised to `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContactFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pronouns: Option<String>,
}

impl ContactFields {
    pub fn get(&self, field: Field) -> Option<&str> {
        self.slot(field).as_deref()
    }

    fn slot(&self, field: Field) -> &Option<String> {
        match field {
            Field::Email => &self.email,
            Field::FirstName => &self.first_name,
            Field::LastName => &self.last_name,
            Field::Phone => &self.phone,
            Field::JobTitle => &self.job_title,
            Field::Pronouns => &self.pronouns,
        }
    }

    fn slot_mut(&mut self, field: Field) -> &mut Option<String> {
        match field {
            Field::Email => &mut self.email,
            Field::FirstName => &mut self.first_name,
            Field::LastName => &mut self.last_name,
            Field::Phone => &mut self.phone,
            Field::JobTitle => &mut self.job_title,
            Field::Pronouns => &mut self.pronouns,
        }
    }

    /// Sets a field, normalising the value the same way as [`ContactFields::normalized`].
    pub fn set(&mut self, field: Field, value: Option<String>) {
        *self.slot_mut(field) = normalize_value(field, value);
    }

    /// Trims every value, turns empty strings into `None` and lower-cases the email.
    pub fn normalized(mut self) -> Self {
        for field in Field::ALL {
            let value = self.slot_mut(field).take();
            self.set(field, value);
        }
        self
    }

    /// Applies a patch: every field present in the patch overwrites this one.
    pub fn apply(&mut self, patch: &FieldPatch) {
        for (field, value) in &patch.0 {
            self.set(*field, value.clone());
        }
    }

    /// A stable hash of the values, stored beside the base of a link.
    pub fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for field in Field::ALL {
            hasher.update(field.as_str().as_bytes());
            hasher.update([0u8]);
            match self.get(field) {
                Some(v) => {
                    hasher.update([1u8]);
                    hasher.update(v.as_bytes());
                }
                None => hasher.update([0u8]),
            }
            hasher.update([0xffu8]);
        }
        hex::encode(hasher.finalize())
    }
}

fn normalize_value(field: Field, value: Option<String>) -> Option<String> {
    let value = value?;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(if field == Field::Email {
        trimmed.to_lowercase()
    } else {
        trimmed.to_string()
    })
}

/// A set of field writes: the field and its new value (`None` clears it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldPatch(pub BTreeMap<Field, Option<String>>);

impl FieldPatch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn insert(&mut self, field: Field, value: Option<String>) {
        self.0.insert(field, value);
    }
    pub fn contains(&self, field: Field) -> bool {
        self.0.contains_key(&field)
    }
    /// The value the patch writes to `field` (`Some(None)`: clears it).
    pub fn get(&self, field: Field) -> Option<&Option<String>> {
        self.0.get(&field)
    }

    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.0.keys().copied()
    }
}

/// A field that a CRM may keep in a custom field of ours, whose key is stored per tenant and CRM
/// (a HubSpot property name, a Pipedrive 40-character field key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomField {
    /// Created on the tenant's request (the pronouns setup): it adds a field to their CRM.
    Pronouns,
    /// Where a CRM has no job title field in every account (Pipedrive): found or created when
    /// the tenant is provisioned.
    JobTitle,
}

impl CustomField {
    pub const ALL: [CustomField; 2] = [CustomField::Pronouns, CustomField::JobTitle];

    /// The contact field it stores.
    pub fn field(self) -> Field {
        match self {
            CustomField::Pronouns => Field::Pronouns,
            CustomField::JobTitle => Field::JobTitle,
        }
    }

    /// The name its key is stored under.
    pub fn as_str(self) -> &'static str {
        match self {
            CustomField::Pronouns => "pronouns",
            CustomField::JobTitle => "job_title",
        }
    }

    /// Whether provisioning sets it up without asking (pronouns wait for the tenant's setup).
    pub fn automatic(self) -> bool {
        self == CustomField::JobTitle
    }
}

/// Which fields a provider can store for a tenant (pronouns need a custom field to be set up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSupport {
    pub pronouns: bool,
}

impl FieldSupport {
    pub const ALL: FieldSupport = FieldSupport { pronouns: true };

    pub fn supports(self, field: Field) -> bool {
        field != Field::Pronouns || self.pronouns
    }
}

/// The app's contact: the universal record every CRM is synced with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub tenant: TenantId,
    pub id: String,
    #[serde(flatten)]
    pub fields: ContactFields,
    /// Optimistic-concurrency version; every stored write increments it.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub last_app_modified: DateTime<Utc>,
    #[serde(default)]
    pub deleted: bool,
    /// Per CRM, the last sync write of its pair to the contact (a user's edit keeps it): a
    /// write that landed is known, with what it wrote, even when its answer was lost or the
    /// link write after it failed (see [`AppWrite`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub synced: BTreeMap<Provider, AppWrite>,
}

/// A sync's write to an app contact: its stamp (the pair's link and the version its fence gave
/// it, which no other write of the pair has: see [`PendingWrites::app_stamp`]) and the values
/// it wrote, which both sides agreed on then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppWrite {
    pub stamp: String,
    pub written: FieldPatch,
    /// What earlier writes of the pair put in the app that it still held when this one was
    /// made (fields this one did not write): values a sync wrote, not a user's edits.
    #[serde(default, skip_serializing_if = "FieldPatch::is_empty")]
    pub kept: FieldPatch,
}

impl AppWrite {
    /// Whether this write, or an earlier one of the pair it kept, put `value` in `field`.
    pub fn put(&self, field: Field, value: Option<&str>) -> bool {
        [&self.written, &self.kept]
            .iter()
            .any(|p| p.get(field).is_some_and(|v| v.as_deref() == value))
    }

    /// The write `stamp` makes of `patch` to `contact`, keeping what the pair's previous write
    /// (`previous`) put there that the contact still holds and `patch` leaves alone.
    pub fn after(
        stamp: String,
        patch: &FieldPatch,
        previous: Option<&AppWrite>,
        contact: &ContactFields,
    ) -> Self {
        let mut kept = FieldPatch::default();
        if let Some(prev) = previous {
            for source in [&prev.kept, &prev.written] {
                for (field, value) in &source.0 {
                    if !patch.contains(*field) && contact.get(*field) == value.as_deref() {
                        kept.insert(*field, value.clone());
                    }
                }
            }
        }
        Self {
            stamp,
            written: patch.clone(),
            kept,
        }
    }
}

impl Contact {
    /// A new, not yet stored contact (the store sets version 1 on insert).
    pub fn new(
        tenant: TenantId,
        id: impl Into<String>,
        fields: ContactFields,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            tenant,
            id: id.into(),
            fields,
            version: 0,
            created_at: now,
            last_app_modified: now,
            deleted: false,
            synced: BTreeMap::new(),
        }
    }
}

pub use link::{ContactLink, LinkStatus, PendingWrites};
pub use writes::{CrmWrite, FieldWrite, RecentWrites};

pub use event::{ChangeEvent, ChangeKind, Job, Origin, Replacement, Reported};
pub use history::{CrmDecision, DecisionAction, FieldChange, HistoryEntry, Trigger};
pub use outcome::{EVENT_SOURCE, SyncOutcome, json_schema as json_schema_of_outcomes};
pub use rules::{Direction, FieldRule, FieldRules, Winner};

/// One CRM account of a tenant, as webhooks show it: the account they name, how the CRM
/// authenticates them, and who our own writes come from. Secrets are never logged (the Debug
/// output leaves them out).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmAccount {
    pub provider: Provider,
    /// HubSpot portal id, Pipedrive company id.
    pub account_id: String,
    /// The writer behind our own changes in the CRM's webhooks: HubSpot app id, Pipedrive API
    /// user id.
    #[serde(default)]
    pub our_writer: Option<String>,
    /// How the CRM authenticates its webhooks to us.
    #[serde(default)]
    pub webhook_auth: Option<WebhookAuth>,
}

impl fmt::Debug for CrmAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmAccount")
            .field("provider", &self.provider)
            .field("account_id", &self.account_id)
            .field("our_writer", &self.our_writer)
            .finish_non_exhaustive()
    }
}

/// How a CRM authenticates its webhooks.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebhookAuth {
    /// Signed with a shared secret (HubSpot: the app's client secret).
    Signature { secret: String },
    /// HTTP Basic credentials (Pipedrive).
    Basic { user: String, password: String },
}

/// A CRM record as read from a provider, already mapped to universal fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmRecord {
    pub id: String,
    pub fields: ContactFields,
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub archived: bool,
}

/// How a field changed on both sides is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The product default: the CRM's value wins.
    #[default]
    CrmWins,
    AppWins,
}

/// Which side won a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    App,
    Crm,
}

impl Side {
    pub fn other(self) -> Self {
        match self {
            Side::App => Side::Crm,
            Side::Crm => Side::App,
        }
    }
}

/// A field changed on both sides to different values, with the resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conflict {
    pub field: Field,
    pub base_value: Option<String>,
    pub app_value: Option<String>,
    pub crm_value: Option<String>,
    pub winner: Side,
    pub resolved_value: Option<String>,
    pub at: DateTime<Utc>,
}

/// A conflict as stored in the log, with its context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConflictRecord {
    pub tenant: TenantId,
    pub contact_id: String,
    pub provider: Provider,
    pub external_id: String,
    #[serde(flatten)]
    pub conflict: Conflict,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_trims_and_lowercases_email() {
        let f = ContactFields {
            email: Some("  Jane@Example.COM ".into()),
            first_name: Some("  ".into()),
            last_name: Some(" Doe ".into()),
            ..Default::default()
        }
        .normalized();
        assert_eq!(f.email.as_deref(), Some("jane@example.com"));
        assert_eq!(f.first_name, None);
        assert_eq!(f.last_name.as_deref(), Some("Doe"));
    }

    #[test]
    fn content_hash_distinguishes_fields_and_absence() {
        let a = ContactFields {
            first_name: Some("x".into()),
            ..Default::default()
        };
        let b = ContactFields {
            last_name: Some("x".into()),
            ..Default::default()
        };
        let c = ContactFields {
            first_name: Some(String::new()),
            ..Default::default()
        };
        assert_ne!(a.content_hash(), b.content_hash());
        assert_ne!(a.content_hash(), c.content_hash());
        assert_eq!(a.content_hash(), a.clone().content_hash());
    }

    #[test]
    fn jobs_round_trip_and_untyped_messages_still_parse() {
        let change = ChangeEvent::new(
            TenantId::new("t"),
            Origin::Crm(Provider::HubSpot),
            "5",
            ChangeKind::Upsert,
        );
        let job = Job::Change(change.clone());
        assert_eq!(
            Job::parse(&serde_json::to_string(&job).unwrap()).unwrap(),
            job
        );
        let reconcile = Job::Reconcile {
            tenant: TenantId::new("t"),
            round: 3,
        };
        assert_eq!(
            Job::parse(&serde_json::to_string(&reconcile).unwrap()).unwrap(),
            reconcile
        );
        let check = Job::Check {
            tenant: TenantId::new("t"),
            provider: Provider::Pipedrive,
            record_id: "42".into(),
        };
        let text = serde_json::to_string(&check).unwrap();
        assert!(text.contains("\"job\":\"check\""), "{text}");
        assert_eq!(Job::parse(&text).unwrap(), check);
        // Messages queued before jobs were typed: a bare change event, or Sync Now as a kind.
        assert_eq!(
            Job::parse(&serde_json::to_string(&change).unwrap()).unwrap(),
            job
        );
        let legacy = serde_json::json!({"tenant": "t", "origin": "app", "record_id": "*",
            "kind": {"type": "reconcile"}, "occurred_at": "2026-01-01T00:00:00Z",
            "provenance": "continue"});
        assert_eq!(
            Job::parse(&legacy.to_string()).unwrap(),
            Job::Reconcile {
                tenant: TenantId::new("t"),
                round: 2
            }
        );
        assert!(Job::parse("{\"job\": \"nonsense\"}").is_err());
    }
}

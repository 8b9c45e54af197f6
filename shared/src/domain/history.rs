//! A contact's sync history: what each sync decided for it, per CRM, and why it ran.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Conflict, ContactFields, Field, FieldPatch, Provider, TenantId};

/// What set a sync off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A change made in the app (its API, or its webhook).
    App,
    /// A CRM's webhook.
    Webhook,
    /// The scheduled poll of a CRM (or Sync Now's), which finds what webhooks missed.
    Poll,
    /// Sync Now: its backfill, or its retry of a contact whose sync failed.
    SyncNow,
    /// A job replayed from the dead-letter queue.
    Replay,
    /// A check of our recent write to a CRM record, which found a user's edit it replaced.
    Check,
}

/// One field written: its value before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldChange {
    pub field: Field,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// What a sync did with the contact's record in one CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    /// The record was created in the CRM.
    Created,
    /// The contact was imported into the app from the CRM's record.
    Imported,
    /// Linked to a record the CRM had with the contact's email.
    Linked,
    /// Fields written on one side or both.
    Updated,
    /// The record was archived in the CRM (the contact was deleted in the app).
    Archived,
    /// The CRM's record is gone: the link keeps a tombstone, nothing is recreated.
    Tombstoned,
    /// The sync failed (it is retried; see `error`).
    Failed,
}

/// One CRM's part of a sync decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CrmDecision {
    pub provider: Provider,
    pub record_id: Option<String>,
    pub action: DecisionAction,
    /// Fields written to the CRM's record.
    #[serde(default)]
    pub crm_writes: Vec<FieldChange>,
    /// Fields written to the app contact from the CRM.
    #[serde(default)]
    pub app_writes: Vec<FieldChange>,
    /// Fields changed on both sides, and who won.
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
    pub error: Option<String>,
}

/// One entry of a contact's history: one sync that wrote something, met a conflict or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub tenant: TenantId,
    pub contact_id: String,
    pub at: DateTime<Utc>,
    pub trigger: Trigger,
    pub crms: Vec<CrmDecision>,
}

/// The changes a patch makes over `before`.
pub fn changes(patch: &FieldPatch, before: Option<&ContactFields>) -> Vec<FieldChange> {
    patch
        .0
        .iter()
        .map(|(field, new)| FieldChange {
            field: *field,
            old: before.and_then(|b| b.get(*field)).map(str::to_owned),
            new: new.clone(),
        })
        .filter(|c| c.old != c.new)
        .collect()
}

/// Every value of `fields`, as set from nothing.
pub fn all_set(fields: &ContactFields) -> Vec<FieldChange> {
    Field::ALL
        .into_iter()
        .filter_map(|f| {
            fields.get(f).map(|v| FieldChange {
                field: f,
                old: None,
                new: Some(v.to_owned()),
            })
        })
        .collect()
}

//! What enters the sync: change events (triggers, with the values a CRM reported as hints) and
//! the queued jobs that carry them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Field, Provider, TenantId};

/// Where a change came from: the app, or one of the CRMs. Serialised as `"app"` or the CRM's
/// name (`"hubspot"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    App,
    Crm(Provider),
}

impl Origin {
    pub fn provider(self) -> Option<Provider> {
        match self {
            Origin::App => None,
            Origin::Crm(p) => Some(p),
        }
    }
}

impl From<Provider> for Origin {
    fn from(p: Provider) -> Self {
        Origin::Crm(p)
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Origin::App => "app",
            Origin::Crm(p) => p.as_str(),
        })
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "app" => Ok(Origin::App),
            other => Provider::parse(other)
                .map(Origin::Crm)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown origin {other:?}"))),
        }
    }
}

/// What kind of change an event reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeKind {
    Upsert,
    Delete,
    /// Records `merged_ids` were merged into `record_id` (the survivor).
    Merge {
        merged_ids: Vec<String>,
    },
    /// The echo of our own write to the record (Pipedrive's webhook of it): `reported` holds
    /// what the fields it changed held just before it, and `occurred_at` when it landed. It
    /// checks that write (see `sync::check`).
    Echo,
    /// Erase the person everywhere (the app asked, with the contact's id; or a CRM's privacy
    /// deletion of the record): see `sync::erase`.
    Erase,
}

/// A value a CRM's change event says a user set a field to, and when (by the CRM's clock).
/// A hint, never data: the worker writes it nowhere as such. It shows a user's edit that our
/// own write of the same field, in flight at the time, overwrote (neither CRM offers a
/// conditional write); see [`RecentWrites::overwritten`](super::RecentWrites::overwritten).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    pub field: Field,
    pub value: Option<String>,
    pub at: DateTime<Utc>,
    /// Set when the value is what one write of ours replaced (its echo says so, or the
    /// record's history read around it): it then speaks of that write alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<Replacement>,
    /// Set on a value the record's history says was set through the API (by us, or another
    /// integration), not by a user in the CRM's UI.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub via_api: bool,
}

/// Our write a [`Reported`] value was replaced by: when it landed and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub landed: DateTime<Utc>,
    pub written: Option<String>,
}

impl Reported {
    /// A value a user set at `at`, as a change event reports it.
    pub fn set(field: Field, value: Option<String>, at: DateTime<Utc>) -> Self {
        Self {
            field,
            value,
            at,
            replaced_by: None,
            via_api: false,
        }
    }

    /// The value our write of `written` that landed at `landed` replaced.
    pub fn replaced(
        field: Field,
        value: Option<String>,
        landed: DateTime<Utc>,
        written: Option<String>,
    ) -> Self {
        Self {
            field,
            value,
            at: landed,
            replaced_by: Some(Replacement { landed, written }),
            via_api: false,
        }
    }

    /// The value, as the record's history says it was set through the API (`true`) or not.
    pub fn via_api(self, via_api: bool) -> Self {
        Self { via_api, ..self }
    }
}

/// A trigger: "record X at origin O changed". Never carries the data itself (only, from a CRM,
/// the [`Reported`] values it names as hints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub tenant: TenantId,
    pub origin: Origin,
    pub record_id: String,
    pub kind: ChangeKind,
    pub occurred_at: DateTime<Utc>,
    /// Who made the change according to the source (e.g. HubSpot `changeSource`/`sourceId`).
    #[serde(default)]
    pub provenance: Option<String>,
    /// Source event id, used for dedupe and tracing.
    #[serde(default)]
    pub event_id: Option<String>,
    /// The values the CRM's event says were set (HubSpot's `propertyValue`, Pipedrive's `data`
    /// for the fields in `previous`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported: Vec<Reported>,
    /// Moved back from the dead-letter queue by a replay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl ChangeEvent {
    pub fn new(
        tenant: TenantId,
        origin: Origin,
        record_id: impl Into<String>,
        kind: ChangeKind,
    ) -> Self {
        Self {
            tenant,
            origin,
            record_id: record_id.into(),
            kind,
            occurred_at: Utc::now(),
            provenance: None,
            event_id: None,
            reported: Vec::new(),
            replayed: false,
        }
    }

    /// What set this sync off, for the contact's history.
    pub fn trigger(&self) -> super::Trigger {
        use super::Trigger;
        if self.replayed {
            return Trigger::Replay;
        }
        match (self.origin, self.provenance.as_deref()) {
            (_, Some("poll" | "gone")) => Trigger::Poll,
            (_, Some("sync_now")) => Trigger::SyncNow,
            (Origin::App, _) => Trigger::App,
            (Origin::Crm(_), _) => Trigger::Webhook,
        }
    }
}

/// A queued unit of work: a message of the sync queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Sync what one change event points at.
    Change(ChangeEvent),
    /// One time-boxed round of Sync Now for a tenant: backfill unlinked contacts, poll every
    /// CRM, retry failed contacts. Round 1 starts a run; a later round continues it.
    Reconcile { tenant: TenantId, round: u32 },
    /// Check our recent writes to one CRM record against its field history: a user's edit
    /// they overwrote is found even when its event was lost (see `sync::check`).
    Check {
        tenant: TenantId,
        provider: Provider,
        record_id: String,
    },
}

impl Job {
    /// The job as a replay from the dead-letter queue sends it again (a change says so).
    pub fn replayed(self) -> Job {
        match self {
            Job::Change(e) => Job::Change(ChangeEvent {
                replayed: true,
                ..e
            }),
            other => other,
        }
    }

    pub fn tenant(&self) -> &TenantId {
        match self {
            Job::Change(e) => &e.tenant,
            Job::Reconcile { tenant, .. } | Job::Check { tenant, .. } => tenant,
        }
    }

    /// The change event, for a [`Job::Change`].
    pub fn change(&self) -> Option<&ChangeEvent> {
        match self {
            Job::Change(e) => Some(e),
            Job::Reconcile { .. } | Job::Check { .. } => None,
        }
    }

    /// Reads a queue message. Messages written before jobs were typed are bare change events,
    /// with Sync Now as a `reconcile` kind (`provenance: "continue"` for a continuation).
    pub fn parse(body: &str) -> Result<Job, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(body)?;
        if value.get("job").is_some() {
            return serde_json::from_value(value);
        }
        if value["kind"]["type"] == "reconcile" {
            let tenant: TenantId = serde_json::from_value(value["tenant"].clone())?;
            let round = if value["provenance"] == "continue" {
                2
            } else {
                1
            };
            return Ok(Job::Reconcile { tenant, round });
        }
        serde_json::from_value(value).map(Job::Change)
    }
}

impl From<ChangeEvent> for Job {
    fn from(event: ChangeEvent) -> Self {
        Job::Change(event)
    }
}

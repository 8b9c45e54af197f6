//! ContactLinks: the mapping between one app contact and one CRM record, the values both last
//! agreed on, and the writes a sync has under way.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{ContactFields, Field, FieldPatch, Provider, Reported, TenantId};

/// Sync state of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    Synced,
    Pending,
    Error,
    /// The CRM record was deleted or archived; the link is kept as a tombstone.
    Deleted,
    /// An intent: the record is being created in the CRM. It claims the contact's place with the
    /// CRM before the create, so a second worker, or a retry after a crash, finds it instead of
    /// creating again.
    Creating,
}

impl LinkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Synced => "synced",
            LinkStatus::Pending => "pending",
            LinkStatus::Error => "error",
            LinkStatus::Deleted => "deleted",
            LinkStatus::Creating => "creating",
        }
    }
}

/// What a sync is about to write to each side. If it is cut off, or a write's answer is lost,
/// the next sync takes each field the side now holds at the value written as agreed (the write
/// landed) instead of reading our own write as a user's change there (a false conflict the
/// CRM would win over the user's newer edit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingWrites {
    #[serde(default)]
    pub to_crm: FieldPatch,
    #[serde(default)]
    pub to_app: FieldPatch,
    /// The CRM write in flight, as [`CrmWrite`] (not landed yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_write: Option<CrmWrite>,
}

impl PendingWrites {
    /// `base` with each pending field the side written to now holds at its value.
    pub fn settle(&self, base: &mut ContactFields, app: &ContactFields, crm: &ContactFields) {
        for (patch, side) in [(&self.to_crm, crm), (&self.to_app, app)] {
            for (field, value) in &patch.0 {
                if side.get(*field) == value.as_deref() {
                    base.set(*field, value.clone());
                }
            }
        }
    }
}

/// Our recent writes to a CRM record, as one window: from when the record the first was planned
/// on was last modified to when the record was modified by the last (both by the CRM's clock),
/// and per field written, every value of it we read meanwhile and the value written last.
///
/// Neither CRM offers a conditional write, so a user's edit of a field can land between our
/// read and our write of it, and our write replaces it. The user's change event still reports
/// the value, and [`overwritten`](Self::overwritten) recognises it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrmWrite {
    pub read_at: Option<DateTime<Utc>>,
    pub written_at: Option<DateTime<Utc>>,
    pub fields: BTreeMap<Field, FieldWrite>,
}

/// One field of a [`CrmWrite`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldWrite {
    /// The values of the field in the records the writes were planned on.
    pub read: Vec<Option<String>>,
    pub written: Option<String>,
}

/// How long writes in a row share one window (webhooks come within seconds, retries within
/// hours).
const WINDOW_HOURS: i64 = 1;

fn normal(field: Field, value: Option<String>) -> Option<String> {
    let mut f = ContactFields::default();
    f.set(field, value);
    f.get(field).map(str::to_owned)
}

impl CrmWrite {
    /// The write of `patch` planned on `read` (the record's fields and modification time),
    /// landed at `written_at` (unknown while it is in flight), after `earlier` (our previous
    /// writes' window, which it extends when recent).
    pub fn new(
        earlier: Option<&CrmWrite>,
        read: &ContactFields,
        read_at: Option<DateTime<Utc>>,
        patch: &FieldPatch,
        written_at: Option<DateTime<Utc>>,
    ) -> Self {
        let earlier = earlier.filter(|e| match (e.written_at, read_at) {
            (Some(w), Some(r)) => w + chrono::Duration::hours(WINDOW_HOURS) >= r,
            _ => false,
        });
        let mut fields = earlier.map(|e| e.fields.clone()).unwrap_or_default();
        for (field, w) in fields.iter_mut() {
            w.read.push(read.get(*field).map(str::to_owned));
        }
        for (field, value) in &patch.0 {
            let w = fields.entry(*field).or_default();
            if w.read.is_empty() {
                w.read.push(read.get(*field).map(str::to_owned));
            }
            w.written = normal(*field, value.clone());
        }
        for w in fields.values_mut() {
            w.read.dedup();
            if w.read.len() > 8 {
                w.read.drain(..w.read.len() - 8);
            }
        }
        Self {
            read_at: earlier.and_then(|e| e.read_at).or(read_at),
            written_at,
            fields,
        }
    }

    /// The write, landed at `at`.
    pub fn landed(self, at: Option<DateTime<Utc>>) -> Self {
        Self {
            written_at: at,
            ..self
        }
    }

    /// Whether `record` holds every value the last write wrote.
    pub fn holds(&self, patch: &FieldPatch, record: &ContactFields) -> bool {
        patch
            .0
            .iter()
            .all(|(f, v)| record.get(*f) == normal(*f, v.clone()).as_deref())
    }

    /// The reported values these writes overwrote: of a field written, set inside the window,
    /// unlike every value of it we read (a value read was seen) and the value written, while
    /// the record (`current`) still holds what was written (else a newer change is there to
    /// sync). The latest such value per field.
    ///
    /// Timestamps of whole seconds (Pipedrive's) make the window inclusive at both ends: a
    /// user's edit in the second of our read reads as overwritten unless we read its value.
    pub fn overwritten(&self, reported: &[Reported], current: &ContactFields) -> FieldPatch {
        let (Some(read_at), Some(written_at)) = (self.read_at, self.written_at) else {
            return FieldPatch::default();
        };
        // A landing time in whole seconds stands for its whole second (a reported time may
        // carry milliseconds).
        let written_by = if written_at.timestamp_subsec_nanos() == 0 {
            written_at + chrono::Duration::milliseconds(999)
        } else {
            written_at
        };
        let mut latest: BTreeMap<Field, (&Reported, Option<String>)> = BTreeMap::new();
        for r in reported {
            let Some(w) = self.fields.get(&r.field) else {
                continue;
            };
            let value = normal(r.field, r.value.clone());
            let lost = r.at >= read_at
                && r.at <= written_by
                && !w.read.contains(&value)
                && value != w.written
                && current.get(r.field) == w.written.as_deref();
            if lost && latest.get(&r.field).is_none_or(|(l, _)| l.at <= r.at) {
                latest.insert(r.field, (r, value));
            }
        }
        let mut out = FieldPatch::default();
        for (field, (_, value)) in latest {
            out.insert(field, value);
        }
        out
    }
}

/// The mapping between one app contact and one CRM record, with the values both last agreed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactLink {
    pub tenant: TenantId,
    pub contact_id: String,
    pub provider: Provider,
    pub external_id: String,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub status: LinkStatus,
    pub last_error: Option<String>,
    pub crm_last_modified: Option<DateTime<Utc>>,
    /// The field values both sides last agreed on.
    pub base: ContactFields,
    pub base_hash: String,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The writes of a sync under way, stored before the first is sent and cleared by the
    /// sync's final link write (see [`PendingWrites`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingWrites>,
    /// Our last write to the record, kept to recognise a user's edit it overwrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write: Option<CrmWrite>,
    pub version: u64,
}

impl ContactLink {
    /// The intent written before a record is created in the CRM with `fields` (see
    /// [`LinkStatus::Creating`]); its placeholder id is [`placeholder_id`](Self::placeholder_id)
    /// of the record's email. Its base is what the create writes: if the record turns out to
    /// exist, both sides agreed on that.
    pub fn intent(
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        fields: ContactFields,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            status: LinkStatus::Creating,
            last_error: None,
            ..Self::synced(
                tenant,
                contact_id,
                provider,
                &Self::placeholder_id(fields.email.as_deref(), contact_id),
                None,
                fields,
                Vec::new(),
                at,
            )
        }
    }

    /// The id an intent holds until its record is known: by the email the record is created
    /// with (live app contacts have unique emails), so a webhook for a record whose create has
    /// not answered yet finds the intent by the record's email (and does not import the record
    /// as a new contact when the app contact was deleted meanwhile). By the contact's id when
    /// there is no email.
    pub fn placeholder_id(email: Option<&str>, contact_id: &str) -> String {
        match email
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty())
        {
            Some(email) => format!("creating:{email}"),
            None => format!("creating:contact:{contact_id}"),
        }
    }

    /// A link whose record is being created, or was created but not yet agreed on: its base
    /// means nothing.
    pub fn is_intent(&self) -> bool {
        self.status == LinkStatus::Creating
    }

    /// An intent that does not know its record yet: the create may or may not have happened.
    pub fn is_placeholder(&self) -> bool {
        self.is_intent() && self.external_id.starts_with("creating:")
    }

    /// A link both sides agree on: `base` is what they hold now.
    #[allow(clippy::too_many_arguments)]
    pub fn synced(
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        external_id: &str,
        crm_last_modified: Option<DateTime<Utc>>,
        base: ContactFields,
        warnings: Vec<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            tenant: tenant.clone(),
            contact_id: contact_id.to_string(),
            provider,
            external_id: external_id.to_string(),
            last_synced_at: Some(at),
            status: LinkStatus::Synced,
            last_error: None,
            crm_last_modified,
            base_hash: base.content_hash(),
            base,
            warnings,
            pending: None,
            last_write: None,
            version: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, s).unwrap() + chrono::Duration::milliseconds(ms)
    }

    /// Pipedrive says when a write landed in whole seconds, and when a user's edit was made
    /// with milliseconds: an edit in the second our write landed in, whose value our write
    /// replaced, is overwritten.
    #[test]
    fn an_edit_in_the_second_our_write_landed_is_overwritten() {
        let read = ContactFields {
            last_name: Some("Old".into()),
            ..Default::default()
        };
        let mut patch = FieldPatch::default();
        patch.insert(Field::LastName, Some("Ours".into()));
        let write = CrmWrite::new(None, &read, Some(at(1, 0)), &patch, None).landed(Some(at(2, 0)));
        let current = ContactFields {
            last_name: Some("Ours".into()),
            ..Default::default()
        };
        let user = |ms| Reported {
            field: Field::LastName,
            value: Some("Theirs".into()),
            at: at(2, ms),
        };
        let lost = write.overwritten(&[user(357)], &current);
        assert_eq!(lost.0.get(&Field::LastName), Some(&Some("Theirs".into())));
        // After the second our write landed in, it is a newer edit, not an overwritten one.
        assert!(write.overwritten(&[user(1_200)], &current).0.is_empty());
    }
}

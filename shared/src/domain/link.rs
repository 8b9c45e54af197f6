//! ContactLinks: the mapping between one app contact and one CRM record, the values both last
//! agreed on, and the writes a sync has under way.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ContactFields, CrmWrite, FieldPatch, Provider, RecentWrites, TenantId};

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
    /// The CRM write in flight (not landed yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_write: Option<CrmWrite>,
    /// The stamp the app write leaves on the contact ([`AppWrite`](super::AppWrite)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_write: Option<String>,
    /// When these writes were fenced: a CRM write of them may still be on its way until the
    /// create grace has passed (see `pair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// What the app held, when these writes were planned, of the fields `to_app` writes.
    #[serde(default, skip_serializing_if = "FieldPatch::is_empty")]
    pub app_read: FieldPatch,
}

impl PendingWrites {
    /// The stamp of an app write fenced by storing `link` (the version the store gives it).
    pub fn app_stamp(link: &ContactLink) -> String {
        format!("{}@{}", link.external_id, link.version + 1)
    }

    /// `base` with each pending field the side written to now holds at its value; and with a
    /// value due to the app that the CRM holds while a user has changed the app since the plan
    /// (an edit made over the app write still owed: the value was agreed with the CRM, the
    /// edit is the app's change on top of it). A change another sync wrote into the app is no
    /// user's edit (`app`'s [`synced`](super::Contact::synced) writes say which). A field due to
    /// the app that the app still holds as read (its write did not land) is agreed at that.
    pub fn settle(&self, base: &mut ContactFields, app: &super::Contact, crm: &ContactFields) {
        for (patch, side) in [(&self.to_crm, crm), (&self.to_app, &app.fields)] {
            for (field, value) in &patch.0 {
                if side.get(*field) == value.as_deref() {
                    base.set(*field, value.clone());
                }
            }
        }
        for (field, value) in &self.to_app.0 {
            let now = app.fields.get(*field);
            let read = self.app_read.get(*field).map(Option::as_deref);
            let by_a_sync = app.synced.values().any(|w| w.put(*field, now));
            // (Made after the plan: an edit from before it, made while the plan read the CRM,
            // is concurrent with the CRM's value, a conflict the policy settles.)
            let after_plan = self.since.is_none_or(|s| app.last_app_modified > s);
            if crm.get(*field) == value.as_deref()
                && read.is_some_and(|r| now != r)
                && !by_a_sync
                && after_plan
            {
                base.set(*field, value.clone());
            }
        }
        // An app write that did not land (no stamp of it on the contact, which still holds what
        // the plan read): the app did not change, so it is what the app agreed to, whatever the
        // CRM write of the same value (a conflict's winner, written to both sides) did. The
        // value is still owed to the app, and the next plan writes it, or the CRM's newer one.
        let app_landed = app
            .synced
            .values()
            .any(|w| Some(&w.stamp) == self.app_write.as_ref());
        if !app_landed {
            for (field, value) in &self.to_app.0 {
                if let Some(read) = self.app_read.get(*field)
                    && app.fields.get(*field) == read.as_deref()
                    && read != value
                {
                    base.set(*field, read.clone());
                }
            }
        }
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
    /// The stamp of the last app write of the pair the base includes: a later one the contact
    /// shows landed (its link write lost) is agreed on too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_synced: Option<String>,
    /// Our recent writes to the record, kept to recognise a user's edit one overwrote.
    #[serde(default, skip_serializing_if = "RecentWrites::is_empty")]
    pub writes: RecentWrites,
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
            app_synced: None,
            writes: RecentWrites::default(),
            version: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Field;

    fn first(v: &str) -> ContactFields {
        ContactFields {
            first_name: Some(v.into()),
            ..Default::default()
        }
    }

    /// A value owed to the app that the CRM holds: agreed once the app shows it, or once a
    /// user has changed the app since the plan (the edit is made over it); not while the app
    /// still holds what the plan read (the write is owed, nothing agreed yet).
    #[test]
    fn a_value_owed_to_the_app_is_agreed_when_the_app_moved_on() {
        let mut to_app = FieldPatch::default();
        to_app.insert(Field::FirstName, Some("U".into()));
        let mut app_read = FieldPatch::default();
        app_read.insert(Field::FirstName, Some("A".into()));
        let pending = PendingWrites {
            to_app,
            app_read,
            ..Default::default()
        };
        let contact = |v: &str| {
            crate::domain::Contact::new(TenantId::new("t"), "c1", first(v), chrono::Utc::now())
        };
        let settled = |app: &crate::domain::Contact, crm: &str| {
            let mut base = first("O");
            pending.settle(&mut base, app, &first(crm));
            base.first_name.unwrap()
        };
        assert_eq!(settled(&contact("U"), "U"), "U", "the app shows it");
        assert_eq!(
            settled(&contact("A"), "U"),
            "A",
            "still owed: the app agreed to nothing new"
        );
        assert_eq!(settled(&contact("B"), "U"), "U", "a user's edit over it");
        assert_eq!(settled(&contact("B"), "C"), "O", "the CRM moved on too");
        // B written by another CRM's sync: no user's edit.
        let mut by_sync = contact("B");
        let mut written = FieldPatch::default();
        written.insert(Field::FirstName, Some("B".into()));
        by_sync.synced.insert(
            Provider::Pipedrive,
            crate::domain::AppWrite {
                stamp: "7@3".into(),
                written,
                kept: FieldPatch::default(),
            },
        );
        assert_eq!(settled(&by_sync, "U"), "O");
        // B put there by an earlier write of that sync's pair, which its latest write (of
        // another field) kept: still no user's edit (seed 11147 with 8 workers).
        let mut earlier = FieldPatch::default();
        earlier.insert(Field::FirstName, Some("B".into()));
        let mut job = FieldPatch::default();
        job.insert(Field::JobTitle, Some("J".into()));
        let first_write = crate::domain::AppWrite::after("7@3".into(), &earlier, None, &first("A"));
        let mut kept_sync = contact("B");
        kept_sync.synced.insert(
            Provider::Pipedrive,
            crate::domain::AppWrite::after(
                "7@9".into(),
                &job,
                Some(&first_write),
                &kept_sync.fields,
            ),
        );
        assert_eq!(settled(&kept_sync, "U"), "O");
        // Not once the app has moved on from it: a later write keeps only what is still there.
        let moved_on =
            crate::domain::AppWrite::after("7@11".into(), &job, Some(&first_write), &first("C"));
        assert!(!moved_on.put(Field::FirstName, Some("B")));
        // An app edit made before the plan was fenced (while it read the CRM) is no edit over
        // the owed value: concurrent with the CRM's, a conflict (seed 40048 with 12 workers).
        let mut fenced_later = pending.clone();
        fenced_later.since = Some(contact("B").last_app_modified + chrono::Duration::seconds(1));
        let mut base = first("O");
        fenced_later.settle(&mut base, &contact("B"), &first("U"));
        assert_eq!(base.first_name.as_deref(), Some("O"));
    }

    /// A conflict's winner written to both sides: the CRM write landed, the app write did not
    /// (the app still holds what the plan read). The app agreed to nothing new: its value is
    /// not taken for a user's edit to push over the winner (seed 5122 with 6 workers), and the
    /// winner is still owed to it. Once the app write landed (its stamp), the winner is agreed.
    #[test]
    fn a_winner_written_to_the_crm_only_is_still_owed_to_the_app() {
        let mut winner = FieldPatch::default();
        winner.insert(Field::FirstName, Some("U".into()));
        let mut app_read = FieldPatch::default();
        app_read.insert(Field::FirstName, Some("A".into()));
        let pending = PendingWrites {
            to_crm: winner.clone(),
            to_app: winner.clone(),
            app_write: Some("7@5".into()),
            app_read,
            ..Default::default()
        };
        let mut app =
            crate::domain::Contact::new(TenantId::new("t"), "c1", first("A"), chrono::Utc::now());
        let mut base = first("A");
        pending.settle(&mut base, &app, &first("U"));
        assert_eq!(base.first_name.as_deref(), Some("A"));
        app.fields = first("U");
        app.synced.insert(
            Provider::HubSpot,
            crate::domain::AppWrite {
                stamp: "7@5".into(),
                written: winner,
                kept: FieldPatch::default(),
            },
        );
        let mut base = first("A");
        pending.settle(&mut base, &app, &first("U"));
        assert_eq!(base.first_name.as_deref(), Some("U"));
    }
}

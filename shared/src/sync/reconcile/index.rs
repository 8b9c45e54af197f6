//! The email index of one backfill: which pending contacts' emails a CRM already has, from one
//! listing of all its records, kept between the rounds of one Sync Now so that a large first
//! sync lists the CRM once rather than once per round.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::Known;
use crate::domain::{Contact, CrmRecord, Provider};

/// How long a kept listing stands for the CRM: a record a user adds later with a pending
/// contact's email is seen by the next listing (a backfill paused for a day's budget lists
/// again when it resumes).
const FRESH_FOR_MINUTES: i64 = 15;
/// The most a kept index may take (a DynamoDB item holds 400 KB); a larger one is listed again
/// in each round.
const MAX_KEPT_BYTES: usize = 300_000;

/// Where a round keeps the index for the next (a cursor of the tenant).
pub(super) fn cursor_name(provider: Provider) -> String {
    format!("backfill-index#{provider}")
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct BackfillIndex {
    /// When the listing began: a contact changed since may have another email.
    listed_at: DateTime<Utc>,
    /// Email (lowercased) → id of the record with it.
    matches: BTreeMap<String, String>,
    /// The records themselves, in the round that listed them.
    #[serde(skip)]
    records: HashMap<String, CrmRecord>,
    /// Listed by a preview of the first sync (which stands for the Sync Now that follows it
    /// while fresh) rather than by a round of the running Sync Now.
    #[serde(default)]
    by_preview: bool,
}

impl BackfillIndex {
    pub(super) fn new(listed_at: DateTime<Utc>, records: HashMap<String, CrmRecord>) -> Self {
        Self {
            listed_at,
            matches: records
                .iter()
                .map(|(email, r)| (email.clone(), r.id.clone()))
                .collect(),
            records,
            by_preview: false,
        }
    }

    /// The index a preview listed: it stands for the next Sync Now while fresh.
    pub(super) fn from_preview(
        listed_at: DateTime<Utc>,
        records: HashMap<String, CrmRecord>,
    ) -> Self {
        Self {
            by_preview: true,
            ..Self::new(listed_at, records)
        }
    }

    /// A kept index, if it was listed in this Sync Now (`started`) or by a preview, and is
    /// still fresh.
    pub(super) fn restore(kept: &str, started: DateTime<Utc>, now: DateTime<Utc>) -> Option<Self> {
        let index: Self = serde_json::from_str(kept).ok()?;
        ((index.listed_at >= started || index.by_preview)
            && now - index.listed_at <= Duration::minutes(FRESH_FOR_MINUTES))
        .then_some(index)
    }

    /// The index as kept between rounds, unless it is too large to keep.
    pub(super) fn to_kept(&self) -> Option<String> {
        serde_json::to_string(self)
            .ok()
            .filter(|s| s.len() <= MAX_KEPT_BYTES)
    }

    pub(super) fn len(&self) -> usize {
        self.matches.len()
    }

    /// Whether the listing speaks for the contact: unchanged in the app since it began.
    pub(super) fn covers(&self, contact: &Contact) -> bool {
        contact.last_app_modified <= self.listed_at
    }

    /// The record the CRM had with this (lowercased) email, if any; with its values where this
    /// round listed it, else by id only (read again before any decision).
    pub(super) fn take(&mut self, email: &str) -> Option<Known> {
        let id = self.matches.get(email)?.clone();
        Some(Known {
            record: self.records.remove(email),
            id,
            link_version: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ContactFields;

    fn record(id: &str, email: &str) -> CrmRecord {
        CrmRecord {
            id: id.into(),
            fields: ContactFields {
                email: Some(email.into()),
                ..Default::default()
            },
            updated_at: None,
            archived: false,
        }
    }

    fn at(minute: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-12-07T10:{minute:02}:00Z"))
            .unwrap()
            .to_utc()
    }

    #[test]
    fn a_kept_index_stands_within_its_sync_now_while_fresh_and_by_id_only() {
        let listed = BackfillIndex::new(
            at(10),
            HashMap::from([("ann@x.io".to_string(), record("7", "ann@x.io"))]),
        );
        let kept = listed.to_kept().unwrap();
        let mut again = BackfillIndex::restore(&kept, at(9), at(20)).unwrap();
        let known = again.take("ann@x.io").unwrap();
        assert_eq!((known.id.as_str(), known.record), ("7", None));
        assert!(again.take("bo@x.io").is_none());
        assert!(
            BackfillIndex::restore(&kept, at(11), at(12)).is_none(),
            "listed before this Sync Now began"
        );
        assert!(
            BackfillIndex::restore(&kept, at(9), at(26)).is_none(),
            "more than 15 minutes old"
        );
        assert!(BackfillIndex::restore("not json", at(9), at(12)).is_none());
    }

    #[test]
    fn a_previews_index_stands_for_the_sync_now_after_it_while_fresh() {
        let previewed = BackfillIndex::from_preview(
            at(10),
            HashMap::from([("ann@x.io".to_string(), record("7", "ann@x.io"))]),
        );
        let kept = previewed.to_kept().unwrap();
        let mut restored = BackfillIndex::restore(&kept, at(12), at(13)).unwrap();
        assert_eq!(restored.take("ann@x.io").map(|k| k.id), Some("7".into()));
        assert!(
            BackfillIndex::restore(&kept, at(12), at(26)).is_none(),
            "more than 15 minutes old"
        );
    }

    #[test]
    fn the_listing_round_has_the_records_and_covers_contacts_unchanged_since() {
        let mut index = BackfillIndex::new(
            at(10),
            HashMap::from([("ann@x.io".to_string(), record("7", "ann@x.io"))]),
        );
        assert_eq!(
            index.take("ann@x.io").and_then(|k| k.record),
            Some(record("7", "ann@x.io"))
        );
        let mut contact = Contact::new(
            crate::domain::TenantId::new("t"),
            "c1",
            ContactFields::default(),
            at(10),
        );
        assert!(index.covers(&contact));
        contact.last_app_modified = at(11);
        assert!(!index.covers(&contact), "changed after the listing began");
    }
}

//! The in-memory contact store: records, property history, the email index, and the write
//! operations (create, update, archive, restore, merge) that produce change events.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::error::{PropIssue, WriteError};
use super::properties::{PropertyDef, builtin_properties};

/// Always present in a record's properties in responses to get/list/search/read.
pub(crate) const ALWAYS_RETURNED: [&str; 3] = ["createdate", "hs_object_id", "lastmodifieddate"];
/// Returned when the caller names no properties.
pub(crate) const DEFAULT_PROPERTIES: [&str; 6] = [
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
];
/// Maintained by the store, never written by callers.
const SYSTEM_PROPERTIES: [&str; 3] = ["createdate", "hs_object_id", "lastmodifieddate"];

/// HubSpot's timestamp format: RFC 3339, milliseconds, `Z`.
pub(crate) fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now_ms(clock: &crate::SimClock) -> DateTime<Utc> {
    let now = clock.now();
    Utc.timestamp_millis_opt(now.timestamp_millis())
        .single()
        .unwrap_or(now)
}

/// Who made a change: decides `changeSource`/`sourceId` in webhooks and property history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Actor {
    /// An API call with a Bearer token of the app.
    Integration { app_id: u64 },
    /// A user in the HubSpot UI (the simulator's control endpoints).
    Ui { user_id: u64 },
    /// Bulk seeding by tests: no webhooks.
    Import,
}

impl Actor {
    pub fn change_source(&self) -> &'static str {
        match self {
            Actor::Integration { .. } => "INTEGRATION",
            Actor::Ui { .. } => "CRM_UI",
            Actor::Import => "IMPORT",
        }
    }

    pub fn source_id(&self) -> Option<String> {
        match self {
            Actor::Integration { app_id } => Some(app_id.to_string()),
            Actor::Ui { user_id } => Some(format!("userId:{user_id}")),
            Actor::Import => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HistoryEntry {
    pub value: String,
    pub timestamp: DateTime<Utc>,
    pub source_type: &'static str,
    pub source_id: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub id: u64,
    /// Non-empty values only; clearing a property removes it.
    pub props: BTreeMap<String, String>,
    /// Newest last.
    pub history: BTreeMap<String, Vec<HistoryEntry>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
    pub merged_into: Option<u64>,
    /// When the search index shows the current values (writes are indexed after a lag that
    /// varies per write, so a record written later can be indexed sooner).
    pub indexed_at: DateTime<Utc>,
    /// Earlier values, oldest first (a few kept), each with when the index showed it: what a
    /// lagging search still shows after an update.
    pub superseded: Vec<(DateTime<Utc>, BTreeMap<String, String>)>,
}

/// How many superseded versions a record keeps for the lagging search index.
const KEPT_VERSIONS: usize = 8;

impl Record {
    /// Keeps the current values for the lagging index before an update changes them; the new
    /// values are indexed at `visible_at`.
    fn supersede(&mut self, visible_at: DateTime<Utc>) {
        if self.superseded.len() >= KEPT_VERSIONS {
            self.superseded.remove(0);
        }
        self.superseded.push((self.indexed_at, self.props.clone()));
        self.indexed_at = visible_at;
    }

    /// The record as the search index shows it at `now` (`None`: every write indexed at
    /// once): the newest version indexed by then, so search lags updates as it lags creates.
    /// `None` when no version is indexed yet (a record just created).
    pub fn indexed(&self, now: Option<DateTime<Utc>>) -> Option<Cow<'_, Record>> {
        let Some(now) = now else {
            return Some(Cow::Borrowed(self));
        };
        if self.indexed_at <= now {
            return Some(Cow::Borrowed(self));
        }
        let (_, props) = self.superseded.iter().rev().find(|(at, _)| *at <= now)?;
        let mut old = self.clone();
        old.props = props.clone();
        old.superseded.clear();
        Some(Cow::Owned(old))
    }

    pub fn archived(&self) -> bool {
        self.archived_at.is_some()
    }

    pub fn email(&self) -> Option<&str> {
        self.props.get("email").map(String::as_str)
    }

    fn set(&mut self, name: &str, value: String, at: DateTime<Utc>, actor: &Actor) {
        self.history
            .entry(name.to_string())
            .or_default()
            .push(HistoryEntry {
                value: value.clone(),
                timestamp: at,
                source_type: actor.change_source(),
                source_id: actor.source_id(),
            });
        if value.is_empty() {
            self.props.remove(name);
        } else {
            self.props.insert(name.to_string(), value);
        }
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.updated_at = at;
        self.props.insert("lastmodifieddate".into(), fmt_ts(at));
    }
}

/// A change to report as webhook events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Created {
        id: u64,
        at: DateTime<Utc>,
    },
    PropertyChanged {
        id: u64,
        at: DateTime<Utc>,
        name: String,
        value: String,
    },
    Deleted {
        id: u64,
        at: DateTime<Utc>,
    },
    Restored {
        id: u64,
        at: DateTime<Utc>,
    },
    /// Deleted for good by a GDPR delete.
    Erased {
        id: u64,
        at: DateTime<Utc>,
    },
    Merged {
        primary: u64,
        merged: u64,
        new_id: u64,
        moved: usize,
        at: DateTime<Utc>,
    },
}

/// Which properties a rendered record carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Selection<'a> {
    /// email, firstname, lastname + the always-returned three.
    Default,
    /// The named properties (unknown names skipped) + the always-returned three.
    Named(&'a [String]),
    /// Write responses: the written properties + the always-returned three.
    Written(&'a BTreeSet<String>),
    /// Every stored value.
    All,
}

/// Looks a record up by an `idProperty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdKind<'a> {
    ObjectId,
    Email,
    Unique(&'a str),
}

pub(crate) struct Store {
    pub contacts: BTreeMap<u64, Record>,
    pub props: BTreeMap<String, PropertyDef>,
    /// Lower-cased email → id, non-archived records only.
    email_index: HashMap<String, u64>,
    next_id: u64,
    first_id: u64,
    clock: DateTime<Utc>,
    /// Where the time comes from.
    source: crate::SimClock,
    /// Typical lag of the search index behind writes, in ms (0: indexed at once).
    pub index_lag_ms: u64,
    /// Writes so far: varies each write's index lag.
    writes: u64,
    /// Emails refused as invalid although well formed (HubSpot refuses some it judges
    /// undeliverable): one bad record in a batch.
    pub refused_emails: std::collections::BTreeSet<String>,
}

impl Store {
    pub fn new(first_id: u64) -> Self {
        let source = crate::SimClock::default();
        let now = now_ms(&source);
        Self {
            source,
            contacts: BTreeMap::new(),
            props: builtin_properties(now),
            email_index: HashMap::new(),
            next_id: first_id,
            first_id,
            clock: now,
            index_lag_ms: 0,
            writes: 0,
            refused_emails: Default::default(),
        }
    }

    pub fn reset(&mut self) {
        let lag = self.index_lag_ms;
        *self = Store::new(self.first_id);
        self.index_lag_ms = lag;
    }

    /// Makes search show record `id` as it is now (a record that existed before).
    pub fn mark_indexed(&mut self, id: u64) {
        if let Some(rec) = self.contacts.get_mut(&id) {
            rec.indexed_at = rec.updated_at;
            rec.superseded.clear();
        }
    }

    /// Delays when search shows record `id`'s latest write by `by`.
    pub fn index_late(&mut self, id: u64, by: std::time::Duration) -> Result<(), WriteError> {
        let rec = self
            .contacts
            .get_mut(&id)
            .ok_or_else(|| WriteError::NotFound { id: id.to_string() })?;
        rec.indexed_at += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        Ok(())
    }

    /// When a write of record `id` at `at` shows in search: after a lag between a quarter and
    /// seven quarters of the typical one, varied per write (a fixed mix of id and write count),
    /// so indexing order differs from write order as it does in HubSpot.
    fn index_time(&mut self, id: u64, at: DateTime<Utc>) -> DateTime<Utc> {
        self.writes += 1;
        if self.index_lag_ms == 0 {
            return at;
        }
        let mix = (id ^ self.writes.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        let quarters = 1 + mix % 7;
        at + chrono::Duration::milliseconds((self.index_lag_ms * quarters / 4) as i64)
    }

    /// Takes the time from `source` from now on.
    pub fn set_clock(&mut self, source: crate::SimClock) {
        self.clock = now_ms(&source);
        self.source = source;
    }

    /// The time without moving the store's clock (for reads).
    pub fn peek_now(&self) -> DateTime<Utc> {
        now_ms(&self.source).max(self.clock)
    }

    /// Wall-clock milliseconds, never going backwards.
    pub fn now(&mut self) -> DateTime<Utc> {
        let t = now_ms(&self.source);
        if t > self.clock {
            self.clock = t;
        }
        self.clock
    }

    fn mint_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ---- lookups -------------------------------------------------------------------------

    /// Resolves an `idProperty` name (None = record id).
    pub fn id_kind<'a>(&self, id_property: Option<&'a str>) -> Result<IdKind<'a>, WriteError> {
        match id_property {
            None | Some("") | Some("hs_object_id") => Ok(IdKind::ObjectId),
            Some("email") => Ok(IdKind::Email),
            Some(name) => match self.props.get(name) {
                Some(def) if def.has_unique_value => Ok(IdKind::Unique(name)),
                Some(_) => Err(WriteError::Invalid(format!(
                    "Property \"{name}\" is not a unique identifier property and cannot be used as idProperty"
                ))),
                None => Err(WriteError::Invalid(format!(
                    "Property \"{name}\" does not exist and cannot be used as idProperty"
                ))),
            },
        }
    }

    /// Finds a record (archived or not, as asked) by id value and id kind.
    pub fn find(&self, value: &str, kind: IdKind<'_>, archived: bool) -> Option<u64> {
        match kind {
            IdKind::ObjectId => {
                let id = value.trim().parse::<u64>().ok()?;
                let rec = self.contacts.get(&id)?;
                (rec.archived() == archived).then_some(id)
            }
            IdKind::Email => {
                let email = value.trim().to_lowercase();
                if archived {
                    self.contacts
                        .values()
                        .rev()
                        .find(|r| r.archived() && r.email() == Some(email.as_str()))
                        .map(|r| r.id)
                } else {
                    self.email_index.get(&email).copied()
                }
            }
            IdKind::Unique(name) => self
                .contacts
                .values()
                .rev()
                .find(|r| {
                    r.archived() == archived && r.props.get(name).map(String::as_str) == Some(value)
                })
                .map(|r| r.id),
        }
    }

    pub fn active_by_email(&self, email: &str) -> Option<u64> {
        self.email_index.get(&email.trim().to_lowercase()).copied()
    }

    pub fn active(&self, id: u64) -> Option<&Record> {
        self.contacts.get(&id).filter(|r| !r.archived())
    }

    pub fn property_exists(&self, name: &str) -> bool {
        self.props.contains_key(name)
    }

    // ---- validation ----------------------------------------------------------------------

    /// Validates written values against the property definitions; returns them normalised.
    pub fn normalize(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, WriteError> {
        let mut out = BTreeMap::new();
        let mut issues = Vec::new();
        for (name, value) in raw {
            match self.props.get(name) {
                None => issues.push(PropIssue::new(
                    name,
                    "PROPERTY_DOESNT_EXIST",
                    format!("Property \"{name}\" does not exist"),
                )),
                Some(def) => match def.check_value(value) {
                    Ok(v) if name == "email" && self.refused_emails.contains(&v) => {
                        issues.push(PropIssue::new(
                            name,
                            "INVALID_EMAIL",
                            format!("Email address {value} is invalid"),
                        ));
                    }
                    Ok(v) => {
                        out.insert(name.clone(), v);
                    }
                    Err(issue) => issues.push(issue),
                },
            }
        }
        if issues.is_empty() {
            Ok(out)
        } else {
            Err(WriteError::InvalidProperties(issues))
        }
    }

    /// Checks unique values (email and `hasUniqueValue` properties) against other live records
    /// and against values claimed earlier in the same batch.
    fn check_unique(
        &self,
        props: &BTreeMap<String, String>,
        own_id: Option<u64>,
        claimed: &HashMap<(String, String), u64>,
    ) -> Result<(), WriteError> {
        for (name, value) in props {
            if value.is_empty() {
                continue;
            }
            if name == "email" {
                let existing = self
                    .email_index
                    .get(value)
                    .copied()
                    .or_else(|| claimed.get(&(name.clone(), value.clone())).copied());
                if let Some(existing_id) = existing
                    && Some(existing_id) != own_id
                {
                    return Err(WriteError::ContactExists { existing_id });
                }
                continue;
            }
            let unique = self.props.get(name).is_some_and(|d| d.has_unique_value);
            if !unique {
                continue;
            }
            let existing = self
                .contacts
                .values()
                .find(|r| !r.archived() && r.props.get(name) == Some(value))
                .map(|r| r.id)
                .or_else(|| claimed.get(&(name.clone(), value.clone())).copied());
            if let Some(existing_id) = existing
                && Some(existing_id) != own_id
            {
                return Err(WriteError::UniqueValueTaken {
                    property: name.clone(),
                    value: value.clone(),
                    existing_id,
                });
            }
        }
        Ok(())
    }

    // ---- writes --------------------------------------------------------------------------

    /// Validates a whole batch of creates without writing anything (all-or-nothing batches).
    pub fn precheck_creates(
        &self,
        inputs: &[BTreeMap<String, String>],
    ) -> Result<Vec<BTreeMap<String, String>>, WriteError> {
        let mut claimed: HashMap<(String, String), u64> = HashMap::new();
        let mut out = Vec::with_capacity(inputs.len());
        for (i, raw) in inputs.iter().enumerate() {
            let props = self.normalize(raw)?;
            self.check_unique(&props, None, &claimed)?;
            for (k, v) in &props {
                let unique = k == "email" || self.props.get(k).is_some_and(|d| d.has_unique_value);
                if unique && !v.is_empty() {
                    // A later duplicate in the same batch points at this (not yet created) input.
                    claimed.insert((k.clone(), v.clone()), self.next_id + i as u64);
                }
            }
            out.push(props);
        }
        Ok(out)
    }

    /// Inserts a record from already-validated properties.
    pub fn insert(
        &mut self,
        props: BTreeMap<String, String>,
        actor: &Actor,
        changes: &mut Vec<Change>,
    ) -> u64 {
        let at = self.now();
        let id = self.mint_id();
        let mut rec = Record {
            id,
            props: BTreeMap::new(),
            history: BTreeMap::new(),
            created_at: at,
            updated_at: at,
            archived_at: None,
            merged_into: None,
            indexed_at: self.index_time(id, at),
            superseded: Vec::new(),
        };
        rec.set("hs_object_id", id.to_string(), at, actor);
        rec.set("createdate", fmt_ts(at), at, actor);
        rec.set("lastmodifieddate", fmt_ts(at), at, actor);
        changes.push(Change::Created { id, at });
        for (name, value) in props {
            if value.is_empty() {
                continue;
            }
            changes.push(Change::PropertyChanged {
                id,
                at,
                name: name.clone(),
                value: value.clone(),
            });
            rec.set(&name, value, at, actor);
        }
        if let Some(email) = rec.email() {
            self.email_index.insert(email.to_string(), id);
        }
        self.contacts.insert(id, rec);
        id
    }

    /// Validates and creates one record.
    pub fn create(
        &mut self,
        raw: &BTreeMap<String, String>,
        actor: &Actor,
        changes: &mut Vec<Change>,
    ) -> Result<u64, WriteError> {
        let props = self.normalize(raw)?;
        self.check_unique(&props, None, &HashMap::new())?;
        Ok(self.insert(props, actor, changes))
    }

    /// Applies validated properties to a live record. Returns whether anything changed.
    pub fn apply_update(
        &mut self,
        id: u64,
        props: &BTreeMap<String, String>,
        actor: &Actor,
        changes: &mut Vec<Change>,
    ) -> Result<bool, WriteError> {
        if self.active(id).is_none() {
            return Err(WriteError::NotFound { id: id.to_string() });
        }
        self.check_unique(props, Some(id), &HashMap::new())?;
        let at = self.now();
        let visible_at = self.index_time(id, at);
        let rec = self.contacts.get_mut(&id).expect("checked above");
        let old_email = rec.email().map(str::to_string);
        let mut changed = false;
        for (name, value) in props {
            let current = rec.props.get(name).map(String::as_str).unwrap_or("");
            if current == value {
                continue;
            }
            if !changed {
                rec.supersede(visible_at);
            }
            changed = true;
            rec.set(name, value.clone(), at, actor);
            changes.push(Change::PropertyChanged {
                id,
                at,
                name: name.clone(),
                value: value.clone(),
            });
        }
        if changed {
            rec.touch(at);
            let new_email = rec.email().map(str::to_string);
            if old_email != new_email {
                if let Some(old) = old_email {
                    self.email_index.remove(&old);
                }
                if let Some(new) = new_email {
                    self.email_index.insert(new, id);
                }
            }
        }
        Ok(changed)
    }

    /// Validates and applies an update to one live record.
    pub fn update(
        &mut self,
        id: u64,
        raw: &BTreeMap<String, String>,
        actor: &Actor,
        changes: &mut Vec<Change>,
    ) -> Result<bool, WriteError> {
        let props = self.normalize(raw)?;
        self.apply_update(id, &props, actor, changes)
    }

    /// Archives a live record. Unknown or already archived ids are a no-op (like HubSpot's 204).
    pub fn archive(&mut self, id: u64, changes: &mut Vec<Change>) -> bool {
        if self.active(id).is_none() {
            return false;
        }
        let at = self.now();
        let rec = self.contacts.get_mut(&id).expect("checked above");
        rec.archived_at = Some(at);
        rec.updated_at = at;
        if let Some(email) = rec.email().map(str::to_string)
            && self.email_index.get(&email) == Some(&id)
        {
            self.email_index.remove(&email);
        }
        changes.push(Change::Deleted { id, at });
        true
    }

    /// The record whose primary email this is.
    pub fn id_of_email(&self, email: &str) -> Option<u64> {
        self.email_index.get(&email.trim().to_lowercase()).copied()
    }

    /// A GDPR delete: the record (live or archived) and its history are gone for good, its id
    /// unknown from now on. Unknown ids are a no-op.
    pub fn erase(&mut self, id: u64, changes: &mut Vec<Change>) -> bool {
        let Some(rec) = self.contacts.remove(&id) else {
            return false;
        };
        if let Some(email) = rec.email()
            && self.email_index.get(email) == Some(&id)
        {
            self.email_index.remove(email);
        }
        changes.push(Change::Erased { id, at: self.now() });
        true
    }

    /// Restores an archived (not merged-away) record.
    pub fn restore(&mut self, id: u64, changes: &mut Vec<Change>) -> Result<(), WriteError> {
        let Some(rec) = self.contacts.get(&id) else {
            return Err(WriteError::NotFound { id: id.to_string() });
        };
        if !rec.archived() || rec.merged_into.is_some() {
            return Err(WriteError::NotFound { id: id.to_string() });
        }
        if let Some(email) = rec.email()
            && let Some(&existing_id) = self.email_index.get(email)
        {
            return Err(WriteError::ContactExists { existing_id });
        }
        let at = self.now();
        let visible_at = self.index_time(id, at);
        let rec = self.contacts.get_mut(&id).expect("checked above");
        rec.archived_at = None;
        rec.supersede(visible_at);
        rec.touch(at);
        if let Some(email) = rec.email().map(str::to_string) {
            self.email_index.insert(email, id);
        }
        changes.push(Change::Restored { id, at });
        Ok(())
    }

    /// Merges `other` into `primary`: mints a new record carrying the combined properties
    /// (the primary's values win where set), retires both originals.
    pub fn merge(
        &mut self,
        primary: u64,
        other: u64,
        changes: &mut Vec<Change>,
    ) -> Result<u64, WriteError> {
        if primary == other {
            return Err(WriteError::Invalid(
                "Cannot merge a contact with itself: primaryObjectId and objectIdToMerge must differ"
                    .into(),
            ));
        }
        let (Some(p), Some(o)) = (self.active(primary), self.active(other)) else {
            let missing = if self.active(primary).is_none() {
                primary
            } else {
                other
            };
            return Err(WriteError::NotFound {
                id: missing.to_string(),
            });
        };
        let (p, o) = (p.clone(), o.clone());
        let at = self.now();
        let new_id = self.mint_id();
        let mut props: BTreeMap<String, String> = BTreeMap::new();
        let mut moved = 0usize;
        for (k, v) in &o.props {
            if SYSTEM_PROPERTIES.contains(&k.as_str()) {
                continue;
            }
            if !p.props.contains_key(k) {
                moved += 1;
            }
            props.insert(k.clone(), v.clone());
        }
        for (k, v) in &p.props {
            if SYSTEM_PROPERTIES.contains(&k.as_str()) {
                continue;
            }
            props.insert(k.clone(), v.clone());
        }
        let mut merged_ids: Vec<String> = Vec::new();
        for r in [&p, &o] {
            merged_ids.push(r.id.to_string());
            if let Some(prev) = r.props.get("hs_merged_object_ids") {
                merged_ids.extend(prev.split(';').map(str::to_string));
            }
        }
        props.insert("hs_merged_object_ids".into(), merged_ids.join(";"));
        if let (Some(pe), Some(oe)) = (p.email(), o.email())
            && pe != oe
        {
            let mut extra: Vec<String> = p
                .props
                .get("hs_additional_emails")
                .map(|s| s.split(';').map(str::to_string).collect())
                .unwrap_or_default();
            extra.push(oe.to_string());
            props.insert("hs_additional_emails".into(), extra.join(";"));
        }
        let created_at = p.created_at.min(o.created_at);
        // Retire the originals first so the new record can take over the email.
        for id in [primary, other] {
            let rec = self.contacts.get_mut(&id).expect("checked above");
            rec.archived_at = Some(at);
            rec.updated_at = at;
            rec.merged_into = Some(new_id);
            if let Some(email) = rec.email().map(str::to_string)
                && self.email_index.get(&email) == Some(&id)
            {
                self.email_index.remove(&email);
            }
        }
        let actor = Actor::Import;
        let mut rec = Record {
            id: new_id,
            props: BTreeMap::new(),
            history: BTreeMap::new(),
            created_at,
            updated_at: at,
            archived_at: None,
            merged_into: None,
            indexed_at: self.index_time(new_id, at),
            superseded: Vec::new(),
        };
        rec.set("hs_object_id", new_id.to_string(), at, &actor);
        rec.set("createdate", fmt_ts(created_at), at, &actor);
        rec.set("lastmodifieddate", fmt_ts(at), at, &actor);
        for (k, v) in props {
            // Carry the winning value's history over.
            let source = if p.props.contains_key(&k) { &p } else { &o };
            if let Some(h) = source.history.get(&k) {
                rec.history.insert(k.clone(), h.clone());
            }
            rec.props.insert(k, v);
        }
        if let Some(email) = rec.email() {
            self.email_index.insert(email.to_string(), new_id);
        }
        self.contacts.insert(new_id, rec);
        changes.push(Change::Merged {
            primary,
            merged: other,
            new_id,
            moved,
            at,
        });
        changes.push(Change::Deleted { id: primary, at });
        changes.push(Change::Deleted { id: other, at });
        Ok(new_id)
    }

    // ---- rendering -----------------------------------------------------------------------

    /// A record as a `SimplePublicObject`.
    pub fn render(&self, rec: &Record, sel: Selection<'_>, with_history: &[String]) -> Value {
        let mut props = Map::new();
        let mut put = |name: &str, missing: Value| {
            let v = rec
                .props
                .get(name)
                .map(|v| Value::String(v.clone()))
                .unwrap_or(missing);
            props.insert(name.to_string(), v);
        };
        match sel {
            Selection::Default => {
                for name in DEFAULT_PROPERTIES {
                    put(name, Value::Null);
                }
            }
            Selection::Named(names) => {
                for name in ALWAYS_RETURNED {
                    put(name, Value::Null);
                }
                for name in names {
                    if self.props.contains_key(name) {
                        put(name, Value::Null);
                    }
                }
            }
            Selection::Written(names) => {
                for name in ALWAYS_RETURNED {
                    put(name, Value::Null);
                }
                for name in names {
                    put(name, Value::String(String::new()));
                }
            }
            Selection::All => {
                for (k, v) in &rec.props {
                    props.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        let mut obj = Map::new();
        obj.insert("id".into(), json!(rec.id.to_string()));
        obj.insert("properties".into(), Value::Object(props));
        if !with_history.is_empty() {
            let mut hist = Map::new();
            for name in with_history {
                if !self.props.contains_key(name) {
                    continue;
                }
                let entries: Vec<Value> = rec
                    .history
                    .get(name)
                    .map(|h| {
                        h.iter()
                            .rev()
                            .map(|e| {
                                let mut m = Map::new();
                                m.insert("value".into(), json!(e.value));
                                m.insert("timestamp".into(), json!(fmt_ts(e.timestamp)));
                                m.insert("sourceType".into(), json!(e.source_type));
                                if let Some(s) = &e.source_id {
                                    m.insert("sourceId".into(), json!(s));
                                }
                                Value::Object(m)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                hist.insert(name.clone(), Value::Array(entries));
            }
            obj.insert("propertiesWithHistory".into(), Value::Object(hist));
        }
        obj.insert("createdAt".into(), json!(fmt_ts(rec.created_at)));
        obj.insert("updatedAt".into(), json!(fmt_ts(rec.updated_at)));
        obj.insert("archived".into(), json!(rec.archived()));
        if let Some(at) = rec.archived_at {
            obj.insert("archivedAt".into(), json!(fmt_ts(at)));
        }
        Value::Object(obj)
    }

    /// Ids of the live records, for checks in tests.
    #[cfg(test)]
    pub fn live_ids(&self) -> HashSet<u64> {
        self.contacts
            .values()
            .filter(|r| !r.archived())
            .map(|r| r.id)
            .collect()
    }
}

/// Distinct-input check shared by batch endpoints.
pub(crate) fn first_duplicate<'a>(ids: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = HashSet::new();
    ids.into_iter().find(|id| !seen.insert(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const API: Actor = Actor::Integration { app_id: 1 };

    #[test]
    fn create_update_archive_roundtrip() {
        let mut s = Store::new(100001);
        let mut ch = Vec::new();
        let id = s
            .create(
                &props(&[("email", "A@x.com"), ("firstname", "A")]),
                &API,
                &mut ch,
            )
            .unwrap();
        assert_eq!(id, 100001);
        assert_eq!(s.active_by_email("a@X.com"), Some(id));
        assert!(matches!(ch[0], Change::Created { .. }));
        assert_eq!(ch.len(), 3);

        let mut ch = Vec::new();
        let dup = s.create(&props(&[("email", "a@x.com")]), &API, &mut ch);
        assert_eq!(dup, Err(WriteError::ContactExists { existing_id: id }));

        let mut ch = Vec::new();
        assert!(
            s.update(id, &props(&[("firstname", "B")]), &API, &mut ch)
                .unwrap()
        );
        assert!(
            !s.update(id, &props(&[("firstname", "B")]), &API, &mut ch)
                .unwrap()
        );
        assert_eq!(ch.len(), 1);

        assert!(s.archive(id, &mut ch));
        assert!(!s.archive(id, &mut ch));
        assert_eq!(s.active_by_email("a@x.com"), None);
        // An archived email can be used again.
        let id2 = s
            .create(&props(&[("email", "a@x.com")]), &API, &mut ch)
            .unwrap();
        assert_ne!(id, id2);
        // ... so restoring the first one conflicts.
        assert_eq!(
            s.restore(id, &mut ch),
            Err(WriteError::ContactExists { existing_id: id2 })
        );
    }

    #[test]
    fn unknown_and_read_only_properties_are_reported_together() {
        let s = Store::new(1);
        let err = s
            .normalize(&props(&[("pronouns", "they"), ("createdate", "1")]))
            .unwrap_err();
        let WriteError::InvalidProperties(issues) = err else {
            panic!("expected invalid properties")
        };
        let codes: Vec<_> = issues.iter().map(|i| i.code).collect();
        assert_eq!(codes, vec!["READ_ONLY_VALUE", "PROPERTY_DOESNT_EXIST"]);
    }

    #[test]
    fn batch_precheck_sees_duplicates_within_the_batch() {
        let s = Store::new(500);
        let err = s
            .precheck_creates(&[
                props(&[("email", "x@y.com")]),
                props(&[("email", "X@y.com")]),
            ])
            .unwrap_err();
        assert_eq!(err, WriteError::ContactExists { existing_id: 500 });
    }

    #[test]
    fn merge_mints_new_id_and_retires_both() {
        let mut s = Store::new(1);
        let mut ch = Vec::new();
        let a = s
            .create(
                &props(&[("email", "a@x.com"), ("firstname", "Ann")]),
                &API,
                &mut ch,
            )
            .unwrap();
        let b = s
            .create(
                &props(&[("email", "b@x.com"), ("firstname", "Bob"), ("phone", "123")]),
                &API,
                &mut ch,
            )
            .unwrap();
        let mut ch = Vec::new();
        let n = s.merge(a, b, &mut ch).unwrap();
        assert!(n != a && n != b);
        assert_eq!(s.live_ids(), HashSet::from([n]));
        let rec = &s.contacts[&n];
        assert_eq!(rec.props["firstname"], "Ann");
        assert_eq!(rec.props["phone"], "123");
        assert_eq!(rec.props["email"], "a@x.com");
        assert_eq!(rec.props["hs_merged_object_ids"], format!("{a};{b}"));
        assert_eq!(s.active_by_email("a@x.com"), Some(n));
        assert_eq!(s.contacts[&a].merged_into, Some(n));
        assert!(matches!(ch[0], Change::Merged { new_id, .. } if new_id == n));
        assert_eq!(ch.len(), 3);
        assert!(s.merge(a, n, &mut ch).is_err());
    }
}

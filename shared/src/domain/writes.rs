//! Our recent writes to a CRM record, kept on its link to recognise a CRM user's edit one of
//! them overwrote.
//!
//! Neither CRM offers a conditional write, so a user's edit of a field can land between our
//! read of the record and our write of it, and our write replaces it. Each write is kept with
//! when the record it was planned on was last modified (`read_at`), when it landed, and per
//! field the value read and the value written (both by the CRM's clock). A value reported set
//! inside one write's span — by the user's change event, the write's echo, or the record's
//! field history — that is neither the value the write read nor the one it wrote, and is the
//! last such value there, is what the write replaced: a user's edit it overwrote.
//!
//! A write stays unchecked until something has shown what it replaced (its echo, or a check of
//! the record's history; see `sync::check`), because the user's change event can be lost.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ContactFields, Field, FieldPatch, Replacement, Reported};

/// One write of ours to a CRM record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrmWrite {
    /// When the record the write was planned on was last modified.
    pub read_at: Option<DateTime<Utc>>,
    /// When the write landed (`None` while it is in flight).
    pub landed: Option<DateTime<Utc>>,
    pub fields: BTreeMap<Field, FieldWrite>,
    /// Whether something has shown what the write replaced (its echo, or the record's history).
    #[serde(default)]
    pub checked: bool,
}

/// One field of a [`CrmWrite`]: the value it read, and the one it wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldWrite {
    pub read: Option<String>,
    pub written: Option<String>,
    /// The value written is a CRM user's that one of our writes overwrote, put back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restores: bool,
}

fn normal(field: Field, value: Option<String>) -> Option<String> {
    let mut f = ContactFields::default();
    f.set(field, value);
    f.get(field).map(str::to_owned)
}

impl CrmWrite {
    /// The write of `patch` planned on `read` (the record's fields, last modified at `read_at`).
    pub fn planned(
        read: &ContactFields,
        read_at: Option<DateTime<Utc>>,
        patch: &FieldPatch,
    ) -> Self {
        let fields = patch
            .0
            .iter()
            .map(|(field, value)| {
                (
                    *field,
                    FieldWrite {
                        read: read.get(*field).map(str::to_owned),
                        written: normal(*field, value.clone()),
                        restores: false,
                    },
                )
            })
            .collect();
        Self {
            read_at,
            landed: None,
            fields,
            checked: false,
        }
    }

    /// The write, marked as putting back the users' values in `restored` it writes.
    pub fn restoring(mut self, restored: &FieldPatch) -> Self {
        for (field, w) in self.fields.iter_mut() {
            if restored
                .get(*field)
                .is_some_and(|v| normal(*field, v.clone()) == w.written)
            {
                w.restores = true;
            }
        }
        self
    }

    /// The write, landed at `at` (`now` when the CRM did not say).
    pub fn landed(self, at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        Self {
            landed: Some(at.unwrap_or(now)),
            ..self
        }
    }

    /// Whether `record` holds every value the write wrote.
    pub fn holds(&self, record: &ContactFields) -> bool {
        self.fields
            .iter()
            .all(|(f, w)| record.get(*f) == w.written.as_deref())
    }

    /// Whether a value a user's change event reports set at `at` falls inside the write's span:
    /// after the record it read was last modified, up to its landing. Pipedrive says both in
    /// whole seconds while its events carry milliseconds: a landing second stands for all of
    /// it (an edit in it was made before our write or is what the record holds now), but an
    /// edit in the second the record read was modified may have come before that modification
    /// as well as after our read, so only a later one counts (the write's echo, or a check of
    /// the record's history, says exactly what it replaced).
    fn spans(&self, at: DateTime<Utc>) -> bool {
        let (Some(read_at), Some(landed)) = (self.read_at, self.landed) else {
            return false;
        };
        let after = if read_at.timestamp_subsec_nanos() == 0 {
            at > whole_second_end(read_at)
        } else {
            at >= read_at
        };
        after && at <= whole_second_end(landed)
    }

    /// The value of `field` this write replaced, as a user's change event reports it: the last
    /// value reported set inside the write's span (`reported` oldest first), unless that is
    /// the value it read or the one it wrote.
    fn replaced_by_span(&self, field: Field, reported: &[&Reported]) -> Option<Option<String>> {
        let w = self.fields.get(&field)?;
        let last = reported
            .iter()
            .filter(|r| r.replaced_by.is_none() && self.spans(r.at))
            .map(|r| normal(field, r.value.clone()))
            .next_back()?;
        (last != w.read && last != w.written).then_some(last)
    }

    /// Whether this write is one a report naming a write (by its landing and what it wrote to
    /// `field`) may mean (one whose landing was not confirmed may be any).
    fn named_by(&self, field: Field, by: &Replacement) -> bool {
        self.landed.is_none_or(|l| l == by.landed)
            && self
                .fields
                .get(&field)
                .is_some_and(|w| w.written == normal(field, by.written.clone()))
    }
}

/// The end of `at`'s second when `at` is in whole seconds (it stands for all of it).
fn whole_second_end(at: DateTime<Utc>) -> DateTime<Utc> {
    if at.timestamp_subsec_nanos() == 0 {
        at + chrono::Duration::milliseconds(999)
    } else {
        at
    }
}

/// How many of our writes a link keeps.
const KEPT: usize = 16;
/// How long a checked write is kept (webhooks come within seconds, retries within hours).
const KEPT_HOURS: i64 = 1;

/// Our recent writes to one CRM record (oldest first), and the users' values a sync has
/// already resolved as overwritten.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentWrites {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<CrmWrite>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolved: BTreeMap<Field, Vec<Option<String>>>,
}

impl RecentWrites {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.resolved.is_empty()
    }

    /// With `write` added (landed, or attempted: a write that may have landed, whose values
    /// are then known as ours). Checked writes over an hour older than it, and the oldest
    /// beyond the last sixteen, go; unchecked ones stay while there is room.
    pub fn with(mut self, write: CrmWrite) -> Self {
        if let Some(at) = write.landed {
            let horizon = at - chrono::Duration::hours(KEPT_HOURS);
            self.writes
                .retain(|w| !w.checked || w.landed.is_some_and(|l| l >= horizon));
        }
        self.writes.push(write);
        while self.writes.len() > KEPT {
            let drop = self
                .writes
                .iter()
                .position(|w| w.checked)
                .unwrap_or_default();
            self.writes.remove(drop);
        }
        self
    }

    /// The reported values our writes overwrote: per field, what a write replaced unseen (the
    /// latest write's first), while the record (`current`) still holds what our last write of
    /// the field wrote (else a newer change is there to sync), no later write of ours read it
    /// (then it was seen), and no sync has resolved it yet.
    pub fn overwritten(&self, reported: &[Reported], current: &ContactFields) -> FieldPatch {
        let mut out = FieldPatch::default();
        for field in Field::ALL {
            let Some(last) = self
                .writes
                .iter()
                .rev()
                .find(|w| w.landed.is_some() && w.fields.contains_key(&field))
            else {
                continue;
            };
            let holds = last
                .fields
                .get(&field)
                .is_some_and(|w| current.get(field) == w.written.as_deref());
            if holds && let Some(value) = self.lost(field, reported) {
                out.insert(field, value);
            }
        }
        out
    }

    /// Whether `reported` shows a value one of our writes replaced unseen, whatever the record
    /// holds now.
    pub fn foreign(&self, reported: &[Reported]) -> bool {
        Field::ALL
            .into_iter()
            .any(|field| self.lost(field, reported).is_some())
    }

    /// The value of `field` a write of ours replaced unseen (the latest write's first). A
    /// report naming a write (its echo, or the record's history) says exactly what that write
    /// replaced; several writes can share a landing second and a value (Pipedrive's whole
    /// seconds; a name's other half sent back as read), so it is lost only if none of them
    /// read it. A value is lost only while nothing else changed the field since (a later edit
    /// supersedes it); one a sync resolved is not lost again.
    fn lost(&self, field: Field, reported: &[Reported]) -> Option<Option<String>> {
        let mut of_field: Vec<&Reported> = reported.iter().filter(|r| r.field == field).collect();
        of_field.sort_by_key(|r| r.at);
        let resolved = self.resolved.get(&field);
        for (i, w) in self.writes.iter().enumerate().rev() {
            let Some(fw) = w.fields.get(&field) else {
                continue;
            };
            let named = of_field.iter().rfind(|r| {
                r.replaced_by
                    .as_ref()
                    .is_some_and(|by| w.named_by(field, by))
            });
            let value = match named {
                Some(r) => {
                    let v = normal(field, r.value.clone());
                    let by = r.replaced_by.as_ref().expect("named");
                    let read_by_one = self.writes.iter().any(|c| {
                        c.named_by(field, by) && c.fields.get(&field).is_some_and(|f| f.read == v)
                    });
                    if read_by_one || v == fw.written {
                        continue;
                    }
                    v
                }
                // A user's change event: its time and our spans can share a whole second
                // (Pipedrive's), so a value any of our writes read was seen, not overwritten.
                None => match w.replaced_by_span(field, &of_field) {
                    Some(v)
                        if !self
                            .writes
                            .iter()
                            .any(|o| o.fields.get(&field).is_some_and(|f| f.read == v)) =>
                    {
                        v
                    }
                    _ => continue,
                },
            };
            // Lost only while nothing but our own writes changed the field since: each later
            // write of it read what the one before wrote (a user's later edit supersedes it).
            let mut before = fw.written.clone();
            // A value one of our writes wrote (one whose landing we could not confirm among
            // them) that was planned by the time this one landed is ours, not a user's — unless
            // that write was putting back a user's value this one had overwritten.
            let ours = self.writes.iter().any(|o| {
                o.fields
                    .get(&field)
                    .is_some_and(|f| f.written == value && !f.restores)
                    && match (o.read_at, w.landed) {
                        (Some(read), Some(landed)) => read <= landed,
                        _ => true,
                    }
            });
            if ours {
                continue;
            }
            let unbroken = self.writes[i + 1..]
                .iter()
                .filter(|later| later.landed.is_some())
                .all(|later| {
                    let Some(f) = later.fields.get(&field) else {
                        return true;
                    };
                    let ok = f.read == before;
                    before = f.written.clone();
                    ok
                });
            // Put back already by a later write of ours that landed: resolved.
            let restored = self.writes[i + 1..].iter().any(|later| {
                later.landed.is_some()
                    && later
                        .fields
                        .get(&field)
                        .is_some_and(|f| f.restores && f.written == value)
            });
            if !unbroken || restored || resolved.is_some_and(|r| r.contains(&value)) {
                continue;
            }
            return Some(value);
        }
        None
    }

    /// What the record's field history (`history`, oldest first, ours included) says each of
    /// our unchecked writes replaced: per field it wrote, the value before its own entry (made
    /// through the API: a user's edit to the same value is not it), as a report naming it. A
    /// write whose entry is not there changed nothing of that field.
    pub fn replaced_in(&self, history: &[Reported]) -> Vec<Reported> {
        let mut out = Vec::new();
        for w in self.writes.iter().filter(|w| !w.checked) {
            let Some(landed) = w.landed else {
                continue;
            };
            // Its own entry: its value, stamped when it landed — in that second where the CRM
            // says whole seconds (Pipedrive), else give or take a second after its read (a
            // property's timestamp and the record's modification time need not be equal). A
            // field it sent unchanged (a name's other half) has none.
            let (from, to) = if landed.timestamp_subsec_nanos() == 0 {
                (landed, whole_second_end(landed))
            } else {
                let slack = chrono::Duration::seconds(1);
                let from = landed - slack;
                (w.read_at.map_or(from, |r| r.max(from)), landed + slack)
            };
            for (field, fw) in &w.fields {
                let of_field: Vec<&Reported> =
                    history.iter().filter(|r| r.field == *field).collect();
                let own = of_field.iter().rposition(|r| {
                    r.via_api
                        && r.at >= from
                        && r.at <= to
                        && normal(*field, r.value.clone()) == fw.written
                });
                if let Some(i) = own
                    && i > 0
                {
                    out.push(Reported::replaced(
                        *field,
                        of_field[i - 1].value.clone(),
                        landed,
                        fw.written.clone(),
                    ));
                }
            }
        }
        out
    }

    /// With `values` resolved: a user's value found overwritten, once a sync has resolved it,
    /// is not reported again (a repeated webhook, a later check).
    pub fn resolve(mut self, values: &FieldPatch) -> Self {
        for (field, value) in &values.0 {
            let value = normal(*field, value.clone());
            let seen = self.resolved.entry(*field).or_default();
            if !seen.contains(&value) {
                seen.push(value);
            }
            if seen.len() > KEPT {
                seen.remove(0);
            }
        }
        self
    }

    /// When each landed write that nothing has checked yet landed.
    pub fn unchecked(&self) -> Vec<DateTime<Utc>> {
        self.writes
            .iter()
            .filter(|w| !w.checked)
            .filter_map(|w| w.landed)
            .collect()
    }

    /// Whether a landed write is still to be checked.
    pub fn is_unchecked(&self) -> bool {
        !self.unchecked().is_empty()
    }

    /// Since when a check reads the record's history: the earliest span of an unchecked write.
    pub fn check_since(&self) -> Option<DateTime<Utc>> {
        self.writes
            .iter()
            .filter(|w| !w.checked && w.landed.is_some())
            .filter_map(|w| w.read_at.or(w.landed))
            .min()
    }

    /// The fields our unchecked writes wrote.
    pub fn unchecked_fields(&self) -> Vec<Field> {
        let mut fields: Vec<Field> = self
            .writes
            .iter()
            .filter(|w| !w.checked && w.landed.is_some())
            .flat_map(|w| w.fields.keys().copied())
            .collect();
        fields.sort();
        fields.dedup();
        fields
    }

    /// With the writes `echo` speaks of checked: an unchecked write each of whose changed
    /// fields (read differently from written) a report names (by its landing and the value it
    /// wrote).
    pub fn confirmed_by(mut self, echo: &[Reported]) -> Self {
        for w in self.writes.iter_mut().filter(|w| !w.checked) {
            let mut changed = w
                .fields
                .iter()
                .filter(|(_, f)| f.read != f.written)
                .peekable();
            if changed.peek().is_none() {
                continue;
            }
            let named = changed.all(|(field, _)| {
                echo.iter().any(|r| {
                    r.field == *field
                        && r.replaced_by
                            .as_ref()
                            .is_some_and(|b| w.named_by(*field, b))
                })
            });
            if named {
                w.checked = true;
            }
        }
        self
    }

    /// With the writes that landed at `landings` checked.
    pub fn checked(mut self, landings: &[DateTime<Utc>]) -> Self {
        for w in &mut self.writes {
            if w.landed.is_some_and(|l| landings.contains(&l)) {
                w.checked = true;
            }
        }
        self
    }
}

#[cfg(test)]
mod tests;

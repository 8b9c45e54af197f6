//! The invariants, checked at quiescence (faults off, one Sync Now, the DLQ replayed and
//! drained).

use std::collections::{BTreeMap, BTreeSet};

use shared::domain::{ContactFields, LinkStatus, Provider};
use shared::ports::{ConflictLog, ContactStore, LinkStore};

use crate::workload::Oracle;
use crate::world::{World, tenant};

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Individual assertions evaluated.
    pub checked: usize,
    pub violations: Vec<String>,
    /// CRM users' edits our concurrent write of the same field overwrote (neither CRM has a
    /// conditional write), and how many of them had their webhook dropped: those only the
    /// echo of our write or a check of the record's history can have found.
    pub overwrites: usize,
    pub overwrites_unreported: usize,
}

impl Report {
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.violations.push(what());
        }
    }
}

fn synced_fields(f: &ContactFields) -> ContactFields {
    f.clone().normalized()
}

pub async fn invariants(world: &World, oracle: &Oracle) -> Report {
    let mut r = Report::default();
    let t = tenant();
    let contacts = world
        .store
        .list(&t, None, 100_000)
        .await
        .expect("list")
        .items;
    let links = world.store.links_for_tenant(&t).await.expect("links");
    let conflicts = world
        .store
        .conflicts(&t, 1_000_000)
        .await
        .expect("conflicts");
    let (queued, dead) = world.queue.counts();
    r.expect(queued == 0, || format!("{queued} jobs still queued"));
    r.expect(dead == 0, || {
        format!(
            "{dead} jobs in the DLQ after replay: {:?}",
            world.queue.dead_letters()
        )
    });

    // Exactly one link per (contact, CRM), none left mid-create.
    let mut per_pair: BTreeMap<(String, Provider), usize> = BTreeMap::new();
    for l in &links {
        *per_pair
            .entry((l.contact_id.clone(), l.provider))
            .or_default() += 1;
        r.expect(!l.is_intent(), || format!("an intent was left: {l:?}"));
    }
    for ((contact, provider), n) in &per_pair {
        r.expect(*n == 1, || {
            format!("{n} {provider} links for contact {contact}")
        });
    }

    let live_emails: BTreeSet<String> = contacts
        .iter()
        .filter(|c| !c.deleted)
        .filter_map(|c| c.fields.email.clone())
        .collect();
    for provider in Provider::ALL {
        let records = world.crm(provider).records();
        // No CRM record without a live app contact, and none twice.
        let mut by_email: BTreeMap<String, usize> = BTreeMap::new();
        for rec in records.iter().filter(|r| !r.archived) {
            let email = rec.fields.email.clone().unwrap_or_default();
            *by_email.entry(email.clone()).or_default() += 1;
            r.expect(live_emails.contains(&email), || {
                format!(
                    "live {provider} record {} ({email}) has no live app contact",
                    rec.id
                )
            });
        }
        for (email, n) in &by_email {
            r.expect(*n == 1, || {
                format!("{n} live {provider} records for {email}")
            });
        }
        for c in &contacts {
            let link = links
                .iter()
                .find(|l| l.contact_id == c.id && l.provider == provider);
            let record = link.and_then(|l| world.crm(provider).record(&l.external_id));
            if c.deleted {
                r.expect(record.as_ref().is_none_or(|rec| rec.archived), || {
                    format!("deleted contact {} is live in {provider}", c.id)
                });
                continue;
            }
            let Some(link) = link else {
                r.expect(false, || {
                    format!("contact {} was never linked with {provider}", c.id)
                });
                continue;
            };
            if link.status == LinkStatus::Deleted {
                // Deleted in the CRM: the app keeps the contact and nothing is recreated.
                r.expect(record.as_ref().is_none_or(|rec| rec.archived), || {
                    format!(
                        "contact {}: tombstoned {provider} link to a live record",
                        c.id
                    )
                });
                continue;
            }
            r.expect(link.status == LinkStatus::Synced, || {
                format!(
                    "contact {}: {provider} link is {:?} ({:?})",
                    c.id, link.status, link.last_error
                )
            });
            match record.filter(|rec| !rec.archived) {
                None => r.expect(false, || {
                    format!(
                        "contact {}: linked {provider} record {} is gone",
                        c.id, link.external_id
                    )
                }),
                Some(rec) => {
                    let (app, crm) = (synced_fields(&c.fields), synced_fields(&rec.fields));
                    r.expect(app == crm, || {
                        format!("contact {}: app {app:?} but {provider} {crm:?}", c.id)
                    });
                    r.expect(link.base.clone().normalized() == app, || {
                        format!(
                            "contact {}: {provider} base {:?} is not the agreed {app:?}",
                            c.id, link.base
                        )
                    });
                }
            }
        }
    }

    // No lost update: each field ends at its last write, or a conflict over it was logged.
    for ((email, field), w) in &oracle.last {
        let Some(c) = contacts.iter().find(|c| {
            !c.deleted
                && c.fields
                    .email
                    .as_deref()
                    .is_some_and(|e| oracle.key(e) == *email)
        }) else {
            continue;
        };
        if oracle.uncertain.contains(email) {
            continue;
        }
        let now = c.fields.get(*field).map(str::to_owned);
        // Never lost silently: the field ends at its last write, or a conflict planned after
        // that write (so it saw it) logged it as the losing side.
        let resolved_here = conflicts.iter().any(|x| {
            x.contact_id == c.id
                && x.conflict.field == *field
                && x.conflict.at >= w.at
                && (x.conflict.app_value == w.value || x.conflict.crm_value == w.value)
        });
        // A user's edit our write overwrote is found from the values its webhook reports, or,
        // that webhook dropped, from our write's echo or a check of the record's history.
        let unreported = w.crm.as_ref().is_some_and(|(provider, record)| {
            let crm = world.crm(*provider);
            let key = (record.clone(), *field);
            let overwritten = crm
                .overwritten
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key);
            overwritten
                && crm
                    .feed
                    .unreported
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&key)
        });
        if now != w.value && !resolved_here && unreported {
            r.expect(false, || {
                format!(
                    "lost update: contact {} {field:?}: the CRM user's {:?} (op {}) was overwritten by our write of {now:?} planned before it; its webhook was dropped and neither the echo nor a check found it",
                    c.id, w.value, w.op
                )
            });
            continue;
        }
        if now == w.value {
            r.checked += 1;
            continue;
        }
        r.expect(resolved_here, || {
            format!(
                "lost update: contact {} {field:?} is {now:?}, the last write (op {}) was {:?}, and no conflict since logged it",
                c.id, w.op, w.value
            )
        });
        // The last write lost a logged conflict: only to a write it was concurrent with, one
        // made before it that no sync had seen when it was made (had one seen it, the later
        // write was made on top of it and must stand).
        let writes = oracle
            .all
            .get(&(email.clone(), *field))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let winner = writes.iter().rev().find(|x| x.value == now && x.at <= w.at);
        let seen = winner.and_then(|x| world.seen.first(*field, x.value.as_deref()));
        r.expect(
            winner.is_some() && seen.is_none_or(|seen| seen >= w.at),
            || match winner {
                None => format!(
                    "contact {} {field:?} is {now:?}, which no user wrote before its last write (op {}, {:?})",
                    c.id, w.op, w.value
                ),
                Some(x) => format!(
                    "contact {} {field:?}: the last write (op {}, {:?}) lost to op {}'s {:?}, which a sync had seen at {seen:?}, before the last write was made at {}: they were not concurrent",
                    c.id, w.op, w.value, x.op, x.value, w.at
                ),
            },
        );
    }
    for provider in Provider::ALL {
        let crm = world.crm(provider);
        let over = crm.overwritten.lock().unwrap_or_else(|p| p.into_inner());
        let unreported = crm
            .feed
            .unreported
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        r.overwrites += over.len();
        r.overwrites_unreported += over.intersection(&unreported).count();
    }
    r
}

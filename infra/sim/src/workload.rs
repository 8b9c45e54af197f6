//! The users: operations on all three sides, drawn from the seed, and the record of every
//! write they made (the oracle the no-lost-update invariant is checked against).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use shared::domain::{
    ChangeEvent, ChangeKind, Contact, ContactFields, Field, FieldPatch, Job, LinkStatus, Origin,
    Provider,
};
use shared::ports::{ContactStore, LinkStore};

use crate::world::{World, tenant};

/// The fields users edit (emails stay: an email change is another story).
const EDITED: [Field; 3] = [Field::FirstName, Field::LastName, Field::JobTitle];

/// Every user write, for the invariants.
#[derive(Default)]
pub struct Oracle {
    /// The last write of each field of each contact (by email): the op, when, and the value.
    pub last: BTreeMap<(String, Field), Write>,
    /// Every write of each field of each contact (by email), in the order they were made.
    pub all: BTreeMap<(String, Field), Vec<Write>>,
    /// Contacts whose values a CRM delete may have cut short (an edit made in the CRM just
    /// before the record was deleted there need not reach the app).
    pub uncertain: BTreeSet<String>,
    /// A contact's later emails, each to its first one (the key the writes are kept under):
    /// its writes stay one contact's whichever email a side shows at the time.
    pub aliases: BTreeMap<String, String>,
    /// How many operations of each kind ran.
    pub counts: BTreeMap<&'static str, usize>,
}

/// A user's write of one field.
#[derive(Debug, Clone)]
pub struct Write {
    pub op: usize,
    pub at: DateTime<Utc>,
    pub value: Option<String>,
    /// The CRM record a CRM user's write went to.
    pub crm: Option<(Provider, String)>,
}

impl Oracle {
    /// The key a contact's writes are kept under: the first email of the contact `email` is.
    pub fn key(&self, email: &str) -> String {
        self.aliases
            .get(email)
            .cloned()
            .unwrap_or_else(|| email.to_string())
    }

    fn wrote(
        &mut self,
        world: &World,
        email: &str,
        field: Field,
        op: usize,
        value: Option<String>,
    ) {
        let at = world.sched.now();
        let write = Write {
            op,
            at,
            value,
            crm: None,
        };
        let key = (self.key(email), field);
        self.all.entry(key.clone()).or_default().push(write.clone());
        self.last.insert(key, write);
    }

    /// The contact's email changed (in the app or a CRM): its writes stay its own.
    fn renamed(&mut self, old: &str, new: &str) {
        let key = self.key(old);
        self.aliases.insert(new.to_string(), key);
    }

    fn wrote_in_crm(&mut self, email: &str, field: Field, crm: (Provider, String)) {
        if let Some(w) = self.last.get_mut(&(self.key(email), field)) {
            w.crm = Some(crm);
        }
    }

    /// The contact's values may have been cut short (a CRM delete, a merge).
    fn uncertain(&mut self, email: &str) {
        self.uncertain.insert(self.key(email));
    }
}

fn app_event(contact: &str, kind: ChangeKind) -> Job {
    Job::Change(ChangeEvent::new(tenant(), Origin::App, contact, kind))
}

async fn live_contacts(world: &World) -> Vec<Contact> {
    let page = world
        .store
        .list(&tenant(), None, 100_000)
        .await
        .expect("list");
    page.items.into_iter().filter(|c| !c.deleted).collect()
}

/// The record a contact's link in a CRM points to, and whether the link is a tombstone.
async fn link_target(world: &World, contact: &str, provider: Provider) -> Option<(String, bool)> {
    let link = world
        .store
        .link_for_contact(&tenant(), contact, provider)
        .await
        .expect("link")?;
    (!link.is_placeholder()).then(|| (link.external_id.clone(), link.status == LinkStatus::Deleted))
}

/// The linked, live record of a contact in a CRM.
async fn linked_record(world: &World, contact: &str, provider: Provider) -> Option<String> {
    let link = world
        .store
        .link_for_contact(&tenant(), contact, provider)
        .await
        .expect("link")?;
    if link.status == LinkStatus::Deleted || link.is_placeholder() {
        return None;
    }
    let record = world.crm(provider).record(&link.external_id)?;
    (!record.archived).then_some(record.id)
}

fn pick_provider(world: &World) -> Provider {
    Provider::ALL[world.sched.below(2)]
}

/// An app edit, as the API makes it: the store write, then (unless `lost`) the job.
async fn app_edit(world: &World, c: &Contact, field: Field, value: &str, lost: bool) {
    let mut c = c.clone();
    c.fields.set(field, Some(value.to_string()));
    c.last_app_modified = world.sched.now();
    world.store.update(&c).await.expect("app edit");
    if !lost {
        world.queue.send(app_event(&c.id, ChangeKind::Upsert), 0);
    }
}

fn crm_edit(world: &World, provider: Provider, record: &str, field: Field, value: &str) {
    let mut patch = FieldPatch::default();
    patch.insert(field, Some(value.to_string()));
    world.crm(provider).user_edit(record, &patch);
}

/// Runs user operation number `op`.
pub async fn user_op(world: &World, oracle: &mut Oracle, op: usize) {
    let contacts = live_contacts(world).await;
    let roll = world.sched.below(110);
    let field = EDITED[world.sched.below(EDITED.len())];
    let some = (!contacts.is_empty()).then(|| contacts[world.sched.below(contacts.len())].clone());
    let mut detail = String::new();
    let kind = match (roll, some) {
        (0..15, _) | (_, None) => {
            let id = format!("c{op}");
            let email = format!("p{op}@sim.test");
            let mut fields = ContactFields {
                email: Some(email.clone()),
                first_name: Some(format!("F{op}")),
                ..Default::default()
            };
            if world.sched.chance(0.3) {
                fields.pronouns = Some("they/them".into());
            }
            let c = Contact::new(tenant(), id.clone(), fields, world.sched.now());
            world.store.insert(&c).await.expect("app create");
            oracle.wrote(world, &email, Field::FirstName, op, Some(format!("F{op}")));
            world.queue.send(app_event(&id, ChangeKind::Upsert), 0);
            detail = id;
            "app create"
        }
        (15..42, Some(c)) => {
            let value = format!("app{op}");
            app_edit(world, &c, field, &value, false).await;
            detail = format!("{} = {value}", c.id);
            oracle.wrote(
                world,
                c.fields.email.as_deref().unwrap_or_default(),
                field,
                op,
                Some(value),
            );
            "app edit"
        }
        (42..45, Some(c)) => {
            // Saved, but the job was never queued (the enqueue failed): Sync Now sweeps it.
            let value = format!("app{op}");
            app_edit(world, &c, field, &value, true).await;
            detail = format!("{} = {value}", c.id);
            oracle.wrote(
                world,
                c.fields.email.as_deref().unwrap_or_default(),
                field,
                op,
                Some(value),
            );
            "app edit, job lost"
        }
        (45..48, Some(c)) => {
            let mut gone = c.clone();
            gone.deleted = true;
            gone.last_app_modified = world.sched.now();
            world.store.update(&gone).await.expect("app delete");
            world.queue.send(app_event(&c.id, ChangeKind::Delete), 0);
            detail = c.id;
            "app delete"
        }
        (48..80, Some(c)) => {
            let provider = pick_provider(world);
            let Some(record) = linked_record(world, &c.id, provider).await else {
                return;
            };
            let value = format!("{}{op}", provider.display_name());
            crm_edit(world, provider, &record, field, &value);
            detail = format!("{} {provider} {record} = {value}", c.id);
            let email = c.fields.email.clone().unwrap_or_default();
            oracle.wrote(world, &email, field, op, Some(value));
            oracle.wrote_in_crm(&email, field, (provider, record));
            "crm edit"
        }
        (80..88, Some(c)) => {
            // The same field edited in the app and in a CRM at once: neither saw the other.
            let provider = pick_provider(world);
            let Some(record) = linked_record(world, &c.id, provider).await else {
                return;
            };
            let email = c.fields.email.clone().unwrap_or_default();
            let crm_value = format!("{}{op}", provider.display_name());
            crm_edit(world, provider, &record, field, &crm_value);
            let app_value = format!("app{op}");
            app_edit(world, &c, field, &app_value, false).await;
            // The later of the two in real time is the app's; a conflict must be logged if the
            // CRM's wins.
            detail = format!(
                "{} {provider} {record} = {crm_value}, app = {app_value}",
                c.id
            );
            oracle.wrote(world, &email, field, op, Some(crm_value));
            oracle.wrote(world, &email, field, op, Some(app_value));
            "same field on two sides"
        }
        (88..93, _) => {
            let provider = pick_provider(world);
            let email = format!("u{op}@sim.test");
            let value = format!("U{op}");
            let fields = ContactFields {
                email: Some(email.clone()),
                first_name: Some(value.clone()),
                ..Default::default()
            };
            let Some(id) = world.crm(provider).user_create(&fields) else {
                return;
            };
            detail = format!("{provider} {id} {email}");
            oracle.wrote(world, &email, Field::FirstName, op, Some(value));
            "crm create"
        }
        (93..96, Some(c)) => {
            let provider = pick_provider(world);
            let Some(record) = linked_record(world, &c.id, provider).await else {
                return;
            };
            world.crm(provider).user_archive(&record);
            detail = format!("{} {provider} {record}", c.id);
            oracle.uncertain(c.fields.email.as_deref().unwrap_or_default());
            "crm delete"
        }
        (100..103, Some(a)) => {
            // Two people merged in a CRM: the survivor stays with the first one's contact, the
            // other contact keeps living in the app without a record there.
            let provider = pick_provider(world);
            let b = contacts[world.sched.below(contacts.len())].clone();
            if a.id == b.id {
                return;
            }
            let (Some(ra), Some(rb)) = (
                linked_record(world, &a.id, provider).await,
                linked_record(world, &b.id, provider).await,
            ) else {
                return;
            };
            let Some(survivor) = world.crm(provider).user_merge(&ra, &rb) else {
                return;
            };
            detail = format!(
                "{provider} {rb} ({}) into {ra} ({}) = {survivor}",
                b.id, a.id
            );
            // The merge combines values (the survivor's win where set): what either contact
            // ends with need not be its last write.
            for c in [&a, &b] {
                oracle.uncertain(c.fields.email.as_deref().unwrap_or_default());
            }
            "crm merge"
        }
        (103..106, Some(_)) => {
            // A record deleted in HubSpot restored from its recycle bin: the link revives.
            let mut deleted = Vec::new();
            for c in &contacts {
                if let Some((record, true)) = link_target(world, &c.id, Provider::HubSpot).await {
                    deleted.push((c.id.clone(), record));
                }
            }
            if deleted.is_empty() {
                return;
            }
            let (contact, record) = deleted.swap_remove(world.sched.below(deleted.len()));
            if !world.crm(Provider::HubSpot).user_restore(&record) {
                return;
            }
            detail = format!("{contact} hubspot {record}");
            "crm restore"
        }
        (106..108, Some(c)) => {
            // The app changes a contact's email: the links stay the identity, the new email
            // goes to both CRMs.
            let old = c.fields.email.clone().unwrap_or_default();
            let new = format!("e{op}@sim.test");
            app_edit(world, &c, Field::Email, &new, false).await;
            oracle.renamed(&old, &new);
            oracle.wrote(world, &new, Field::Email, op, Some(new.clone()));
            detail = format!("{} {old} -> {new}", c.id);
            "app email change"
        }
        (108..110, Some(c)) => {
            // A CRM user changes a contact's email: it flows to the app and the other CRM.
            let provider = pick_provider(world);
            let Some(record) = linked_record(world, &c.id, provider).await else {
                return;
            };
            let old = c.fields.email.clone().unwrap_or_default();
            let new = format!("x{op}@sim.test");
            crm_edit(world, provider, &record, Field::Email, &new);
            oracle.renamed(&old, &new);
            oracle.wrote(world, &new, Field::Email, op, Some(new.clone()));
            oracle.wrote_in_crm(&new, Field::Email, (provider, record.clone()));
            detail = format!("{} {provider} {record} {old} -> {new}", c.id);
            "crm email change"
        }
        _ => {
            world.queue.send(
                Job::Reconcile {
                    tenant: tenant(),
                    round: 0,
                },
                0,
            );
            "sync now"
        }
    };
    tracing::info!(op, kind, ?field, %detail, at = %world.sched.now(), "user operation");
    *oracle.counts.entry(kind).or_default() += 1;
}

use std::time::Duration;

use std::sync::Arc;

use chrono::Utc;

use super::reconcile::already_agreed;
use super::worker::{self, JobOutcome};
use super::*;
use crate::adapters::embedded::EmbeddedStore;
use crate::crm::memory::MemoryCrm;
use crate::domain::{
    ChangeKind, Contact, ContactFields, ContactLink, CustomField, Field, FieldPatch, FieldSupport,
    LinkStatus, Origin, Side, Trigger,
};
use crate::engine;
use crate::error::{CrmError, StoreError};
use crate::ports::{
    ChangedRecord, ConflictLog, ContactIssues, ContactStore, CrmHealth, Cursors, FieldKeys,
    JobQueue, LinkStore,
};
use crate::tenant::{TenantConfig, Tenants};

mod backfill;
mod check;
mod concurrency;
mod custom_fields;
mod erase;
mod history;

/// The embedded store's contacts with a fault armed for the next update: another writer
/// changes the contact's last name just before it (`race`: it loses its version race), or it
/// happens but answers as if the connection dropped (`lose`). Each fires once.
struct FaultyContacts {
    inner: EmbeddedStore,
    race: std::sync::atomic::AtomicBool,
    lose: std::sync::atomic::AtomicBool,
}

impl FaultyContacts {
    fn racing(inner: EmbeddedStore) -> Self {
        Self {
            inner,
            race: true.into(),
            lose: false.into(),
        }
    }

    fn losing_answers(inner: EmbeddedStore) -> Self {
        Self {
            inner,
            race: false.into(),
            lose: true.into(),
        }
    }

    /// Whether the armed race happened.
    fn raced(&self) -> bool {
        !self.race.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl ContactStore for FaultyContacts {
    async fn get(&self, t: &TenantId, id: &str) -> Result<Option<Contact>, StoreError> {
        self.inner.get(t, id).await
    }
    async fn find_by_email(&self, t: &TenantId, e: &str) -> Result<Option<Contact>, StoreError> {
        self.inner.find_by_email(t, e).await
    }
    async fn list(
        &self,
        t: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::ports::Page<Contact>, StoreError> {
        self.inner.list(t, after, limit).await
    }
    async fn insert(&self, c: &Contact) -> Result<Contact, StoreError> {
        self.inner.insert(c).await
    }
    async fn update(&self, c: &Contact) -> Result<Contact, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.race.swap(false, SeqCst) {
            let mut other = self.inner.get(&c.tenant, &c.id).await?.unwrap();
            other.fields.last_name = Some("Racer".into());
            self.inner.update(&other).await?;
        }
        let stored = self.inner.update(c).await?;
        if self.lose.swap(false, SeqCst) {
            return Err(StoreError::Backend(
                "connection reset after the write".into(),
            ));
        }
        Ok(stored)
    }
    async fn erase(&self, t: &TenantId, id: &str) -> Result<(), StoreError> {
        self.inner.erase(t, id).await
    }
}

/// The fixture's service, its contacts read and written through `contacts`.
fn over_contacts(f: &Fixture, contacts: Arc<FaultyContacts>) -> SyncService {
    let arc = Arc::new(f.store.clone());
    SyncService::new(contacts, arc.clone(), arc, f.service.tenants.clone())
}

struct Fixture {
    store: EmbeddedStore,
    hubspot: MemoryCrm,
    pipedrive: MemoryCrm,
    service: SyncService,
}

fn tenant() -> TenantId {
    TenantId::new("acme")
}

async fn fixture(pronouns_in_pipedrive: bool) -> Fixture {
    let store = EmbeddedStore::in_memory().unwrap();
    let hubspot = MemoryCrm::new(Provider::HubSpot);
    let pipedrive = MemoryCrm::new(Provider::Pipedrive);
    let mut tenants = Tenants::new();
    tenants.add(
        TenantConfig::new("acme"),
        vec![Arc::new(hubspot.clone()), Arc::new(pipedrive.clone())],
    );
    hubspot.user_set_pronouns_field(Some("pronouns"));
    store
        .set_field_key(
            &tenant(),
            Provider::HubSpot,
            CustomField::Pronouns,
            Some("pronouns"),
        )
        .await
        .unwrap();
    if pronouns_in_pipedrive {
        pipedrive.user_set_pronouns_field(Some("a1b2"));
        store
            .set_field_key(
                &tenant(),
                Provider::Pipedrive,
                CustomField::Pronouns,
                Some("a1b2"),
            )
            .await
            .unwrap();
    }
    let arc = Arc::new(store.clone());
    let service = SyncService::new(arc.clone(), arc.clone(), arc, Arc::new(tenants));
    Fixture {
        store,
        hubspot,
        pipedrive,
        service,
    }
}

async fn create_app_contact(f: &Fixture, id: &str, email: &str, first: &str) -> Contact {
    let now = Utc::now();
    f.store
        .insert(&Contact {
            tenant: tenant(),
            id: id.into(),
            fields: ContactFields {
                email: Some(email.into()),
                first_name: Some(first.into()),
                pronouns: Some("they/them".into()),
                ..Default::default()
            },
            version: 0,
            created_at: now,
            last_app_modified: now,
            deleted: false,
            synced: Default::default(),
        })
        .await
        .unwrap()
}

fn app_event(id: &str) -> ChangeEvent {
    ChangeEvent::new(tenant(), Origin::App, id, ChangeKind::Upsert)
}

async fn link(f: &Fixture, contact: &str, provider: Provider) -> ContactLink {
    f.store
        .links_for_contact(&tenant(), contact)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.provider == provider)
        .expect("link")
}

#[tokio::test]
async fn app_contact_reaches_both_crms_and_replays_write_nothing() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    let r = f.service.handle(&app_event("c1")).await.unwrap();
    assert_eq!(r.crm_writes, 2);
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    assert_eq!(hs.status, LinkStatus::Synced);
    let rec = f.hubspot.record(&hs.external_id).unwrap();
    assert_eq!(rec.fields.pronouns.as_deref(), Some("they/them"));
    assert_eq!(
        f.pipedrive
            .record(&pd.external_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Ann")
    );
    assert_eq!(hs.base_hash, hs.base.content_hash());

    // Duplicated and late events are harmless: no further writes anywhere.
    for _ in 0..3 {
        let r = f.service.handle(&app_event("c1")).await.unwrap();
        assert_eq!((r.app_writes, r.crm_writes), (0, 0));
    }
    let echo = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        hs.external_id.clone(),
        ChangeKind::Upsert,
    );
    let r = f.service.handle(&echo).await.unwrap();
    assert_eq!((r.app_writes, r.crm_writes), (0, 0));
    assert_eq!(f.hubspot.writes() + f.pipedrive.writes(), 2);
}

#[tokio::test]
async fn crm_edit_flows_to_app_and_the_other_crm_without_echo() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let mut patch = FieldPatch::default();
    patch.insert(Field::LastName, Some("Smith".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);

    let ev = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        hs.external_id.clone(),
        ChangeKind::Upsert,
    );
    let r = f.service.handle(&ev).await.unwrap();
    assert_eq!(r.app_writes, 1);
    assert_eq!(r.crm_writes, 1, "only Pipedrive is written");
    let c = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c.fields.last_name.as_deref(), Some("Smith"));
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    assert_eq!(
        f.pipedrive
            .record(&pd.external_id)
            .unwrap()
            .fields
            .last_name
            .as_deref(),
        Some("Smith")
    );
    // The echoes of our own writes change nothing.
    let writes = f.hubspot.writes() + f.pipedrive.writes();
    for ev in [
        ev.clone(),
        ChangeEvent::new(
            tenant(),
            Origin::Crm(Provider::Pipedrive),
            pd.external_id.clone(),
            ChangeKind::Upsert,
        ),
        app_event("c1"),
    ] {
        let r = f.service.handle(&ev).await.unwrap();
        assert_eq!((r.app_writes, r.crm_writes), (0, 0));
    }
    assert_eq!(f.hubspot.writes() + f.pipedrive.writes(), writes);
}

/// A CRM synced after another brings its change into the app (its webhook was lost; Sync Now
/// or the poll found it): the CRM synced before it gets a second pass and the value too.
#[tokio::test]
async fn a_change_found_in_the_second_crm_reaches_the_first() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    let mut patch = FieldPatch::default();
    patch.insert(Field::LastName, Some("Smith".into()));
    f.pipedrive.user_edit(&pd.external_id, &patch);

    // An app-side job syncs HubSpot first, then Pipedrive.
    let r = f.service.handle(&app_event("c1")).await.unwrap();
    assert_eq!((r.app_writes, r.crm_writes), (1, 1), "{r:?}");
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let record = f.hubspot.record(&hs.external_id).unwrap();
    assert_eq!(record.fields.last_name.as_deref(), Some("Smith"));
    assert_eq!(hs.base.last_name.as_deref(), Some("Smith"));
}

#[tokio::test]
async fn missing_pronouns_field_syncs_the_rest_with_a_warning() {
    let f = fixture(false).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    let rec = f.pipedrive.record(&pd.external_id).unwrap();
    assert_eq!(rec.fields.first_name.as_deref(), Some("Ann"));
    assert_eq!(rec.fields.pronouns, None);
    assert_eq!(pd.status, LinkStatus::Synced);
    assert_eq!(
        pd.warnings,
        vec![engine::pronouns_warning(Provider::Pipedrive)]
    );
    // HubSpot has the field: no warning there.
    assert!(link(&f, "c1", Provider::HubSpot).await.warnings.is_empty());
    // Re-running does not loop on the missing field.
    let r = f.service.handle(&app_event("c1")).await.unwrap();
    assert_eq!((r.app_writes, r.crm_writes), (0, 0));
}

#[tokio::test]
async fn new_crm_record_is_imported_and_pushed_to_the_other_crm() {
    let f = fixture(true).await;
    let id = f.pipedrive.user_create(ContactFields {
        email: Some("bo@x.io".into()),
        first_name: Some("Bo".into()),
        ..Default::default()
    });
    let ev = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::Pipedrive),
        id.clone(),
        ChangeKind::Upsert,
    );
    let r = f.service.handle(&ev).await.unwrap();
    let contact_id = r.contact_id.unwrap();
    let c = f.store.get(&tenant(), &contact_id).await.unwrap().unwrap();
    assert_eq!(c.fields.email.as_deref(), Some("bo@x.io"));
    let hs = link(&f, &contact_id, Provider::HubSpot).await;
    assert_eq!(
        f.hubspot
            .record(&hs.external_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Bo")
    );
    // The same event again: no duplicate contact.
    f.service.handle(&ev).await.unwrap();
    assert_eq!(
        f.store.list(&tenant(), None, 10).await.unwrap().items.len(),
        1
    );
    assert_eq!(f.hubspot.records().len(), 1);
}

#[tokio::test]
async fn existing_crm_record_is_matched_by_email_not_duplicated() {
    let f = fixture(true).await;
    let existing = f.hubspot.user_create(ContactFields {
        email: Some("ann@x.io".into()),
        last_name: Some("Lee".into()),
        ..Default::default()
    });
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    assert_eq!(f.hubspot.records().len(), 1);
    assert_eq!(
        link(&f, "c1", Provider::HubSpot).await.external_id,
        existing
    );
    let c = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(
        c.fields.last_name.as_deref(),
        Some("Lee"),
        "CRM-only value flows to the app"
    );
    assert_eq!(
        f.hubspot
            .record(&existing)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Ann")
    );
}

#[tokio::test]
async fn conflicts_are_resolved_crm_wins_and_logged() {
    let f = fixture(true).await;
    let c = create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Anne".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);
    let mut app = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(app.version, c.version);
    app.fields.first_name = Some("Annie".into());
    f.store.update(&app).await.unwrap();

    f.service.handle(&app_event("c1")).await.unwrap();
    let c = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c.fields.first_name.as_deref(), Some("Anne"));
    let log = f.store.conflicts(&tenant(), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].conflict.app_value.as_deref(), Some("Annie"));
    assert_eq!(log[0].conflict.crm_value.as_deref(), Some("Anne"));
    assert_eq!(log[0].conflict.winner, Side::Crm);
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    assert_eq!(
        f.pipedrive
            .record(&pd.external_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Anne")
    );
    assert_eq!(
        f.store
            .stats(&tenant(), Provider::HubSpot)
            .await
            .unwrap()
            .conflicts,
        1
    );
}

#[tokio::test]
async fn app_delete_archives_in_crms_and_crm_delete_keeps_the_app_contact() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    create_app_contact(&f, "c2", "bo@x.io", "Bo").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    f.service.handle(&app_event("c2")).await.unwrap();

    let mut c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    c1.deleted = true;
    f.store.update(&c1).await.unwrap();
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    assert_eq!(hs.status, LinkStatus::Deleted);
    assert!(f.hubspot.record(&hs.external_id).unwrap().archived);
    assert!(
        f.pipedrive
            .record(&link(&f, "c1", Provider::Pipedrive).await.external_id)
            .unwrap()
            .archived
    );

    let hs2 = link(&f, "c2", Provider::HubSpot).await;
    f.hubspot.user_archive(&hs2.external_id);
    let ev = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        hs2.external_id.clone(),
        ChangeKind::Delete,
    );
    f.service.handle(&ev).await.unwrap();
    assert_eq!(
        link(&f, "c2", Provider::HubSpot).await.status,
        LinkStatus::Deleted
    );
    let c2 = f.store.get(&tenant(), "c2").await.unwrap().unwrap();
    assert!(!c2.deleted, "a CRM delete never deletes the app contact");
    // And nothing is recreated in HubSpot afterwards.
    f.service.handle(&app_event("c2")).await.unwrap();
    assert_eq!(f.hubspot.records().len(), 2);
}

#[tokio::test]
async fn merge_rekeys_the_link_instead_of_deleting() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let old = link(&f, "c1", Provider::HubSpot).await.external_id;
    let survivor = f.hubspot.user_create(ContactFields {
        email: Some("ann@x.io".into()),
        first_name: Some("Ann".into()),
        pronouns: Some("they/them".into()),
        ..Default::default()
    });
    f.hubspot.user_archive(&old);
    // Deletion of the merged-away id first (HubSpot does not order events), then the merge.
    let del = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        old.clone(),
        ChangeKind::Delete,
    );
    f.service.handle(&del).await.unwrap();
    let merge = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        survivor.clone(),
        ChangeKind::Merge {
            merged_ids: vec![old.clone()],
        },
    );
    f.service.handle(&merge).await.unwrap();
    let l = link(&f, "c1", Provider::HubSpot).await;
    assert_eq!(l.external_id, survivor);
    assert_eq!(l.status, LinkStatus::Synced);
    assert!(
        f.store
            .get_link(&tenant(), Provider::HubSpot, &old)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!f.store.get(&tenant(), "c1").await.unwrap().unwrap().deleted);
}

#[tokio::test]
async fn failures_retry_three_times_then_dead_letter_and_replay_recovers() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.pipedrive.fail_with(Some(CrmError::Unavailable {
        provider: Provider::Pipedrive,
        message: "connection refused".into(),
    }));
    f.store.enqueue_changes(&[app_event("c1")]).await.unwrap();
    let q: &dyn JobQueue = &f.store;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let d = q.receive(1).await.unwrap().remove(0);
        outcomes.push(worker::process(&f.service, q, &d).await.unwrap());
        // Make the retry due now.
        tokio::time::sleep(Duration::from_millis(1)).await;
        f.store.replay_due_for_tests();
    }
    assert!(matches!(outcomes[0], JobOutcome::Retrying(_)));
    assert!(matches!(outcomes[2], JobOutcome::DeadLettered(_)));
    // HubSpot still synced; Pipedrive's failure is visible.
    assert_eq!(
        link(&f, "c1", Provider::HubSpot).await.status,
        LinkStatus::Synced
    );
    let issues = f.store.issues(&tenant(), "c1").await.unwrap();
    assert_eq!(issues.len(), 1);
    assert!(issues[0].message.contains("connection refused"));
    let stats = f.store.stats(&tenant(), Provider::Pipedrive).await.unwrap();
    assert_eq!(stats.errors, 3);
    assert_eq!(q.dlq_depth(&tenant()).await.unwrap().jobs, 1);

    f.pipedrive.fail_with(None);
    assert_eq!(q.replay_dlq(&tenant()).await.unwrap(), 1);
    assert_eq!(worker::run_once(&f.service, q, 10).await.unwrap(), 1);
    assert_eq!(
        link(&f, "c1", Provider::Pipedrive).await.status,
        LinkStatus::Synced
    );
    assert!(f.store.issues(&tenant(), "c1").await.unwrap().is_empty());
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 0);
}

#[tokio::test]
async fn spent_quota_defers_without_calling_again() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    let until = Utc::now() + chrono::Duration::hours(3);
    f.hubspot.fail_with(Some(CrmError::QuotaExhausted {
        provider: Provider::HubSpot,
        until,
    }));
    f.store.enqueue_changes(&[app_event("c1")]).await.unwrap();
    let q: &dyn JobQueue = &f.store;
    let d = q.receive(1).await.unwrap().remove(0);
    assert_eq!(
        worker::process(&f.service, q, &d).await.unwrap(),
        JobOutcome::Deferred
    );
    let stats = f.store.stats(&tenant(), Provider::HubSpot).await.unwrap();
    assert_eq!(stats.paused_until, Some(until));
    // Paused: the next sync does not even call HubSpot, and the job stays pending.
    f.hubspot.fail_with(None);
    let err = f
        .service
        .sync_contact(&tenant(), "c1", None, None, &[], Trigger::App, None, None)
        .await
        .unwrap_err();
    assert!(err.deferred_until().is_some());
    assert_eq!(f.hubspot.records().len(), 0);
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 1);
    assert_eq!(q.dlq_depth(&tenant()).await.unwrap().jobs, 0);
}

#[tokio::test]
async fn backfill_links_unlinked_contacts_in_batches() {
    let f = fixture(true).await;
    for i in 0..250 {
        create_app_contact(&f, &format!("c{i:03}"), &format!("p{i}@x.io"), "P").await;
    }
    assert_eq!(
        f.service
            .backfill(&tenant(), Provider::HubSpot, None)
            .await
            .unwrap(),
        (250, false)
    );
    assert_eq!(f.hubspot.records().len(), 250);
    assert_eq!(
        f.service
            .backfill(&tenant(), Provider::HubSpot, None)
            .await
            .unwrap(),
        (0, false)
    );
    // Linked by backfill: a later sync writes nothing to HubSpot.
    let before = f.hubspot.writes();
    f.service
        .sync_contact(
            &tenant(),
            "c007",
            Some(Provider::HubSpot),
            None,
            &[],
            Trigger::App,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(f.hubspot.writes(), before);
}

#[tokio::test]
async fn unknown_tenant_is_an_error() {
    let f = fixture(true).await;
    let ev = ChangeEvent::new(
        TenantId::new("nobody"),
        Origin::App,
        "c1",
        ChangeKind::Upsert,
    );
    assert!(matches!(
        f.service.handle(&ev).await,
        Err(SyncError::UnknownTenant(_))
    ));
}

#[tokio::test]
async fn poll_enqueues_changes_webhooks_missed_and_advances_the_cursor() {
    let f = fixture(true).await;
    let id = f.pipedrive.user_create(ContactFields {
        email: Some("cy@x.io".into()),
        ..Default::default()
    });
    let q: &dyn JobQueue = &f.store;
    assert_eq!(
        f.service
            .poll(&tenant(), Provider::Pipedrive, q, 5)
            .await
            .unwrap(),
        1
    );
    let cursor = f.store.cursor(&tenant(), "poll#pipedrive").await.unwrap();
    assert!(cursor.is_some());
    assert_eq!(worker::run_once(&f.service, q, 10).await.unwrap(), 1);
    let c = f
        .store
        .find_by_email(&tenant(), "cy@x.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link(&f, &c.id, Provider::Pipedrive).await.external_id, id);
    // The inclusive bound re-reports the last record; its values are what the link agreed, so
    // no job is queued for it.
    assert_eq!(
        f.service
            .poll(&tenant(), Provider::Pipedrive, q, 5)
            .await
            .unwrap(),
        0
    );
}

/// A user's edit in the same second as our last sync has the same whole-second timestamp as
/// the version we saw; with webhooks missed, the poll still picks it up (by its values).
#[tokio::test]
async fn poll_picks_up_an_edit_made_in_the_same_second_as_our_sync() {
    let f = fixture(true).await;
    let q: &dyn JobQueue = &f.store;
    let second = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let id = f.pipedrive.user_create(ContactFields {
        email: Some("cy@x.io".into()),
        first_name: Some("Cy".into()),
        ..Default::default()
    });
    f.pipedrive.set_updated_at(&id, second);
    f.service
        .poll(&tenant(), Provider::Pipedrive, q, 5)
        .await
        .unwrap();
    worker::run_once(&f.service, q, 10).await.unwrap();
    let c = f
        .store
        .find_by_email(&tenant(), "cy@x.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        link(&f, &c.id, Provider::Pipedrive).await.crm_last_modified,
        Some(second)
    );
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Cyd".into()));
    f.pipedrive.user_edit(&id, &patch);
    f.pipedrive.set_updated_at(&id, second);
    assert_eq!(
        f.service
            .poll(&tenant(), Provider::Pipedrive, q, 5)
            .await
            .unwrap(),
        1
    );
    worker::run_once(&f.service, q, 10).await.unwrap();
    let c = f.store.get(&tenant(), &c.id).await.unwrap().unwrap();
    assert_eq!(c.fields.first_name.as_deref(), Some("Cyd"));
}

/// Without the record's values, the modification time decides: equal whole seconds do not
/// count as seen, equal milliseconds do.
#[test]
fn a_poll_without_values_trusts_only_timestamps_finer_than_a_second() {
    let mut link = ContactLink::synced(
        &tenant(),
        "c1",
        Provider::HubSpot,
        "1",
        None,
        ContactFields::default(),
        Vec::new(),
        Utc::now(),
    );
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let rec = |updated: chrono::DateTime<Utc>| ChangedRecord {
        id: "1".into(),
        updated_at: Some(updated),
        fields: None,
    };
    link.crm_last_modified = Some(at(1_767_225_600_000));
    assert!(!already_agreed(
        &rec(at(1_767_225_600_000)),
        &link,
        FieldSupport::ALL
    ));
    assert!(!already_agreed(
        &rec(at(1_767_225_601_000)),
        &link,
        FieldSupport::ALL
    ));
    link.crm_last_modified = Some(at(1_767_225_600_123));
    assert!(already_agreed(
        &rec(at(1_767_225_600_123)),
        &link,
        FieldSupport::ALL
    ));
    assert!(already_agreed(
        &rec(at(1_767_225_600_000)),
        &link,
        FieldSupport::ALL
    ));
    assert!(!already_agreed(
        &rec(at(1_767_225_600_124)),
        &link,
        FieldSupport::ALL
    ));
}

/// Queues round 1 of a Sync Now.
async fn start_sync_now(q: &dyn JobQueue) {
    q.enqueue(&[Job::Reconcile {
        tenant: tenant(),
        round: 1,
    }])
    .await
    .unwrap();
}

/// Runs the queue's jobs until none is left (at most 50 batches).
async fn drain(service: &SyncService, q: &dyn JobQueue) {
    for _ in 0..50 {
        if worker::run_once(service, q, 10).await.unwrap() == 0 {
            break;
        }
    }
}

/// A Sync Now whose time budget runs out queues its own continuation; the continuations finish
/// the backfill and the progress adds up across jobs.
#[tokio::test]
async fn sync_now_continues_itself_past_its_time_budget() {
    let f = fixture(true).await;
    for i in 0..350 {
        create_app_contact(&f, &format!("c{i:03}"), &format!("q{i}@x.io"), "Q").await;
    }
    // A deadline already passed: one chunk of 100 per provider call, then "more".
    let (n, more) = f
        .service
        .backfill(
            &tenant(),
            Provider::HubSpot,
            Some(std::time::Instant::now()),
        )
        .await
        .unwrap();
    assert_eq!((n, more), (100, true));

    let q: &dyn JobQueue = &f.store;
    start_sync_now(&f.store).await;
    // No time budget at all: every job does one chunk per CRM, then continues itself.
    let service = f
        .service
        .clone()
        .with_reconcile_budget(std::time::Duration::ZERO);
    drain(&service, q).await;
    let progress = f
        .service
        .sync_now_progress(&tenant())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(progress.phase, "done");
    assert!(!progress.running);
    assert_eq!(
        progress.backfilled,
        250 + 350,
        "the rest of HubSpot plus all of Pipedrive"
    );
    assert_eq!(f.hubspot.records().len(), 350);
    assert_eq!(f.pipedrive.records().len(), 350);
    assert!(progress.errors.is_empty(), "{progress:?}");
    assert_eq!(progress.polled, [Provider::HubSpot, Provider::Pipedrive]);
    assert_eq!(
        progress.rounds, 4,
        "both CRMs backfill in every job: HubSpot 250 left (100, 100, 50) alongside Pipedrive \
         350 (100, 100, 100, 50): 4 jobs: {progress:?}"
    );
}

/// A CRM record restored after a delete revives its link (same record, no new one) and syncs
/// again both ways.
#[tokio::test]
async fn a_crm_restore_revives_the_link() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    f.hubspot.user_archive(&hs.external_id);
    let crm_event = |kind| {
        ChangeEvent::new(
            tenant(),
            Origin::Crm(Provider::HubSpot),
            hs.external_id.clone(),
            kind,
        )
    };
    f.service
        .handle(&crm_event(ChangeKind::Delete))
        .await
        .unwrap();
    assert_eq!(
        link(&f, "c1", Provider::HubSpot).await.status,
        LinkStatus::Deleted
    );

    f.hubspot.user_restore(&hs.external_id);
    let mut patch = FieldPatch::default();
    patch.insert(Field::LastName, Some("Restored".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);
    f.service
        .handle(&crm_event(ChangeKind::Upsert))
        .await
        .unwrap();
    let revived = link(&f, "c1", Provider::HubSpot).await;
    assert_eq!(revived.status, LinkStatus::Synced);
    assert_eq!(revived.external_id, hs.external_id);
    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c1.fields.last_name.as_deref(), Some("Restored"));
    assert_eq!(f.hubspot.records().len(), 1, "no second record");

    // An app edit reaches the restored record.
    let mut c1 = c1;
    c1.fields.first_name = Some("Anna".into());
    f.store.update(&c1).await.unwrap();
    f.service.handle(&app_event("c1")).await.unwrap();
    assert_eq!(
        f.hubspot
            .record(&hs.external_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Anna")
    );
}

/// A tenant on `app_wins`: a field changed on both sides takes the app's value everywhere, and
/// the log says so.
#[tokio::test]
async fn app_wins_policy_through_the_service() {
    let f = fixture(true).await;
    let mut tenants = Tenants::new();
    let mut cfg = TenantConfig::new("acme");
    cfg.conflict_policy = crate::domain::ConflictPolicy::AppWins;
    tenants.add(
        cfg,
        vec![Arc::new(f.hubspot.clone()), Arc::new(f.pipedrive.clone())],
    );
    let arc = Arc::new(f.store.clone());
    let service = SyncService::new(arc.clone(), arc.clone(), arc, Arc::new(tenants));
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Anne".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);
    let mut c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    c1.fields.first_name = Some("Annie".into());
    f.store.update(&c1).await.unwrap();
    service
        .handle(&ChangeEvent::new(
            tenant(),
            Origin::Crm(Provider::HubSpot),
            hs.external_id.clone(),
            ChangeKind::Upsert,
        ))
        .await
        .unwrap();
    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c1.fields.first_name.as_deref(), Some("Annie"));
    assert_eq!(
        f.hubspot
            .record(&hs.external_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Annie")
    );
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    assert_eq!(
        f.pipedrive
            .record(&pd.external_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Annie")
    );
    let log = f.store.conflicts(&tenant(), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].conflict.winner, Side::App);
    assert_eq!(log[0].conflict.resolved_value.as_deref(), Some("Annie"));
}

/// An app change saved without its sync job (the enqueue failed after the write) is found by
/// Sync Now: an edit reaches the CRMs and a delete archives them.
#[tokio::test]
async fn sync_now_sweeps_app_changes_whose_job_was_never_queued() {
    let f = fixture(true).await;
    let q: &dyn JobQueue = &f.store;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    create_app_contact(&f, "c2", "bo@x.io", "Bo").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    f.service.handle(&app_event("c2")).await.unwrap();
    // Saved in the app, never queued.
    let mut c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    c1.fields.first_name = Some("Anna".into());
    c1.last_app_modified = Utc::now();
    f.store.update(&c1).await.unwrap();
    let mut c2 = f.store.get(&tenant(), "c2").await.unwrap().unwrap();
    c2.deleted = true;
    c2.last_app_modified = Utc::now();
    f.store.update(&c2).await.unwrap();
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 0);

    f.service.reconcile(&tenant(), q, 1).await.unwrap();
    while worker::run_once(&f.service, q, 10).await.unwrap() > 0 {}
    let hs1 = link(&f, "c1", Provider::HubSpot).await;
    assert_eq!(
        f.hubspot
            .record(&hs1.external_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Anna")
    );
    let hs2 = link(&f, "c2", Provider::HubSpot).await;
    assert!(f.hubspot.record(&hs2.external_id).unwrap().archived);
    let pd2 = link(&f, "c2", Provider::Pipedrive).await;
    assert!(f.pipedrive.record(&pd2.external_id).unwrap().archived);
}

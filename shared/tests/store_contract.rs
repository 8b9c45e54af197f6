//! One contract for the store ports — contacts, ContactLinks, every part of the sync state and
//! the tenant registry — run against each backend: the embedded store (SQLite) and DynamoDB on
//! moto server with the real AWS SDK client. Each check is a function generic over the ports;
//! `contract!` runs it once per backend.

mod common;

use std::time::Duration;

use chrono::Utc;
use shared::adapters::aws::dynamo::{DynamoStore, TableNames};
use shared::adapters::embedded::EmbeddedStore;
use shared::error::StoreError;
use shared::ports::{
    Admission, ContactStore, LaneLimit, LinkStore, SharedLimits, SyncNowProgress, SyncState,
};
use shared::tenant::{TenantConfig, TenantKey, TenantRecord, TenantRegistry};
use shared::{
    Conflict, ConflictRecord, Contact, ContactFields, ContactLink, CrmDecision, CustomField,
    DecisionAction, Field, HistoryEntry, LinkStatus, Provider, Side, TenantId, Trigger,
};

/// What every backend implements.
trait Store:
    ContactStore + LinkStore + SyncState + TenantRegistry + SharedLimits + Clone + 'static
{
}
impl<T> Store for T where
    T: ContactStore + LinkStore + SyncState + TenantRegistry + SharedLimits + Clone + 'static
{
}

async fn embedded() -> EmbeddedStore {
    EmbeddedStore::in_memory().unwrap()
}

async fn dynamodb() -> DynamoStore {
    let cfg = common::moto::sdk_config().await;
    let prefix = format!("c{}", uuid::Uuid::new_v4().simple());
    let s = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        TableNames::with_prefix(&prefix),
    );
    s.create_tables().await.unwrap();
    s
}

/// Runs each named check against every backend.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod embedded_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::embedded().await).await
                }
            )*
        }
        mod dynamodb_on_moto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::dynamodb().await).await
                }
            )*
        }
    };
}

contract!(
    contacts_are_versioned_and_tenant_scoped,
    a_live_email_is_unique_per_tenant,
    lists_page_through_live_contacts_in_id_order,
    racing_writers_lose_no_update,
    links_are_conditional_and_found_by_contact,
    a_contact_has_one_link_per_crm,
    an_intent_moves_to_its_record_or_is_withdrawn,
    cursors_and_sync_now_progress,
    crm_health_adds_up_outcomes_and_pauses,
    racing_health_updates_lose_none,
    the_conflict_log_is_newest_first_and_per_tenant,
    a_contacts_history_is_newest_first_bounded_and_its_own,
    an_erasure_leaves_nothing_of_the_person,
    dedupe_marks_a_delivery_once_until_forgotten,
    dedupe_marks_a_delivery_s_events_together,
    field_keys_and_issues_are_per_crm,
    the_first_field_key_stored_wins,
    the_registry_keeps_one_record_per_tenant,
    racing_workers_share_one_window_and_one_budget,
    racing_workers_with_leases_keep_to_the_window,
);

fn tenant() -> TenantId {
    TenantId::new("acme")
}

fn contact(id: &str, email: &str) -> Contact {
    Contact::new(
        tenant(),
        id.to_string(),
        ContactFields {
            email: Some(email.into()),
            first_name: Some("First".into()),
            ..Default::default()
        },
        Utc::now(),
    )
}

fn link(contact_id: &str, provider: Provider, external_id: &str) -> ContactLink {
    ContactLink::synced(
        &tenant(),
        contact_id,
        provider,
        external_id,
        None,
        ContactFields {
            email: Some("x@y.io".into()),
            ..Default::default()
        },
        Vec::new(),
        Utc::now(),
    )
}

async fn contacts_are_versioned_and_tenant_scoped(s: impl Store) {
    let c = s.insert(&contact("c1", "a@x.io")).await.unwrap();
    assert_eq!(c.version, 1);
    assert_eq!(s.get(&tenant(), "c1").await.unwrap().unwrap(), c);
    assert!(
        s.get(&TenantId::new("other"), "c1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.find_by_email(&tenant(), "A@X.io")
            .await
            .unwrap()
            .unwrap()
            .id,
        "c1",
        "emails are found case-insensitively"
    );
    assert!(matches!(
        s.insert(&contact("c1", "z@x.io")).await,
        Err(StoreError::Duplicate(_))
    ));
    let mut edited = c.clone();
    edited.fields.first_name = Some("Ann".into());
    let edited = s.update(&edited).await.unwrap();
    assert_eq!(edited.version, 2);
    // A writer holding the old version loses.
    assert!(matches!(s.update(&c).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.get(&tenant(), "c1").await.unwrap().unwrap(), edited);
}

async fn a_live_email_is_unique_per_tenant(s: impl Store) {
    let c1 = s.insert(&contact("c1", "a@x.io")).await.unwrap();
    assert!(matches!(
        s.insert(&contact("c2", "a@x.io")).await,
        Err(StoreError::Duplicate(_))
    ));
    let mut other_tenant = contact("o1", "a@x.io");
    other_tenant.tenant = TenantId::new("other");
    s.insert(&other_tenant).await.unwrap();
    // An email change moves the unique marker; the old email is free again.
    let mut moved = c1.clone();
    moved.fields.email = Some("b@x.io".into());
    let moved = s.update(&moved).await.unwrap();
    assert!(
        s.find_by_email(&tenant(), "a@x.io")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.find_by_email(&tenant(), "b@x.io")
            .await
            .unwrap()
            .unwrap()
            .id,
        "c1"
    );
    let c2 = s.insert(&contact("c2", "a@x.io")).await.unwrap();
    // Taking an email in use is refused.
    let mut steal = c2.clone();
    steal.fields.email = Some("b@x.io".into());
    assert!(matches!(
        s.update(&steal).await,
        Err(StoreError::Duplicate(_))
    ));
    // Deleting frees the email.
    let mut gone = moved;
    gone.deleted = true;
    s.update(&gone).await.unwrap();
    assert!(
        s.find_by_email(&tenant(), "b@x.io")
            .await
            .unwrap()
            .is_none()
    );
    s.insert(&contact("c3", "b@x.io")).await.unwrap();
}

async fn lists_page_through_live_contacts_in_id_order(s: impl Store) {
    for i in 0..7 {
        s.insert(&contact(&format!("c{i}"), &format!("{i}@x.io")))
            .await
            .unwrap();
    }
    let mut gone = s.get(&tenant(), "c3").await.unwrap().unwrap();
    gone.deleted = true;
    s.update(&gone).await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s.list(&tenant(), after.as_deref(), 3).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|c| c.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
        assert!(pages < 10, "no loop");
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c4", "c5", "c6"]);
    assert!(
        s.list(&TenantId::new("other"), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Two writers race on one contact with read-modify-write and retry: no update is lost.
async fn racing_writers_lose_no_update(s: impl Store) {
    s.insert(&contact("c1", "a@x.io")).await.unwrap();
    let per_writer = 15;
    let mut handles = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_writer {
                loop {
                    let mut c = s.get(&tenant(), "c1").await.unwrap().unwrap();
                    let n: u64 = c
                        .fields
                        .job_title
                        .as_deref()
                        .unwrap_or("0")
                        .parse()
                        .unwrap();
                    c.fields.job_title = Some((n + 1).to_string());
                    match s.update(&c).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let c = s.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c.fields.job_title.as_deref(), Some("30"), "no lost update");
    assert_eq!(c.version, 31);
}

async fn links_are_conditional_and_found_by_contact(s: impl Store) {
    let l = s
        .put_link(&link("c1", Provider::HubSpot, "101"))
        .await
        .unwrap();
    assert_eq!(l.version, 1);
    // A second "new" link for the same record loses; so does a stale version.
    assert!(matches!(
        s.put_link(&link("c1", Provider::HubSpot, "101")).await,
        Err(StoreError::Conflict(_))
    ));
    let l2 = s.put_link(&l).await.unwrap();
    assert_eq!(l2.version, 2);
    assert!(matches!(s.put_link(&l).await, Err(StoreError::Conflict(_))));
    s.put_link(&link("c1", Provider::Pipedrive, "7"))
        .await
        .unwrap();
    s.put_link(&link("c2", Provider::Pipedrive, "8"))
        .await
        .unwrap();
    assert_eq!(s.links_for_contact(&tenant(), "c1").await.unwrap().len(), 2);
    assert_eq!(s.links_for_tenant(&tenant()).await.unwrap().len(), 3);
    assert_eq!(
        s.get_link(&tenant(), Provider::HubSpot, "101")
            .await
            .unwrap()
            .unwrap(),
        l2
    );
    assert!(
        s.get_link(&TenantId::new("other"), Provider::HubSpot, "101")
            .await
            .unwrap()
            .is_none()
    );
    // A merge moves the link to the survivor; a stale version loses.
    assert!(matches!(
        s.rekey_link(&l, "202").await,
        Err(StoreError::Conflict(_))
    ));
    let moved = s.rekey_link(&l2, "202").await.unwrap();
    assert_eq!((moved.external_id.as_str(), moved.version), ("202", 1));
    assert!(
        s.get_link(&tenant(), Provider::HubSpot, "101")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.link_for_contact(&tenant(), "c1", Provider::HubSpot)
            .await
            .unwrap()
            .unwrap(),
        moved
    );
    assert_eq!(s.links_for_tenant(&tenant()).await.unwrap().len(), 3);
    let mut tomb = s
        .get_link(&tenant(), Provider::Pipedrive, "7")
        .await
        .unwrap()
        .unwrap();
    tomb.status = LinkStatus::Deleted;
    let tomb = s.put_link(&tomb).await.unwrap();
    assert_eq!(
        s.get_link(&tenant(), Provider::Pipedrive, "7")
            .await
            .unwrap()
            .unwrap()
            .status,
        LinkStatus::Deleted
    );
    assert_eq!(tomb.version, 2);
}

async fn cursors_and_sync_now_progress(s: impl Store) {
    let t = tenant();
    assert_eq!(s.cursor(&t, "poll#pipedrive").await.unwrap(), None);
    s.set_cursor(&t, "poll#pipedrive", "2026-11-27T10:00:00Z")
        .await
        .unwrap();
    s.set_cursor(&t, "poll#hubspot", "{\"since\":1}")
        .await
        .unwrap();
    assert_eq!(
        s.cursor(&t, "poll#pipedrive").await.unwrap().as_deref(),
        Some("2026-11-27T10:00:00Z")
    );
    assert_eq!(
        s.cursor(&t, "poll#hubspot").await.unwrap().as_deref(),
        Some("{\"since\":1}")
    );
    assert_eq!(
        s.cursor(&TenantId::new("other"), "poll#pipedrive")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.sync_now_progress(&t).await.unwrap(), None);
    let progress = SyncNowProgress {
        running: true,
        phase: "backfill hubspot".into(),
        rounds: 2,
        backfilled: 100,
        ..Default::default()
    };
    s.save_sync_now_progress(&t, &progress).await.unwrap();
    assert_eq!(s.sync_now_progress(&t).await.unwrap(), Some(progress));
}

async fn crm_health_adds_up_outcomes_and_pauses(s: impl Store) {
    let t = tenant();
    let fresh = s.stats(&t, Provider::HubSpot).await.unwrap();
    assert_eq!(
        (fresh.synced, fresh.errors, fresh.paused_until),
        (0, 0, None)
    );
    s.record_outcome(&t, Provider::HubSpot, Ok(()), 1)
        .await
        .unwrap();
    s.record_outcome(&t, Provider::HubSpot, Err("down".into()), 0)
        .await
        .unwrap();
    let until = Utc::now() + chrono::Duration::hours(1);
    s.set_paused_until(&t, Provider::HubSpot, Some(until))
        .await
        .unwrap();
    let st = s.stats(&t, Provider::HubSpot).await.unwrap();
    assert_eq!((st.synced, st.errors, st.conflicts), (1, 1, 1));
    assert_eq!(st.last_error.as_deref(), Some("down"));
    assert_eq!(st.paused_until, Some(until));
    assert_eq!(st.provider, Some(Provider::HubSpot));
    assert_eq!(s.stats(&t, Provider::Pipedrive).await.unwrap().synced, 0);
    assert_eq!(
        s.stats(&TenantId::new("other"), Provider::HubSpot)
            .await
            .unwrap()
            .synced,
        0
    );
    s.set_paused_until(&t, Provider::HubSpot, None)
        .await
        .unwrap();
    assert_eq!(
        s.stats(&t, Provider::HubSpot).await.unwrap().paused_until,
        None
    );
}

/// Outcomes recorded by concurrent workers add up: the stats' read-modify-write loses none.
async fn racing_health_updates_lose_none(s: impl Store) {
    let mut handles = Vec::new();
    for _ in 0..3 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.record_outcome(&tenant(), Provider::Pipedrive, Ok(()), 1)
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let st = s.stats(&tenant(), Provider::Pipedrive).await.unwrap();
    assert_eq!((st.synced, st.conflicts), (30, 30));
}

async fn an_erasure_leaves_nothing_of_the_person(s: impl Store) {
    let t = tenant();
    s.insert(&contact("c1", "gone@x.io")).await.unwrap();
    s.insert(&contact("c2", "stays@x.io")).await.unwrap();
    s.set_issue(&t, "c1", Provider::HubSpot, Some("refused"))
        .await
        .unwrap();
    s.record_outcome(&t, Provider::HubSpot, Err("gone@x.io exists".into()), 0)
        .await
        .unwrap();
    for (contact_id, at) in [("c1", 0), ("c2", 1)] {
        s.log_conflict(&ConflictRecord {
            tenant: t.clone(),
            contact_id: contact_id.into(),
            provider: Provider::HubSpot,
            external_id: "1".into(),
            conflict: Conflict {
                field: Field::FirstName,
                base_value: None,
                app_value: Some("a".into()),
                crm_value: Some("b".into()),
                winner: Side::Crm,
                resolved_value: Some("b".into()),
                at: Utc::now() + chrono::Duration::milliseconds(at),
            },
        })
        .await
        .unwrap();
        s.record_history(&HistoryEntry {
            tenant: t.clone(),
            contact_id: contact_id.into(),
            at: Utc::now(),
            trigger: Trigger::App,
            crms: Vec::new(),
        })
        .await
        .unwrap();
    }
    s.erase_contact_state(&t, "c1", Some("gone@x.io"))
        .await
        .unwrap();
    s.erase(&t, "c1").await.unwrap();
    s.erase(&t, "c1").await.unwrap();

    assert!(s.get(&t, "c1").await.unwrap().is_none());
    assert!(s.find_by_email(&t, "gone@x.io").await.unwrap().is_none());
    // The email is free again: a new contact may have it.
    s.insert(&contact("c3", "gone@x.io")).await.unwrap();
    assert!(s.history(&t, "c1", 50).await.unwrap().is_empty());
    assert!(s.issues(&t, "c1").await.unwrap().is_empty());
    let conflicts = s.conflicts(&t, 10).await.unwrap();
    assert_eq!(
        conflicts
            .iter()
            .map(|c| c.contact_id.as_str())
            .collect::<Vec<_>>(),
        ["c2"]
    );
    let stats = s.stats(&t, Provider::HubSpot).await.unwrap();
    assert_eq!(stats.last_error.as_deref(), Some("[erased] exists"));
    assert_eq!(s.history(&t, "c2", 50).await.unwrap().len(), 1);
    assert!(s.get(&t, "c2").await.unwrap().is_some());
}

async fn a_contacts_history_is_newest_first_bounded_and_its_own(s: impl Store) {
    let entry = |tenant: &str, contact: &str, i: i64| HistoryEntry {
        tenant: TenantId::new(tenant),
        contact_id: contact.into(),
        at: Utc::now() + chrono::Duration::milliseconds(i),
        trigger: Trigger::App,
        crms: vec![CrmDecision {
            provider: Provider::HubSpot,
            record_id: Some(format!("r{i}")),
            action: DecisionAction::Updated,
            crm_writes: Vec::new(),
            app_writes: Vec::new(),
            conflicts: Vec::new(),
            error: None,
        }],
    };
    for i in 0..55 {
        s.record_history(&entry("acme", "c1", i)).await.unwrap();
    }
    // A contact whose id extends c1's, another tenant's c1: neither is c1's history.
    s.record_history(&entry("acme", "c10", 100)).await.unwrap();
    s.record_history(&entry("other", "c1", 100)).await.unwrap();
    let h = s.history(&tenant(), "c1", 50).await.unwrap();
    let ids: Vec<String> = h
        .iter()
        .map(|e| e.crms[0].record_id.clone().unwrap())
        .collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(ids[0], "r54", "newest first");
    assert_eq!(ids[49], "r5");
    assert!(
        h.iter()
            .all(|e| e.contact_id == "c1" && e.tenant == tenant())
    );
    assert_eq!(s.history(&tenant(), "c10", 50).await.unwrap().len(), 1);
    assert_eq!(
        s.history(&TenantId::new("other"), "c1", 50)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(s.history(&tenant(), "c2", 50).await.unwrap().is_empty());
}

async fn the_conflict_log_is_newest_first_and_per_tenant(s: impl Store) {
    let t = tenant();
    let at = Utc::now();
    for (i, field) in [Field::FirstName, Field::LastName, Field::Phone]
        .into_iter()
        .enumerate()
    {
        s.log_conflict(&ConflictRecord {
            tenant: t.clone(),
            contact_id: format!("c{i}"),
            provider: Provider::HubSpot,
            external_id: "1".into(),
            conflict: Conflict {
                field,
                base_value: None,
                app_value: Some("a".into()),
                crm_value: Some("b".into()),
                winner: Side::Crm,
                resolved_value: Some("b".into()),
                at: at + chrono::Duration::milliseconds(i as i64),
            },
        })
        .await
        .unwrap();
    }
    let log = s.conflicts(&t, 10).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|c| c.contact_id.as_str())
            .collect::<Vec<_>>(),
        ["c2", "c1", "c0"],
        "newest first"
    );
    assert_eq!(log[0].conflict.field, Field::Phone);
    assert_eq!(s.conflicts(&t, 2).await.unwrap().len(), 2);
    assert!(
        s.conflicts(&TenantId::new("other"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn dedupe_marks_a_delivery_once_until_forgotten(s: impl Store) {
    let t = tenant();
    let day = Duration::from_secs(24 * 3600);
    assert!(s.first_sighting(&t, "evt-1", day).await.unwrap());
    assert!(
        !s.first_sighting(&t, "evt-1", day).await.unwrap(),
        "a redelivery is dropped"
    );
    assert!(
        s.first_sighting(&TenantId::new("other"), "evt-1", day)
            .await
            .unwrap(),
        "per tenant"
    );
    // Forgotten (its enqueue failed): the redelivery gets through.
    s.forget_sighting(&t, "evt-1").await.unwrap();
    assert!(s.first_sighting(&t, "evt-1", day).await.unwrap());
    // An expired mark no longer drops anything (DynamoDB's expiry has whole seconds).
    assert!(
        s.first_sighting(&t, "evt-2", Duration::from_secs(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        s.first_sighting(&t, "evt-2", Duration::from_secs(1))
            .await
            .unwrap()
    );
}

async fn dedupe_marks_a_delivery_s_events_together(s: impl Store) {
    let t = tenant();
    let day = Duration::from_secs(24 * 3600);
    assert!(s.first_sighting(&t, "batch-2", day).await.unwrap());
    let keys: Vec<String> = ["batch-1", "batch-2", "batch-3", "batch-1"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        s.first_sightings(&t, &keys, day).await.unwrap(),
        [true, false, true, false],
        "seen before, and seen earlier in the same delivery"
    );
    assert_eq!(
        s.first_sightings(&t, &keys[..1], day).await.unwrap(),
        [false],
        "a redelivery is dropped"
    );
    assert_eq!(
        s.first_sightings(&t, &[], day).await.unwrap(),
        Vec::<bool>::new()
    );
}

async fn field_keys_and_issues_are_per_crm(s: impl Store) {
    let t = tenant();
    s.set_field_key(
        &t,
        Provider::Pipedrive,
        CustomField::Pronouns,
        Some("abc123"),
    )
    .await
    .unwrap();
    s.set_field_key(
        &t,
        Provider::Pipedrive,
        CustomField::JobTitle,
        Some("job_title"),
    )
    .await
    .unwrap();
    assert_eq!(
        s.field_key(&t, Provider::Pipedrive, CustomField::Pronouns)
            .await
            .unwrap()
            .as_deref(),
        Some("abc123")
    );
    assert_eq!(
        s.field_key(&t, Provider::Pipedrive, CustomField::JobTitle)
            .await
            .unwrap()
            .as_deref(),
        Some("job_title")
    );
    assert_eq!(
        s.field_key(&t, Provider::HubSpot, CustomField::Pronouns)
            .await
            .unwrap(),
        None
    );
    s.set_field_key(&t, Provider::Pipedrive, CustomField::Pronouns, None)
        .await
        .unwrap();
    assert_eq!(
        s.field_key(&t, Provider::Pipedrive, CustomField::Pronouns)
            .await
            .unwrap(),
        None
    );

    s.set_issue(&t, "c1", Provider::Pipedrive, Some("refused"))
        .await
        .unwrap();
    s.set_issue(&t, "c1", Provider::HubSpot, Some("down"))
        .await
        .unwrap();
    s.set_issue(&t, "c10", Provider::HubSpot, Some("other contact"))
        .await
        .unwrap();
    let issues = s.issues(&t, "c1").await.unwrap();
    assert_eq!(
        issues
            .iter()
            .map(|i| (i.provider, i.message.as_str()))
            .collect::<Vec<_>>(),
        [
            (Provider::HubSpot, "down"),
            (Provider::Pipedrive, "refused")
        ]
    );
    s.set_issue(&t, "c1", Provider::Pipedrive, None)
        .await
        .unwrap();
    assert_eq!(s.issues(&t, "c1").await.unwrap().len(), 1);
    assert!(
        s.issues(&TenantId::new("other"), "c1")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_registry_keeps_one_record_per_tenant(s: impl Store) {
    assert!(s.registered_tenants().await.unwrap().is_empty());
    for id in ["acme", "globex"] {
        let mut config = TenantConfig::new(id);
        config.api_key = Some(format!("key-{id}"));
        s.put_tenant(&TenantRecord {
            config,
            crms: Vec::new(),
        })
        .await
        .unwrap();
    }
    let mut again = TenantConfig::new("acme");
    again.api_key = Some("key-acme-2".into());
    s.put_tenant(&TenantRecord {
        config: again,
        crms: Vec::new(),
    })
    .await
    .unwrap();
    let records = s.registered_tenants().await.unwrap();
    assert_eq!(
        records.len(),
        2,
        "re-registering updates instead of duplicating"
    );
    assert!(
        records
            .iter()
            .any(|r| r.config.api_key.as_deref() == Some("key-acme-2"))
    );
    // One tenant is read by its id, or found by the index entry of a key it has.
    let acme = s
        .registered_tenant(&TenantId::new("acme"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acme.config.api_key.as_deref(), Some("key-acme-2"));
    assert!(
        s.registered_tenant(&TenantId::new("nobody"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.tenant_by_index(&TenantKey::ApiKey("key-globex").index())
            .await
            .unwrap(),
        Some(TenantId::new("globex"))
    );
    assert_eq!(
        s.tenant_by_index(&TenantKey::ApiKey("key-nobody").index())
            .await
            .unwrap(),
        None
    );
    // The index holds no secret as it is.
    assert!(
        !TenantKey::ApiKey("key-globex")
            .index()
            .contains("key-globex")
    );
    // The registry is not a tenant's state.
    assert_eq!(
        s.cursor(&TenantId::new("acme"), "tenant#acme")
            .await
            .unwrap(),
        None
    );
}

/// The first link of a (contact, CRM) claims that place: a second record cannot be linked to
/// the same contact in the same CRM, racing writers or not, and the claim is read back by key.
async fn a_contact_has_one_link_per_crm(s: impl Store) {
    assert!(
        s.link_for_contact(&tenant(), "c1", Provider::Pipedrive)
            .await
            .unwrap()
            .is_none()
    );
    let first = s
        .put_link(&link("c1", Provider::Pipedrive, "7"))
        .await
        .unwrap();
    assert!(matches!(
        s.put_link(&link("c1", Provider::Pipedrive, "8")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        s.get_link(&tenant(), Provider::Pipedrive, "8")
            .await
            .unwrap()
            .is_none()
    );
    // Other CRMs and other contacts are free.
    s.put_link(&link("c1", Provider::HubSpot, "8"))
        .await
        .unwrap();
    s.put_link(&link("c2", Provider::Pipedrive, "8"))
        .await
        .unwrap();
    assert_eq!(
        s.link_for_contact(&tenant(), "c1", Provider::Pipedrive)
            .await
            .unwrap()
            .unwrap(),
        first
    );
    // A tombstone keeps the claim: the contact is not linked again (delete protection).
    let mut tomb = first.clone();
    tomb.status = LinkStatus::Deleted;
    let tomb = s.put_link(&tomb).await.unwrap();
    assert!(matches!(
        s.put_link(&link("c1", Provider::Pipedrive, "9")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.link_for_contact(&tenant(), "c1", Provider::Pipedrive)
            .await
            .unwrap()
            .unwrap(),
        tomb
    );
    // Ten writers race to give one contact its first link: exactly one wins.
    let mut handles = Vec::new();
    for i in 0..10 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.put_link(&link("c3", Provider::Pipedrive, &format!("r{i}")))
                .await
                .is_ok()
        }));
    }
    let mut winners = 0;
    for h in handles {
        winners += usize::from(h.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(
        s.links_for_tenant(&tenant())
            .await
            .unwrap()
            .iter()
            .filter(|l| l.contact_id == "c3")
            .count(),
        1
    );
}

/// A create's intent claims the contact's place; it moves to the record created (keeping the
/// claim), or is withdrawn (freeing it) — each only from the version its writer read.
async fn an_intent_moves_to_its_record_or_is_withdrawn(s: impl Store) {
    let intent = s
        .put_link(&ContactLink::intent(
            &tenant(),
            "c1",
            Provider::HubSpot,
            ContactFields::default(),
            Utc::now(),
        ))
        .await
        .unwrap();
    assert!(intent.is_placeholder());
    assert!(
        matches!(
            s.put_link(&ContactLink::intent(
                &tenant(),
                "c1",
                Provider::HubSpot,
                ContactFields::default(),
                Utc::now()
            ))
            .await,
            Err(StoreError::Conflict(_))
        ),
        "a second worker cannot claim it again"
    );
    assert!(
        matches!(
            s.put_link(&link("c1", Provider::HubSpot, "501")).await,
            Err(StoreError::Conflict(_))
        ),
        "nor link the contact elsewhere"
    );
    let moved = s.rekey_link(&intent, "501").await.unwrap();
    assert!(moved.is_intent() && !moved.is_placeholder());
    assert_eq!(
        s.link_for_contact(&tenant(), "c1", Provider::HubSpot)
            .await
            .unwrap()
            .unwrap(),
        moved
    );
    assert!(
        s.get_link(&tenant(), Provider::HubSpot, &intent.external_id)
            .await
            .unwrap()
            .is_none()
    );

    // Withdrawn: only from the current version, and the contact is free again.
    let stale = intent.clone();
    let c2 = s
        .put_link(&ContactLink::intent(
            &tenant(),
            "c2",
            Provider::HubSpot,
            ContactFields::default(),
            Utc::now(),
        ))
        .await
        .unwrap();
    assert!(matches!(
        s.delete_link(&ContactLink {
            version: c2.version + 1,
            ..c2.clone()
        })
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.delete_link(&stale).await,
        Err(StoreError::Conflict(_))
    ));
    s.delete_link(&c2).await.unwrap();
    assert!(
        s.link_for_contact(&tenant(), "c2", Provider::HubSpot)
            .await
            .unwrap()
            .is_none()
    );
    s.put_link(&link("c2", Provider::HubSpot, "502"))
        .await
        .unwrap();
    assert_eq!(
        s.link_for_contact(&tenant(), "c2", Provider::HubSpot)
            .await
            .unwrap()
            .unwrap()
            .external_id,
        "502"
    );
}

/// Two cold workers each created the field: every claimant ends with the first key stored.
async fn the_first_field_key_stored_wins(s: impl Store) {
    let mut handles = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.claim_field_key(
                &tenant(),
                Provider::Pipedrive,
                CustomField::JobTitle,
                &format!("key{i}"),
            )
            .await
            .unwrap()
        }));
    }
    let mut keys = std::collections::BTreeSet::new();
    for h in handles {
        keys.insert(h.await.unwrap());
    }
    assert_eq!(keys.len(), 1, "{keys:?}");
    let stored = s
        .field_key(&tenant(), Provider::Pipedrive, CustomField::JobTitle)
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), keys.first());
    // A later claim keeps it; another tenant's is its own.
    assert_eq!(
        &s.claim_field_key(
            &tenant(),
            Provider::Pipedrive,
            CustomField::JobTitle,
            "late"
        )
        .await
        .unwrap(),
        keys.first().unwrap()
    );
    assert_eq!(
        s.claim_field_key(
            &TenantId::new("other"),
            Provider::Pipedrive,
            CustomField::JobTitle,
            "theirs"
        )
        .await
        .unwrap(),
        "theirs"
    );
}

/// However the send times fall, no window of the lane holds more sends than it allows.
fn assert_no_window_holds_more(mut sent: Vec<Duration>, lane: LaneLimit) {
    sent.sort();
    for (i, first) in sent.iter().enumerate() {
        let in_window = sent[i..]
            .iter()
            .take_while(|t| **t - *first < lane.window)
            .count();
        assert!(
            in_window <= lane.max as usize,
            "{in_window} sends within one window: {sent:?}"
        );
    }
}

/// Eight workers admitting requests at once through one store: no window ever holds more than
/// the lane allows, every admitted request is paid from one daily budget, and a tenant's limits
/// are its own.
async fn racing_workers_share_one_window_and_one_budget(s: impl Store) {
    const LANE: LaneLimit = LaneLimit {
        lane: "burst",
        max: 4,
        window: Duration::from_millis(500),
    };
    let t = tenant();
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        let t = t.clone();
        workers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for _ in 0..3 {
                loop {
                    match s
                        .admit(&t, Provider::Pipedrive, &[LANE], 5, Some(1_000))
                        .await
                        .unwrap()
                    {
                        Admission::Go => break,
                        Admission::Wait(w) => tokio::time::sleep(w).await,
                        Admission::Spent(_) => panic!("the budget has room"),
                    }
                }
                sent.push(started.elapsed());
            }
            sent
        }));
    }
    let mut sent = Vec::new();
    for w in workers {
        sent.extend(w.await.unwrap());
    }
    assert_eq!(sent.len(), 24);
    assert_no_window_holds_more(sent, LANE);
    assert_eq!(
        s.spent_today(&t, Provider::Pipedrive).await.unwrap(),
        24 * 5
    );
    // The budget binds every worker: 1,000 − 120 leaves room for 176 more of 5.
    let left = s
        .admit(&t, Provider::Pipedrive, &[], 881, Some(1_000))
        .await
        .unwrap();
    assert!(matches!(left, Admission::Spent(_)), "{left:?}");
    let other = TenantId::new("other");
    assert_eq!(s.spent_today(&other, Provider::Pipedrive).await.unwrap(), 0);
    assert_eq!(
        s.admit(&other, Provider::Pipedrive, &[LANE], 5, Some(1_000))
            .await
            .unwrap(),
        Admission::Go
    );
}

/// Eight workers sending through leases (each takes up to two places ahead, spent without
/// asking within the lease): however the leases fall, no window holds more than the lane allows.
async fn racing_workers_with_leases_keep_to_the_window(s: impl Store) {
    const LANE: LaneLimit = LaneLimit {
        lane: "burst",
        max: 8,
        window: Duration::from_millis(500),
    };
    const LEASE: Duration = Duration::from_millis(300);
    let t = tenant();
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let s = s.clone();
        let t = t.clone();
        workers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut leased: Option<(u32, std::time::Instant)> = None;
            let mut extras = 0;
            while sent.len() < 5 {
                if let Some((left, until)) = leased.as_mut()
                    && *left > 0
                    && std::time::Instant::now() < *until
                {
                    *left -= 1;
                } else {
                    loop {
                        let asked = std::time::Instant::now();
                        match s
                            .admit_leased(&t, Provider::HubSpot, &[LANE], 2, LEASE)
                            .await
                            .unwrap()
                        {
                            (Admission::Go, extra) => {
                                extras += extra;
                                leased = Some((extra, asked + LEASE - Duration::from_millis(50)));
                                break;
                            }
                            (Admission::Wait(w), _) => tokio::time::sleep(w).await,
                            (Admission::Spent(_), _) => panic!("no budget to spend"),
                        }
                    }
                }
                sent.push(started.elapsed());
                // Sends of one worker spread over its lease.
                tokio::time::sleep(Duration::from_millis(20 + 10 * w)).await;
            }
            (sent, extras)
        }));
    }
    let mut sent = Vec::new();
    let mut extras = 0;
    for w in workers {
        let (s, e) = w.await.unwrap();
        sent.extend(s);
        extras += e;
    }
    assert!(extras > 0, "no place was ever leased");
    assert_eq!(sent.len(), 40);
    assert_no_window_holds_more(sent, LANE);
    assert_eq!(
        s.spent_today(&t, Provider::HubSpot).await.unwrap(),
        0,
        "leased places pay from no budget"
    );
}

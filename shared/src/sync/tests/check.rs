//! Our writes checked: a CRM user's edit that our concurrent write overwrote is found by the
//! write's echo or by the record's field history, when the user's own event was lost.

use std::sync::Mutex;

use chrono::{DateTime, Duration};

use super::*;
use crate::domain::{Job, Reported};

/// The fixture's CRMs and store, served by a service whose clock can be moved on (a check
/// waits for its write's echo).
fn with_clock(f: &Fixture) -> (SyncService, Arc<Mutex<Duration>>) {
    let ahead = Arc::new(Mutex::new(Duration::zero()));
    let by = ahead.clone();
    let mut tenants = Tenants::new();
    tenants.add(
        TenantConfig::new("acme"),
        vec![Arc::new(f.hubspot.clone()), Arc::new(f.pipedrive.clone())],
    );
    let arc = Arc::new(f.store.clone());
    let service = SyncService::new(arc.clone(), arc.clone(), arc, Arc::new(tenants))
        .with_clock(Arc::new(move || Utc::now() + *by.lock().unwrap()));
    (service, ahead)
}

/// Contact c1 synced to both CRMs as "Ann"; then an app edit to "Anna" whose HubSpot write
/// overwrites a HubSpot user's "Annie", made after the sync read the record. No webhook of the
/// user's edit arrives, and both CRMs leave our writes to their echoes (as Pipedrive does), so
/// nothing has checked them yet. Returns the HubSpot link.
async fn overwritten_in_hubspot(f: &Fixture, service: &SyncService) -> ContactLink {
    f.hubspot.echo_what_writes_replace();
    f.pipedrive.echo_what_writes_replace();
    app_edit_over_a_hubspot_edit(f, service).await;
    let hs = link(f, "c1", Provider::HubSpot).await;
    assert_eq!(
        f.hubspot.record(&hs.external_id).unwrap().fields.first_name,
        Some("Anna".into()),
        "our write replaced the user's edit"
    );
    hs
}

/// Contact c1 synced as "Ann"; then an app edit to "Anna" synced, whose HubSpot write lands
/// over a HubSpot user's "Annie" made after the sync read the record. Returns the sync's report.
async fn app_edit_over_a_hubspot_edit(f: &Fixture, service: &SyncService) -> SyncReport {
    create_app_contact(f, "c1", "ann@x.io", "Ann").await;
    service.handle(&app_event("c1")).await.unwrap();
    let mut c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    c1.fields.first_name = Some("Anna".into());
    f.store.update(&c1).await.unwrap();
    let mut users = FieldPatch::default();
    users.insert(Field::FirstName, Some("Annie".into()));
    f.hubspot.edit_before_next_update(users);
    service.handle(&app_event("c1")).await.unwrap()
}

fn first_names(f: &Fixture, app: &Contact, hs: &str, pd: &str) -> Vec<Option<String>> {
    vec![
        app.fields.first_name.clone(),
        f.hubspot.record(hs).unwrap().fields.first_name,
        f.pipedrive.record(pd).unwrap().fields.first_name,
    ]
}

/// The user's webhook is lost: the check of our write, once its echo had time to come, reads
/// the record's field history, finds "Annie" set inside the write's window, logs the conflict
/// and restores it everywhere (the default policy: the CRM wins). The write is checked then: a
/// second check reads nothing and changes nothing.
#[tokio::test]
async fn an_overwritten_edit_whose_event_was_lost_is_found_by_the_check() {
    let f = fixture(true).await;
    let (service, ahead) = with_clock(&f);
    let hs = overwritten_in_hubspot(&f, &service).await;
    let window = hs.writes.clone();
    assert!(
        window.is_unchecked(),
        "our write is kept on the link: {window:?}"
    );

    // Too early: the check waits for the write's echo.
    let early = service
        .check_writes(&tenant(), Provider::HubSpot, &hs.external_id)
        .await;
    let Err(err @ SyncError::CheckDue { .. }) = early else {
        panic!("the check ran before its grace: {early:?}");
    };
    assert!(err.deferred_until().is_some());
    assert!(f.store.conflicts(&tenant(), 10).await.unwrap().is_empty());

    *ahead.lock().unwrap() = Duration::seconds(CHECK_GRACE_SECS + 1);
    let report = service
        .check_writes(&tenant(), Provider::HubSpot, &hs.external_id)
        .await
        .unwrap();
    assert_eq!(report.conflicts, 1);
    let conflicts = f.store.conflicts(&tenant(), 10).await.unwrap();
    assert_eq!(conflicts.len(), 1);
    let x = &conflicts[0].conflict;
    assert_eq!(
        (x.app_value.as_deref(), x.crm_value.as_deref(), x.winner),
        (Some("Anna"), Some("Annie"), Side::Crm)
    );
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(
        first_names(&f, &c1, &hs.external_id, &pd.external_id),
        vec![Some("Annie".into()); 3]
    );
    // The writes the check covered are checked; the restore is a new write of ours.
    let hs_after = link(&f, "c1", Provider::HubSpot).await;
    let unchecked = hs_after.writes.unchecked();
    assert!(
        unchecked.iter().all(|at| !window.unchecked().contains(at)),
        "{unchecked:?}"
    );

    // Checked again once the restore's grace is over: nothing new is found, nothing written.
    *ahead.lock().unwrap() = Duration::seconds(2 * CHECK_GRACE_SECS + 2);
    let writes = f.hubspot.writes() + f.pipedrive.writes();
    let again = service
        .check_writes(&tenant(), Provider::HubSpot, &hs.external_id)
        .await
        .unwrap();
    assert_eq!(
        (again.app_writes, again.crm_writes, again.conflicts),
        (0, 0, 0)
    );
    assert_eq!(f.hubspot.writes() + f.pipedrive.writes(), writes);
    assert_eq!(f.store.conflicts(&tenant(), 10).await.unwrap().len(), 1);
    let done = link(&f, "c1", Provider::HubSpot).await;
    assert!(!done.writes.is_unchecked());
}

/// In a CRM whose echo does not say what our write replaced (HubSpot), the sync checks its
/// write at once: the record's history shows the user's "Annie" before our "Anna", so the
/// same sync logs the conflict and restores it everywhere; nothing is left unchecked.
#[tokio::test]
async fn a_write_the_echo_will_not_check_is_checked_at_once() {
    let f = fixture(true).await;
    let report = app_edit_over_a_hubspot_edit(&f, &f.service).await;
    assert_eq!(report.conflicts, 1, "{report:?}");
    let conflicts = f.store.conflicts(&tenant(), 10).await.unwrap();
    let x = &conflicts[0].conflict;
    assert_eq!(
        (x.app_value.as_deref(), x.crm_value.as_deref(), x.winner),
        (Some("Anna"), Some("Annie"), Side::Crm)
    );
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(
        first_names(&f, &c1, &hs.external_id, &pd.external_id),
        vec![Some("Annie".into()); 3]
    );
    assert!(!hs.writes.is_unchecked(), "{:?}", hs.writes);
}

fn echo(record: &str, value: &str, landed: DateTime<Utc>) -> ChangeEvent {
    ChangeEvent {
        reported: vec![Reported::replaced(
            Field::FirstName,
            Some(value.into()),
            landed,
            Some("Anna".into()),
        )],
        occurred_at: landed,
        ..ChangeEvent::new(
            tenant(),
            Origin::Crm(Provider::HubSpot),
            record,
            ChangeKind::Echo,
        )
    }
}

/// The echo of our write says what the field held just before it. The value the sync read
/// there checks the write with no CRM call; a value it had not read is the overwritten user's
/// edit, logged and restored.
#[tokio::test]
async fn the_echo_of_our_write_checks_it() {
    // An echo of the value read: the write is checked, nothing else happens.
    let f = fixture(true).await;
    f.hubspot.echo_what_writes_replace();
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let mut c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    c1.fields.first_name = Some("Anna".into());
    f.store.update(&c1).await.unwrap();
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let landed = hs.writes.unchecked()[0];
    f.hubspot.fail_with(Some(CrmError::Unavailable {
        provider: Provider::HubSpot,
        message: "an echo needs no CRM call".into(),
    }));
    let r = f
        .service
        .handle(&echo(&hs.external_id, "Ann", landed))
        .await
        .unwrap();
    assert_eq!((r.app_writes, r.crm_writes, r.conflicts), (0, 0, 0));
    let checked = link(&f, "c1", Provider::HubSpot).await;
    assert!(!checked.writes.is_unchecked());
    f.hubspot.fail_with(None);

    // An echo showing a user's value we had not read.
    let f = fixture(true).await;
    let hs = overwritten_in_hubspot(&f, &f.service).await;
    let landed = hs.writes.unchecked()[0];
    let r = f
        .service
        .handle(&echo(&hs.external_id, "Annie", landed))
        .await
        .unwrap();
    assert_eq!(r.conflicts, 1);
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(
        first_names(&f, &c1, &hs.external_id, &pd.external_id),
        vec![Some("Annie".into()); 3]
    );
    // Delivered twice: the value is seen, nothing is logged again.
    let r = f
        .service
        .handle(&echo(&hs.external_id, "Annie", landed))
        .await
        .unwrap();
    assert_eq!((r.app_writes, r.crm_writes, r.conflicts), (0, 0, 0));
    assert_eq!(f.store.conflicts(&tenant(), 10).await.unwrap().len(), 1);
}

/// What queues the checks: the poll, for a listed record whose link has unchecked writes
/// (beside the change itself when the record is not agreed on), and Sync Now, for every link
/// with unchecked writes.
#[tokio::test]
async fn the_poll_and_sync_now_queue_the_checks_owed() {
    let f = fixture(true).await;
    let hs = overwritten_in_hubspot(&f, &f.service).await;
    let check = Job::Check {
        tenant: tenant(),
        provider: Provider::HubSpot,
        record_id: hs.external_id.clone(),
    };
    let queued = |q: &EmbeddedStore| {
        let q = q.clone();
        async move {
            let mut jobs = Vec::new();
            for d in q.receive(100).await.unwrap() {
                q.ack(&d).await.unwrap();
                jobs.push(d.job);
            }
            jobs
        }
    };
    let q = &f.store;
    f.service
        .poll(&tenant(), Provider::HubSpot, q, 10)
        .await
        .unwrap();
    let jobs = queued(q).await;
    assert!(jobs.contains(&check), "{jobs:?}");

    f.service.reconcile(&tenant(), q, 1).await.unwrap();
    let jobs = queued(q).await;
    assert!(jobs.contains(&check), "{jobs:?}");
    // Pipedrive's write is unchecked too (no echo came): its check is owed as well.
    let pd = link(&f, "c1", Provider::Pipedrive).await;
    assert!(jobs.contains(&Job::Check {
        tenant: tenant(),
        provider: Provider::Pipedrive,
        record_id: pd.external_id,
    }));
}

/// A sync's app write lands but its answer is lost (the link is not updated after it); the
/// user then edits the field in the app. The retry knows from the contact's stamp that our
/// write landed, so the user's newer edit is the app's change and wins — not a "conflict" the
/// CRM's older value would win.
#[tokio::test]
async fn an_app_write_whose_answer_was_lost_is_known_as_ours() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let service = over_contacts(
        &f,
        Arc::new(FaultyContacts::losing_answers(f.store.clone())),
    );
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Anne".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);
    let hubspot_event = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        hs.external_id.clone(),
        ChangeKind::Upsert,
    );
    assert!(
        service.handle(&hubspot_event).await.is_err(),
        "the answer was lost"
    );
    let mut c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c1.fields.first_name.as_deref(), Some("Anne"), "it landed");
    c1.fields.first_name = Some("Annika".into());
    f.store.update(&c1).await.unwrap();

    let r = service.handle(&hubspot_event).await.unwrap();
    assert_eq!(r.conflicts, 0, "{r:?}");
    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c1.fields.first_name.as_deref(), Some("Annika"));
    assert_eq!(
        f.hubspot
            .record(&hs.external_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Annika")
    );
    assert!(f.store.conflicts(&tenant(), 10).await.unwrap().is_empty());
}

/// An app write of ours (HubSpot's "Lee") lands with its answer lost, so the contact keeps its
/// stamp; the app moves on ("Nan"). The next sync writes "Nan" to HubSpot and stores what that
/// agreed before its app write, which a user's newer edit ("Racer") then beats. The agreed base
/// must say it includes the stamped write, or the retry takes "Lee" for the base again, sees
/// both sides changed, and the CRM's "Nan" wins over the user's newer "Racer" (seed 7087 with
/// 8 workers).
#[tokio::test]
async fn a_base_agreed_mid_plan_knows_the_app_write_it_includes() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let hubspot_event = ChangeEvent::new(
        tenant(),
        Origin::Crm(Provider::HubSpot),
        hs.external_id.clone(),
        ChangeKind::Upsert,
    );
    let mut patch = FieldPatch::default();
    patch.insert(Field::LastName, Some("Lee".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);
    let losing = over_contacts(
        &f,
        Arc::new(FaultyContacts::losing_answers(f.store.clone())),
    );
    assert!(losing.handle(&hubspot_event).await.is_err(), "answer lost");
    let mut c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c1.fields.last_name.as_deref(), Some("Lee"), "it landed");
    c1.fields.last_name = Some("Nan".into());
    f.store.update(&c1).await.unwrap();
    // HubSpot's first name changes too: the next sync writes both ways, and its app write
    // loses to the user's "Racer".
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Anne".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);
    let racing = Arc::new(FaultyContacts::racing(f.store.clone()));
    over_contacts(&f, racing.clone())
        .handle(&hubspot_event)
        .await
        .unwrap();
    assert!(racing.raced());

    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    let hs_fields = f.hubspot.record(&hs.external_id).unwrap().fields;
    for (side, fields) in [("app", &c1.fields), ("HubSpot", &hs_fields)] {
        assert_eq!(fields.last_name.as_deref(), Some("Racer"), "{side}");
        assert_eq!(fields.first_name.as_deref(), Some("Anne"), "{side}");
    }
    assert!(
        f.store.conflicts(&tenant(), 10).await.unwrap().is_empty(),
        "no false conflict"
    );
}

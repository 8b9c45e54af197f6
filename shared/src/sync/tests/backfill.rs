//! Sync Now's batch backfill follows the per-contact path's rules: an existing CRM record is
//! merged by the engine (CRM wins by default, conflicts logged), a record linked to another
//! contact is never taken over, and creates happen once, under intents.

use super::*;

/// A CRM record with the contact's email and another first name: the engine decides (the CRM
/// wins by default) and logs the conflict, as a single sync does; no blind overwrite.
#[tokio::test]
async fn an_existing_record_is_merged_by_the_engine_and_the_conflict_logged() {
    let f = fixture(true).await;
    let existing = f.hubspot.user_create(ContactFields {
        email: Some("ann@x.io".into()),
        first_name: Some("Annie".into()),
        phone: Some("+1 555 0100".into()),
        ..Default::default()
    });
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    create_app_contact(&f, "c2", "bo@x.io", "Bo").await;
    let (linked, more) = f
        .service
        .backfill(&tenant(), Provider::HubSpot, None)
        .await
        .unwrap();
    assert_eq!((linked, more), (2, false));
    assert_eq!(f.hubspot.records().len(), 2, "one created, one matched");
    let hs = link(&f, "c1", Provider::HubSpot).await;
    assert_eq!(hs.external_id, existing);
    assert_eq!(hs.status, LinkStatus::Synced);
    let record = f.hubspot.record(&existing).unwrap();
    assert_eq!(
        record.fields.first_name.as_deref(),
        Some("Annie"),
        "CRM wins"
    );
    assert_eq!(
        record.fields.pronouns.as_deref(),
        Some("they/them"),
        "app fills blanks"
    );
    let c1 = f.store.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c1.fields.first_name.as_deref(), Some("Annie"));
    assert_eq!(c1.fields.phone.as_deref(), Some("+1 555 0100"));
    let log = f.store.conflicts(&tenant(), 10).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].conflict.field, Field::FirstName);
    assert_eq!(log[0].contact_id, "c1");
}

/// A record already linked to another contact (its email changed in the CRM to an unlinked
/// contact's) is not taken over: the unlinked contact shows the problem, and Sync Now after
/// Sync Now writes nothing to it.
#[tokio::test]
async fn a_record_linked_to_another_contact_is_never_overwritten() {
    let f = fixture(true).await;
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    f.service.handle(&app_event("c1")).await.unwrap();
    let hs = link(&f, "c1", Provider::HubSpot).await;
    let mut patch = FieldPatch::default();
    patch.insert(Field::Email, Some("bo@x.io".into()));
    f.hubspot.user_edit(&hs.external_id, &patch);
    // Bo is added in the app before the edit comes back.
    create_app_contact(&f, "c2", "bo@x.io", "Bo").await;
    for _ in 0..2 {
        let writes = f.hubspot.writes();
        f.service
            .backfill(&tenant(), Provider::HubSpot, None)
            .await
            .unwrap();
        assert_eq!(
            f.hubspot.writes(),
            writes,
            "nothing written to Ann's record"
        );
    }
    let record = f.hubspot.record(&hs.external_id).unwrap();
    assert_eq!(record.fields.first_name.as_deref(), Some("Ann"));
    assert!(
        f.store
            .link_for_contact(&tenant(), "c2", Provider::HubSpot)
            .await
            .unwrap()
            .is_none()
    );
    let issues = f.store.issues(&tenant(), "c2").await.unwrap();
    assert!(
        issues
            .iter()
            .any(|i| i.provider == Provider::HubSpot && i.message.contains("already linked")),
        "{issues:?}"
    );
}

/// One contact the CRM refuses, in a backfill of many: the others are created and linked, the
/// refused one shows the CRM's message as its issue, and the round does not fail.
#[tokio::test]
async fn a_record_the_crm_refuses_fails_alone_and_says_why() {
    let f = fixture(true).await;
    for i in 0..12 {
        create_app_contact(&f, &format!("c{i}"), &format!("p{i}@x.io"), "P").await;
    }
    f.hubspot.refuse_email("p5@x.io");
    f.service
        .backfill(&tenant(), Provider::HubSpot, None)
        .await
        .unwrap();
    for i in (0..12).filter(|i| *i != 5) {
        let l = link(&f, &format!("c{i}"), Provider::HubSpot).await;
        assert_eq!(l.status, LinkStatus::Synced, "c{i}");
    }
    assert!(
        f.store
            .link_for_contact(&tenant(), "c5", Provider::HubSpot)
            .await
            .unwrap()
            .is_none()
    );
    let issues = f.store.issues(&tenant(), "c5").await.unwrap();
    assert!(
        issues.iter().any(|i| i.provider == Provider::HubSpot
            && i.message.contains("Email address p5@x.io is invalid")),
        "{issues:?}"
    );
    assert_eq!(f.hubspot.records().len(), 11);
}

/// A contact another worker is creating (its intent is there) is left to it: the backfill
/// neither creates a second record nor disturbs the intent.
#[tokio::test]
async fn a_contact_being_created_elsewhere_is_left_alone() {
    let f = fixture(true).await;
    f.pipedrive.allow_duplicate_emails();
    create_app_contact(&f, "c1", "ann@x.io", "Ann").await;
    let intent = f
        .store
        .put_link(&ContactLink::intent(
            &tenant(),
            "c1",
            Provider::Pipedrive,
            ContactFields::default(),
            Utc::now(),
        ))
        .await
        .unwrap();
    let (linked, _) = f
        .service
        .backfill(&tenant(), Provider::Pipedrive, None)
        .await
        .unwrap();
    assert_eq!(linked, 0);
    assert!(f.pipedrive.records().is_empty());
    assert_eq!(
        f.store
            .link_for_contact(&tenant(), "c1", Provider::Pipedrive)
            .await
            .unwrap(),
        Some(intent)
    );
}

/// The batch create's answer is lost (Pipedrive, no unique emails): the intents stay, and the
/// next Sync Now after the grace finds the records by email instead of creating them again.
#[tokio::test]
async fn a_lost_batch_create_answer_creates_nothing_twice() {
    let f = fixture(true).await;
    f.pipedrive.allow_duplicate_emails();
    f.pipedrive.lose_create_answers(1);
    for i in 0..3 {
        create_app_contact(&f, &format!("c{i}"), &format!("p{i}@x.io"), "P").await;
    }
    f.service
        .backfill(&tenant(), Provider::Pipedrive, None)
        .await
        .unwrap();
    assert_eq!(f.pipedrive.records().len(), 3);
    let service = f.service.clone().with_create_grace(Duration::ZERO);
    // The intent left by the lost answer is taken over through the per-contact path.
    let q: &dyn JobQueue = &f.store;
    service.reconcile(&tenant(), q, 1).await.unwrap();
    while worker::run_once(&service, q, 10).await.unwrap() > 0 {}
    assert_eq!(f.pipedrive.records().len(), 3, "no second record");
    for i in 0..3 {
        let pd = link(&f, &format!("c{i}"), Provider::Pipedrive).await;
        assert_eq!(pd.status, LinkStatus::Synced, "c{i}");
    }
}

/// A backfill whose job's deadline comes before it is through stops there: the contacts done
/// are linked, the rest show no error (their intents withdrawn), and the next round finishes
/// the work with no duplicate.
#[tokio::test(start_paused = true)]
async fn a_backfill_stops_at_the_job_s_deadline_and_the_next_round_goes_on() {
    let f = fixture(true).await;
    for i in 0..10 {
        create_app_contact(&f, &format!("c{i}"), &format!("p{i}@x.io"), "P").await;
    }
    f.pipedrive
        .slow_creates(std::time::Duration::from_millis(300));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1_000);
    let (linked, more) = crate::deadline::within(
        deadline,
        f.service.backfill(&tenant(), Provider::Pipedrive, None),
    )
    .await
    .unwrap();
    assert!(more, "cut short by the deadline");
    assert!(
        (1..10).contains(&linked),
        "{linked} linked before the deadline"
    );
    assert_eq!(f.pipedrive.records().len(), linked, "nothing made past it");
    let links = f.store.links_for_tenant(&tenant()).await.unwrap();
    let pd: Vec<_> = links
        .iter()
        .filter(|l| l.provider == Provider::Pipedrive)
        .collect();
    assert_eq!(pd.len(), linked, "no intent left behind: {pd:?}");
    assert!(pd.iter().all(|l| l.status == LinkStatus::Synced));
    for i in 0..10 {
        let issues = f.store.issues(&tenant(), &format!("c{i}")).await.unwrap();
        assert!(
            issues.is_empty(),
            "running out of time is not a failure: {issues:?}"
        );
    }
    let (rest, more) = f
        .service
        .backfill(&tenant(), Provider::Pipedrive, None)
        .await
        .unwrap();
    assert_eq!((linked + rest, more), (10, false));
    assert_eq!(f.pipedrive.records().len(), 10, "no duplicate");
}

/// A first sync larger than a CRM's daily budget: the backfill of that CRM stops there (the
/// contacts that wait are not failures), Sync Now says how many wait for which CRM and until
/// when, the other CRM goes on, and the schedule resumes the backfill after the reset.
#[tokio::test]
async fn a_spent_daily_budget_holds_the_backfill_until_the_reset_then_it_resumes() {
    let f = fixture(true).await;
    for i in 0..150 {
        create_app_contact(&f, &format!("c{i:03}"), &format!("b{i}@x.io"), "B").await;
    }
    // A clock the test moves: the budget resets in an hour.
    let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let moved = offset.clone();
    let service = f.service.clone().with_clock(Arc::new(move || {
        Utc::now() + chrono::Duration::seconds(moved.load(std::sync::atomic::Ordering::SeqCst))
    }));
    let reset = Utc::now() + chrono::Duration::hours(1);
    f.pipedrive.fail_with(Some(CrmError::QuotaExhausted {
        provider: Provider::Pipedrive,
        until: reset,
    }));
    let q: &dyn JobQueue = &f.store;
    start_sync_now(q).await;
    drain(&service, q).await;
    let progress = service.sync_now_progress(&tenant()).await.unwrap().unwrap();
    assert_eq!(progress.phase, "waiting for the daily budget of pipedrive");
    assert!(
        !progress.running && progress.finished_at.is_none(),
        "{progress:?}"
    );
    assert_eq!(progress.waiting.len(), 1, "{progress:?}");
    let wait = &progress.waiting[0];
    assert_eq!(
        (wait.provider, wait.contacts, wait.resume_at),
        (Provider::Pipedrive, 150, reset)
    );
    assert!(progress.errors.is_empty(), "{progress:?}");
    assert_eq!(progress.polled, [Provider::HubSpot]);
    assert_eq!(f.hubspot.records().len(), 150, "HubSpot went on");
    assert!(f.pipedrive.records().is_empty());
    for c in ["c000", "c077", "c149"] {
        assert!(
            f.store.issues(&tenant(), c).await.unwrap().is_empty(),
            "waiting contacts are not failures"
        );
    }
    // Before the reset, the schedule leaves it alone.
    assert!(!service.resume_waiting(&tenant(), q).await.unwrap());

    // After it, the schedule resumes the backfill by itself.
    f.pipedrive.fail_with(None);
    offset.store(2 * 3600, std::sync::atomic::Ordering::SeqCst);
    assert!(service.resume_waiting(&tenant(), q).await.unwrap());
    assert!(
        !service.resume_waiting(&tenant(), q).await.unwrap(),
        "resumed once"
    );
    drain(&service, q).await;
    let progress = service.sync_now_progress(&tenant()).await.unwrap().unwrap();
    assert_eq!(progress.phase, "done", "{progress:?}");
    assert!(progress.waiting.is_empty(), "{progress:?}");
    assert_eq!(progress.backfilled, 300);
    assert_eq!(progress.polled, [Provider::HubSpot, Provider::Pipedrive]);
    assert_eq!(f.pipedrive.records().len(), 150);
}

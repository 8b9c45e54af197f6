use super::*;
use crate::domain::{ChangeEvent, ChangeKind, ContactFields, CustomField, LinkStatus, Origin};

fn tenant() -> TenantId {
    TenantId::new("t1")
}

fn contact(id: &str, email: &str) -> Contact {
    let now = Utc::now();
    Contact {
        tenant: tenant(),
        id: id.into(),
        fields: ContactFields {
            email: Some(email.into()),
            ..Default::default()
        },
        version: 0,
        created_at: now,
        last_app_modified: now,
        deleted: false,
    }
}

fn link(contact_id: &str, external_id: &str) -> ContactLink {
    ContactLink {
        tenant: tenant(),
        contact_id: contact_id.into(),
        provider: Provider::HubSpot,
        external_id: external_id.into(),
        last_synced_at: None,
        status: LinkStatus::Synced,
        last_error: None,
        crm_last_modified: None,
        base: ContactFields::default(),
        base_hash: String::new(),
        warnings: vec![],
        version: 0,
    }
}

#[tokio::test]
async fn contacts_insert_get_update_with_versions() {
    let s = EmbeddedStore::in_memory().unwrap();
    let c = s.insert(&contact("c1", "a@x.io")).await.unwrap();
    assert_eq!(c.version, 1);
    assert_eq!(s.get(&tenant(), "c1").await.unwrap().unwrap(), c);
    assert!(
        s.get(&TenantId::new("other"), "c1")
            .await
            .unwrap()
            .is_none()
    );
    let mut c2 = c.clone();
    c2.fields.first_name = Some("Ann".into());
    let c2 = s.update(&c2).await.unwrap();
    assert_eq!(c2.version, 2);
    // A writer holding the old version loses.
    let err = s.update(&c).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));
    assert_eq!(
        s.find_by_email(&tenant(), "A@X.io")
            .await
            .unwrap()
            .unwrap()
            .id,
        "c1"
    );
}

#[tokio::test]
async fn live_emails_are_unique_per_tenant() {
    let s = EmbeddedStore::in_memory().unwrap();
    s.insert(&contact("c1", "a@x.io")).await.unwrap();
    let err = s.insert(&contact("c2", "a@x.io")).await.unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)));
    let mut other = contact("c3", "a@x.io");
    other.tenant = TenantId::new("t2");
    s.insert(&other).await.unwrap();
    // Once deleted, the email is free again.
    let mut c1 = s.get(&tenant(), "c1").await.unwrap().unwrap();
    c1.deleted = true;
    s.update(&c1).await.unwrap();
    s.insert(&contact("c2", "a@x.io")).await.unwrap();
}

#[tokio::test]
async fn list_pages_in_id_order() {
    let s = EmbeddedStore::in_memory().unwrap();
    for i in 0..5 {
        s.insert(&contact(&format!("c{i}"), &format!("{i}@x.io")))
            .await
            .unwrap();
    }
    let p1 = s.list(&tenant(), None, 2).await.unwrap();
    assert_eq!(
        p1.items.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c0", "c1"]
    );
    let p2 = s.list(&tenant(), p1.next.as_deref(), 2).await.unwrap();
    assert_eq!(p2.items[0].id, "c2");
    let p3 = s.list(&tenant(), p2.next.as_deref(), 2).await.unwrap();
    assert_eq!(p3.items.len(), 1);
    assert_eq!(p3.next, None);
}

/// Two concurrent writers doing read-modify-write with retry on conflict: no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_update() {
    let s = EmbeddedStore::in_memory().unwrap();
    s.insert(&contact("c1", "a@x.io")).await.unwrap();
    let per_writer = 100;
    let mut handles = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0;
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
                    tokio::task::yield_now().await;
                    match s.update(&c).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict(_)) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let c = s.get(&tenant(), "c1").await.unwrap().unwrap();
    assert_eq!(c.fields.job_title.as_deref(), Some("200"));
    assert_eq!(c.version, 201);
    println!("conflicts retried: {conflicts}");
}

#[tokio::test]
async fn links_are_conditional_and_indexed_by_contact() {
    let s = EmbeddedStore::in_memory().unwrap();
    let l = s.put_link(&link("c1", "100")).await.unwrap();
    assert_eq!(l.version, 1);
    // Creating the same link again (version 0) conflicts.
    assert!(matches!(
        s.put_link(&link("c1", "100")).await,
        Err(StoreError::Conflict(_))
    ));
    let l2 = s.put_link(&l).await.unwrap();
    assert_eq!(l2.version, 2);
    assert!(matches!(s.put_link(&l).await, Err(StoreError::Conflict(_))));
    let mut p = link("c1", "7");
    p.provider = Provider::Pipedrive;
    s.put_link(&p).await.unwrap();
    let all = s.links_for_contact(&tenant(), "c1").await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        s.get_link(&tenant(), Provider::Pipedrive, "7")
            .await
            .unwrap()
            .unwrap()
            .contact_id,
        "c1"
    );
    assert!(
        s.get_link(&TenantId::new("t2"), Provider::Pipedrive, "7")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        s.delete_link(&tenant(), Provider::HubSpot, "100", 1).await,
        Err(StoreError::Conflict(_))
    ));
    s.delete_link(&tenant(), Provider::HubSpot, "100", 2)
        .await
        .unwrap();
    assert_eq!(s.links_for_contact(&tenant(), "c1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn state_cursors_fields_stats_conflicts_dedupe() {
    let s = EmbeddedStore::in_memory().unwrap();
    let t = tenant();
    assert_eq!(s.cursor(&t, "pipedrive").await.unwrap(), None);
    s.set_cursor(&t, "pipedrive", "2026-01-01T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(
        s.cursor(&t, "pipedrive").await.unwrap().as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    s.set_field_key(&t, Provider::Pipedrive, CustomField::Pronouns, Some("abc"))
        .await
        .unwrap();
    assert_eq!(
        s.field_key(&t, Provider::Pipedrive, CustomField::Pronouns)
            .await
            .unwrap()
            .as_deref(),
        Some("abc")
    );
    assert_eq!(
        s.field_key(&t, Provider::HubSpot, CustomField::Pronouns)
            .await
            .unwrap(),
        None
    );
    s.record_outcome(&t, Provider::HubSpot, Ok(()), 2)
        .await
        .unwrap();
    s.record_outcome(&t, Provider::HubSpot, Err("boom".into()), 0)
        .await
        .unwrap();
    let st = s.stats(&t, Provider::HubSpot).await.unwrap();
    assert_eq!((st.synced, st.errors, st.conflicts), (1, 1, 2));
    assert_eq!(st.last_error.as_deref(), Some("boom"));
    assert!(
        s.first_sighting(&t, "e1", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        !s.first_sighting(&t, "e1", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        s.first_sighting(&TenantId::new("t2"), "e1", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        s.first_sighting(&t, "e2", Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        s.first_sighting(&t, "e2", Duration::from_millis(1))
            .await
            .unwrap()
    );
    s.set_issue(&t, "c1", Provider::HubSpot, Some("down"))
        .await
        .unwrap();
    assert_eq!(s.issues(&t, "c1").await.unwrap()[0].message, "down");
    s.set_issue(&t, "c1", Provider::HubSpot, None)
        .await
        .unwrap();
    assert!(s.issues(&t, "c1").await.unwrap().is_empty());
}

fn event(id: &str) -> ChangeEvent {
    ChangeEvent::new(tenant(), Origin::App, id, ChangeKind::Upsert)
}

#[tokio::test]
async fn queue_retries_three_times_then_dead_letters_and_replays() {
    let q = EmbeddedStore::in_memory().unwrap();
    q.enqueue_changes(&[event("c1"), event("c2")])
        .await
        .unwrap();
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 2);
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].attempt, 1);
    // In flight: not handed out twice.
    assert!(q.receive(10).await.unwrap().is_empty());
    q.ack(&got[1]).await.unwrap();
    let mut d = got[0].clone();
    for attempt in 1..=MAX_ATTEMPTS {
        assert_eq!(d.attempt, attempt);
        let outcome = q.fail(&d, "boom", Duration::ZERO).await.unwrap();
        if attempt < MAX_ATTEMPTS {
            assert_eq!(outcome, FailOutcome::WillRetry);
            d = q.receive(10).await.unwrap().remove(0);
        } else {
            assert_eq!(outcome, FailOutcome::DeadLettered);
        }
    }
    assert!(q.receive(10).await.unwrap().is_empty());
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 0);
    assert_eq!(q.dlq_depth(&tenant()).await.unwrap().jobs, 1);
    assert_eq!(q.dlq_depth(&TenantId::new("t2")).await.unwrap().jobs, 0);
    assert_eq!(q.replay_dlq(&TenantId::new("t2")).await.unwrap(), 0);
    assert_eq!(q.replay_dlq(&tenant()).await.unwrap(), 1);
    let again = q.receive(10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.change().unwrap().record_id, "c1");
    assert_eq!(again[0].attempt, 1);
}

#[tokio::test]
async fn deferred_jobs_wait_and_keep_their_attempts() {
    let q = EmbeddedStore::in_memory().unwrap();
    q.enqueue_changes(&[event("c1")]).await.unwrap();
    let d = q.receive(1).await.unwrap().remove(0);
    q.defer(&d, Utc::now() + chrono::Duration::milliseconds(30))
        .await
        .unwrap();
    assert!(q.receive(1).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(40)).await;
    let d = q.receive(1).await.unwrap().remove(0);
    assert_eq!(d.attempt, 1);
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = std::env::temp_dir().join(format!("cs-embedded-{}", uuid::Uuid::new_v4()));
    {
        let s = EmbeddedStore::open_dir(&dir).unwrap();
        s.insert(&contact("c1", "a@x.io")).await.unwrap();
        s.enqueue_changes(&[event("c1")]).await.unwrap();
    }
    let s = EmbeddedStore::open_dir(&dir).unwrap();
    assert!(s.get(&tenant(), "c1").await.unwrap().is_some());
    assert_eq!(s.depth(&tenant()).await.unwrap().jobs, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn queue_and_dlq_depths_count_only_the_tenants_jobs() {
    let q = EmbeddedStore::in_memory().unwrap();
    let other = TenantId::new("t2");
    q.enqueue_changes(&[
        event("c1"),
        ChangeEvent::new(other.clone(), Origin::App, "x1", ChangeKind::Upsert),
        ChangeEvent::new(other.clone(), Origin::App, "x2", ChangeKind::Upsert),
    ])
    .await
    .unwrap();
    assert_eq!(q.depth(&tenant()).await.unwrap(), QueueDepth::tenant(1));
    assert_eq!(q.depth(&other).await.unwrap(), QueueDepth::tenant(2));
    for d in q.receive(10).await.unwrap() {
        let mut d = d;
        while q.fail(&d, "boom", Duration::ZERO).await.unwrap() == FailOutcome::WillRetry {
            d = q
                .receive(10)
                .await
                .unwrap()
                .into_iter()
                .find(|x| x.job.change().unwrap().record_id == d.job.change().unwrap().record_id)
                .unwrap();
        }
    }
    assert_eq!(q.dlq_depth(&tenant()).await.unwrap(), QueueDepth::tenant(1));
    assert_eq!(q.dlq_depth(&other).await.unwrap(), QueueDepth::tenant(2));
    assert_eq!(q.depth(&other).await.unwrap().jobs, 0);
}

/// A worker that dies with a job in flight (no ack, no fail) loses nothing: after a restart the
/// job is handed out again once its visibility timeout has passed, as its second attempt.
#[tokio::test]
async fn a_job_in_flight_when_the_process_dies_is_redelivered_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("cs-embedded-{}", uuid::Uuid::new_v4()));
    let visibility = Duration::from_millis(100);
    {
        let s = EmbeddedStore::open_dir(&dir)
            .unwrap()
            .with_visibility_timeout(visibility);
        s.enqueue_changes(&[event("c1")]).await.unwrap();
        let d = s.receive(10).await.unwrap().remove(0);
        assert_eq!(d.attempt, 1);
        // The process dies here: the store is dropped without ack or fail.
    }
    let s = EmbeddedStore::open_dir(&dir)
        .unwrap()
        .with_visibility_timeout(visibility);
    assert_eq!(s.depth(&tenant()).await.unwrap().jobs, 1, "still queued");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        if let Some(d) = s.receive(10).await.unwrap().pop() {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "never redelivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again.job.change().unwrap().record_id, "c1");
    assert_eq!(again.attempt, 2);
    s.ack(&again).await.unwrap();
    assert_eq!(s.depth(&tenant()).await.unwrap().jobs, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

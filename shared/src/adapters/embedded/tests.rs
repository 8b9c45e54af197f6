use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::domain::{ChangeEvent, ChangeKind, Contact, ContactFields, Origin, TenantId};
use crate::ports::{ContactStore, FailOutcome, JobQueue, QueueDepth};

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
        synced: Default::default(),
    }
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
    assert!(
        again[0].job.change().unwrap().replayed,
        "a replayed job says so"
    );
    assert_eq!(again[0].attempt, 1);
}

#[tokio::test]
async fn a_contacts_history_keeps_its_newest_fifty_rows() {
    use crate::domain::{HistoryEntry, Trigger};
    use crate::ports::SyncHistory;
    let s = EmbeddedStore::in_memory().unwrap();
    for i in 0..60 {
        s.record_history(&HistoryEntry {
            tenant: tenant(),
            contact_id: "c1".into(),
            at: Utc::now() + chrono::Duration::milliseconds(i),
            trigger: Trigger::App,
            crms: Vec::new(),
        })
        .await
        .unwrap();
    }
    let rows: i64 = s
        .db()
        .query_row(
            "SELECT count(*) FROM state WHERE tenant = ?1 AND k LIKE 'history#c1#%'",
            [tenant().as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 50);
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

//! The SQS queue against moto server with the real AWS SDK client, and the sync service running
//! on DynamoDB and SQS. The store ports have their contract in `store_contract.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use shared::adapters::aws::dynamo::{DynamoStore, TableNames};
use shared::adapters::aws::sqs::SqsQueue;
use shared::crm::memory::MemoryCrm;
use shared::error::StoreError;
use shared::ports::{ContactStore, DepthScope, FailOutcome, JobQueue, LinkStore, QueueDepth};
use shared::provision::{ClientKit, RegistrySource};
use shared::sync::SyncService;
use shared::tenant::{TenantConfig, TenantKey, TenantRecord, TenantRegistry, Tenants};
use shared::{ChangeEvent, ChangeKind, Contact, ContactFields, Origin, Provider, TenantId};

fn tenant() -> TenantId {
    TenantId::new("acme")
}

async fn store() -> DynamoStore {
    let cfg = common::moto::sdk_config().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let s = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        TableNames::with_prefix(&prefix),
    );
    s.create_tables().await.unwrap();
    s
}

fn contact(id: &str, email: &str) -> Contact {
    let now = Utc::now();
    Contact {
        tenant: tenant(),
        id: id.into(),
        fields: ContactFields {
            email: Some(email.into()),
            first_name: Some("First".into()),
            ..Default::default()
        },
        version: 0,
        created_at: now,
        last_app_modified: now,
        deleted: false,
        synced: Default::default(),
    }
}

async fn queues(visibility: i32) -> SqsQueue {
    let (client, url, dlq_url) = common::moto::sync_queues(visibility).await;
    SqsQueue::new(client, url, dlq_url)
}

fn event(tenant: &str, id: &str) -> ChangeEvent {
    ChangeEvent::new(TenantId::new(tenant), Origin::App, id, ChangeKind::Upsert)
}

#[tokio::test]
async fn sqs_batches_of_ten_receive_ack_depth() {
    let q = queues(30).await;
    let events: Vec<_> = (0..25).map(|i| event("acme", &format!("c{i}"))).collect();
    q.enqueue_changes(&events).await.unwrap();
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 25);
    let mut got = Vec::new();
    while got.len() < 25 {
        let batch = q.receive(10).await.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 10);
        for d in &batch {
            assert_eq!(d.attempt, 1);
            q.ack(d).await.unwrap();
        }
        got.extend(
            batch
                .into_iter()
                .map(|d| d.job.change().unwrap().record_id.clone()),
        );
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 25);
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 0);
    q.enqueue_delayed(&event("acme", "later").into(), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "a delayed message is not due yet"
    );
}

/// A deferred job (quota spent) leaves the queue now and comes back after the wait as a fresh
/// message: its earlier failed attempts do not count towards the DLQ.
#[tokio::test]
async fn sqs_defer_replaces_the_message_with_a_delayed_fresh_copy() {
    let q = queues(0).await;
    q.enqueue_changes(&[event("acme", "c1")]).await.unwrap();
    let first = q.receive(10).await.unwrap().remove(0);
    assert_eq!(
        q.fail(&first, "boom", Duration::ZERO).await.unwrap(),
        FailOutcome::WillRetry
    );
    let second = q.receive(10).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    q.defer(&second, Utc::now() + chrono::Duration::seconds(2))
        .await
        .unwrap();
    assert!(q.receive(10).await.unwrap().is_empty(), "not due yet");
    assert_eq!(
        q.depth(&tenant()).await.unwrap().jobs,
        1,
        "one delayed message, the deferred one deleted"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let back = loop {
        if let Some(d) = q.receive(10).await.unwrap().pop() {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deferred job never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(back.job.change().unwrap().record_id, "c1");
    assert_eq!(back.attempt, 1, "a fresh copy: three attempts again");
    q.ack(&back).await.unwrap();
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 0);
}

#[tokio::test]
async fn three_failures_dead_letter_and_replay_brings_it_back() {
    let q = queues(1).await;
    q.enqueue_changes(&[event("acme", "c1"), event("other", "c9")])
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    let mut receives = 0;
    while receives < 20 {
        receives += 1;
        let batch = q.receive(10).await.unwrap();
        if batch.is_empty() {
            if q.dlq_depth(&tenant()).await.unwrap().jobs == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        for d in &batch {
            outcomes.push((
                d.job.change().unwrap().record_id.clone(),
                d.attempt,
                q.fail(d, "boom", Duration::ZERO).await.unwrap(),
            ));
        }
    }
    let c1: Vec<_> = outcomes.iter().filter(|o| o.0 == "c1").collect();
    assert_eq!(c1.iter().map(|o| o.1).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(c1[2].2, FailOutcome::DeadLettered);
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 0);
    // SQS counts whole queues: the figure is the deployment's (both tenants' dead letters),
    // and says so.
    assert_eq!(
        q.dlq_depth(&tenant()).await.unwrap(),
        QueueDepth {
            jobs: 2,
            scope: DepthScope::Deployment
        }
    );

    // Replay moves only this tenant's message back.
    assert_eq!(q.replay_dlq(&tenant()).await.unwrap(), 1);
    let back = q.receive(10).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].job.change().unwrap().record_id, "c1");
    assert!(
        back[0].job.change().unwrap().replayed,
        "a replayed job says so"
    );
    assert_eq!(
        back[0].attempt, 1,
        "a replayed job gets three fresh attempts"
    );
    q.ack(&back[0]).await.unwrap();
    // The other tenant's dead letter stayed, released at once: its own replay finds it.
    assert_eq!(
        q.dlq_depth(&TenantId::new("other")).await.unwrap().jobs,
        1,
        "the other tenant's dead letter stays"
    );
    assert_eq!(q.replay_dlq(&TenantId::new("other")).await.unwrap(), 1);
}

#[tokio::test]
async fn sync_service_runs_on_dynamodb_and_sqs() {
    let s = Arc::new(store().await);
    let q = queues(30).await;
    let crm = MemoryCrm::new(Provider::HubSpot);
    let mut tenants = Tenants::new();
    tenants.add(TenantConfig::new("acme"), vec![Arc::new(crm.clone())]);
    let service = SyncService::new(s.clone(), s.clone(), s.clone(), Arc::new(tenants));
    s.insert(&contact("c1", "a@x.io")).await.unwrap();
    q.enqueue_changes(&[event("acme", "c1")]).await.unwrap();
    let n = shared::sync::worker::run_once(&service, &q, 10)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let links = s.links_for_contact(&tenant(), "c1").await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(
        crm.record(&links[0].external_id)
            .unwrap()
            .fields
            .email
            .as_deref(),
        Some("a@x.io")
    );
    assert_eq!(q.depth(&tenant()).await.unwrap().jobs, 0);
    // Replaying the same event writes nothing.
    q.enqueue_changes(&[event("acme", "c1")]).await.unwrap();
    shared::sync::worker::run_once(&service, &q, 10)
        .await
        .unwrap();
    assert_eq!(crm.writes(), 1);
}

#[tokio::test]
async fn registered_tenants_are_read_when_first_named_and_an_onboarded_one_is_served_without_a_redeploy()
 {
    use shared::crm::CrmSettings;
    use shared::crm::hubspot::settings::HubSpotSettings;
    let s = store().await;
    for (id, portal) in [("acme", 111u64), ("globex", 222u64)] {
        let mut config = TenantConfig::new(id);
        config.api_key = Some(format!("key-{id}"));
        let hubspot = HubSpotSettings {
            api_base: "http://127.0.0.1:9".into(),
            access_token: Some(format!("token-{id}")),
            client_id: None,
            refresh_token: None,
            client_secret: Some(format!("secret-{id}")),
            app_id: Some(7),
            portal_id: portal,
            burst_limit: 100,
        };
        config.accounts = vec![hubspot.account()];
        s.put_tenant(&TenantRecord {
            config,
            crms: vec![CrmSettings::HubSpot(hubspot)],
        })
        .await
        .unwrap();
    }
    let records = s.registered_tenants().await.unwrap();
    assert_eq!(records.len(), 2);
    let http = reqwest::Client::new();
    for r in &records {
        let provisioned =
            shared::provision::from_record(r, &ClientKit::local(http.clone())).unwrap();
        assert_eq!(provisioned.clients().len(), 1);
    }

    // A deployment's directory: nothing is read until a request names a tenant.
    let registry = Arc::new(CountingRegistry {
        inner: s,
        reads: AtomicUsize::new(0),
    });
    let ttl = Duration::from_millis(400);
    let tenants = Tenants::new().with_source(
        Arc::new(RegistrySource::new(
            registry.clone(),
            ClientKit::local(http),
        )),
        ttl,
    );
    assert_eq!(registry.reads(), 0, "a cold start reads no tenant");
    assert!(tenants.all().is_empty());
    let globex = tenants
        .resolve_key(&TenantKey::ApiKey("key-globex"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(globex.id, TenantId::new("globex"));
    assert_eq!(
        registry.reads(),
        2,
        "the key's index entry, then the tenant"
    );
    assert_eq!(tenants.all().len(), 1, "acme was not read");
    // Served from memory within the TTL.
    tenants
        .resolve_key(&TenantKey::ApiKey("key-globex"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(registry.reads(), 2);
    let acme = tenants
        .resolve_key(&TenantKey::Account(Provider::HubSpot, "111"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acme.id, TenantId::new("acme"));
    assert!(
        tenants
            .resolve_key(&TenantKey::ApiKey("key-nobody"))
            .await
            .unwrap()
            .is_none()
    );

    // A tenant onboarded while the deployment runs is served once the TTL has passed.
    assert!(
        tenants
            .resolve_key(&TenantKey::ApiKey("key-initech"))
            .await
            .unwrap()
            .is_none()
    );
    let mut initech = TenantConfig::new("initech");
    initech.api_key = Some("key-initech".into());
    registry
        .put_tenant(&TenantRecord {
            config: initech,
            crms: Vec::new(),
        })
        .await
        .unwrap();
    tokio::time::sleep(ttl).await;
    let found = tenants
        .resolve_key(&TenantKey::ApiKey("key-initech"))
        .await
        .unwrap();
    assert_eq!(found.map(|t| t.id), Some(TenantId::new("initech")));

    // An unchanged tenant keeps its clients (and their pacing) when read again.
    let before = tenants.client(&globex.id, Provider::HubSpot).unwrap();
    tenants.resolve(&globex.id).await.unwrap().unwrap();
    let after = tenants.client(&globex.id, Provider::HubSpot).unwrap();
    assert!(Arc::ptr_eq(&before, &after));

    // Re-registering updates instead of duplicating; the old key stops working.
    let mut again = TenantConfig::new("acme");
    again.api_key = Some("key-acme-2".into());
    registry
        .put_tenant(&TenantRecord {
            config: again,
            crms: Vec::new(),
        })
        .await
        .unwrap();
    let records = registry.registered_tenants().await.unwrap();
    assert_eq!(records.len(), 3);
    tokio::time::sleep(ttl).await;
    let acme = tenants
        .resolve_key(&TenantKey::ApiKey("key-acme-2"))
        .await
        .unwrap();
    assert_eq!(acme.map(|t| t.id), Some(TenantId::new("acme")));
    assert!(
        tenants
            .resolve_key(&TenantKey::ApiKey("key-acme"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        tenants.resolve_all().await.unwrap().len(),
        3,
        "the schedule serves every registered tenant"
    );
}

/// The registry, counting the reads a directory makes of it.
struct CountingRegistry {
    inner: DynamoStore,
    reads: AtomicUsize,
}

impl CountingRegistry {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TenantRegistry for CountingRegistry {
    async fn put_record(&self, record: &TenantRecord, index: &[String]) -> Result<(), StoreError> {
        self.inner.put_record(record, index).await
    }
    async fn registered_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.registered_tenants().await
    }
    async fn registered_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.registered_tenant(id).await
    }
    async fn tenant_by_index(&self, index: &str) -> Result<Option<TenantId>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.tenant_by_index(index).await
    }
}

/// Outcomes published to an EventBridge bus on moto arrive, every one, through a rule on the
/// bus that sends `contact-sync`'s events to an SQS queue: 12 outcomes, two `PutEvents` calls.
#[tokio::test]
async fn outcomes_reach_an_eventbridge_bus() {
    use aws_sdk_eventbridge::types::Target;
    use aws_sdk_sqs::types::QueueAttributeName;
    use shared::adapters::aws::events::EventBridgeSink;
    use shared::ports::OutcomeSink;
    use shared::{Provider, SyncOutcome};

    let cfg = common::moto::sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&cfg);
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let name = format!("outcomes-{}", uuid::Uuid::new_v4().simple());
    events.create_event_bus().name(&name).send().await.unwrap();
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    events
        .put_rule()
        .name(&name)
        .event_bus_name(&name)
        .event_pattern(r#"{"source": ["contact-sync"]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&name)
        .event_bus_name(&name)
        .targets(Target::builder().id("queue").arn(arn).build().unwrap())
        .send()
        .await
        .unwrap();

    let at = chrono::Utc::now();
    let outcomes: Vec<SyncOutcome> = (0..12)
        .map(|i| SyncOutcome::QuotaPaused {
            tenant: TenantId::new(format!("t{i}")),
            provider: Provider::Pipedrive,
            until: at,
            at,
        })
        .collect();
    EventBridgeSink::new(events, &name)
        .publish(&outcomes)
        .await
        .unwrap();

    let mut tenants = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tenants.len() < 12 && std::time::Instant::now() < deadline {
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let v: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(v["source"], "contact-sync", "{v}");
            assert_eq!(v["detail-type"], "QuotaPaused", "{v}");
            assert_eq!(v["detail"]["type"], "quota_paused", "{v}");
            tenants.push(v["detail"]["tenant"].as_str().unwrap().to_string());
        }
    }
    tenants.sort();
    let mut expected: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    expected.sort();
    assert_eq!(tenants, expected, "every outcome arrived once");
}

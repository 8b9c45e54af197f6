//! App API authentication and tenant isolation, through the real router.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use serde_json::Value;
use shared::adapters::embedded::EmbeddedStore;
use shared::http::{AppState, HttpSettings};
use shared::ports::{ContactStore, JobQueue, QueueDepth};
use shared::signature::app_webhook_signature;
use shared::sync::SyncService;
use shared::tenant::{TenantConfig, Tenants};
use shared::{Contact, ContactFields, TenantId};
use tower::ServiceExt;

/// Two tenants, each with its API key and app webhook secret.
fn tenants() -> Tenants {
    let mut tenants = Tenants::new();
    for (id, key, secret) in [
        ("acme", "key-acme", "secret-acme"),
        ("globex", "key-globex", "secret-globex"),
    ] {
        let mut t = TenantConfig::new(id);
        t.api_key = Some(key.into());
        t.app_webhook_secret = Some(secret.into());
        tenants.add(t, vec![]);
    }
    tenants
}

fn setup() -> (EmbeddedStore, axum::Router) {
    let store = EmbeddedStore::in_memory().unwrap();
    let s = Arc::new(store.clone());
    let service = SyncService::new(s.clone(), s.clone(), s.clone(), Arc::new(tenants()));
    let router = shared::http::router(AppState {
        service,
        queue: s,
        settings: Arc::new(HttpSettings::default()),
    });
    (store, router)
}

/// A `POST /webhooks/hubspot` of `body`, signed (v1) with `secret`.
fn hubspot_request(body: &str, secret: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/webhooks/hubspot")
        .header("content-type", "application/json")
        .header("x-hubspot-signature-version", "v1")
        .header(
            "x-hubspot-signature",
            shared::signature::hubspot_v1(secret, body.as_bytes()),
        )
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A `POST /webhooks/app` of `body` for `tenant`, with the signature header `signature`.
fn app_request(tenant: &str, signature: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/webhooks/app")
        .header("content-type", "application/json")
        .header("x-contact-sync-tenant", tenant)
        .header("x-webhook-signature", signature)
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Body::from(body.unwrap_or("").to_string()))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn globex_contact(store: &EmbeddedStore) -> String {
    let now = Utc::now();
    store
        .insert(&Contact {
            tenant: TenantId::new("globex"),
            id: "globex-1".into(),
            fields: ContactFields {
                email: Some("boss@globex.example".into()),
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
        .id
}

#[tokio::test]
async fn every_app_route_needs_a_valid_key() {
    let (_, router) = setup();
    let routes = [
        ("GET", "/contacts"),
        ("POST", "/contacts"),
        ("GET", "/contacts/x"),
        ("PUT", "/contacts/x"),
        ("DELETE", "/contacts/x"),
        ("GET", "/contacts/x/history"),
        ("GET", "/sync/status"),
        ("GET", "/sync/preview"),
        ("GET", "/sync/health"),
        ("POST", "/sync"),
        ("GET", "/conflicts"),
        ("POST", "/dlq/replay"),
        ("GET", "/settings/fields"),
        ("PUT", "/settings/fields"),
        ("POST", "/setup/pronouns-fields"),
        ("GET", "/setup/pronouns-status"),
    ];
    for (method, uri) in routes {
        for key in [None, Some("wrong"), Some("")] {
            let (status, body) = call(&router, method, uri, key, Some("{}")).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {key:?}"
            );
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // The dashboard and the health check need no key.
    let page = router
        .clone()
        .oneshot(Request::builder().uri("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        call(&router, "GET", "/health", None, None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn one_tenant_never_sees_another_tenants_contacts() {
    let (store, router) = setup();
    let id = globex_contact(&store).await;
    let path = format!("/contacts/{id}");
    assert_eq!(
        call(&router, "GET", &path, Some("key-globex"), None)
            .await
            .0,
        StatusCode::OK
    );
    for (method, body) in [
        ("GET", None),
        ("PUT", Some(r#"{"email":"x@acme.example"}"#)),
        ("DELETE", None),
    ] {
        let (status, _) = call(&router, method, &path, Some("key-acme"), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} across tenants");
    }
    let (_, list) = call(&router, "GET", "/contacts", Some("key-acme"), None).await;
    assert_eq!(list["items"], serde_json::json!([]));
    // Untouched.
    let c = store
        .get(&TenantId::new("globex"), &id)
        .await
        .unwrap()
        .unwrap();
    assert!(!c.deleted);
    assert_eq!(c.version, 1);
    // The same email may exist in both tenants.
    let (status, _) = call(
        &router,
        "POST",
        "/contacts",
        Some("key-acme"),
        Some(r#"{"email":"boss@globex.example"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn app_webhook_checks_the_tenants_signature_and_enqueues_nothing_when_wrong() {
    let (store, router) = setup();
    let body = r#"{"events":[{"action":"upsert","contact":{"email":"new@acme.example","first_name":"New"}}]}"#;
    let send = |tenant: &'static str, sig: String| {
        let router = router.clone();
        async move {
            let req = app_request(tenant, &sig, body);
            router.oneshot(req).await.unwrap().status()
        }
    };
    let depth = store.depth(&TenantId::new("acme")).await.unwrap().jobs;
    // Signed with another tenant's secret, tampered, or for an unknown tenant (not told apart
    // from a wrong signature): rejected.
    assert_eq!(
        send(
            "acme",
            app_webhook_signature("secret-globex", body.as_bytes())
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send("acme", app_webhook_signature("secret-acme", b"{}")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send("acme", "zz".into()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(
            "nobody",
            app_webhook_signature("secret-acme", body.as_bytes())
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        store.depth(&TenantId::new("acme")).await.unwrap().jobs,
        depth,
        "nothing enqueued"
    );
    assert!(
        store
            .find_by_email(&TenantId::new("acme"), "new@acme.example")
            .await
            .unwrap()
            .is_none()
    );
    // Correctly signed: stored and enqueued.
    assert_eq!(
        send(
            "acme",
            app_webhook_signature("secret-acme", body.as_bytes())
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        store.depth(&TenantId::new("acme")).await.unwrap().jobs,
        depth + 1
    );
    assert!(
        store
            .find_by_email(&TenantId::new("acme"), "new@acme.example")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .find_by_email(&TenantId::new("globex"), "new@acme.example")
            .await
            .unwrap()
            .is_none()
    );
}

/// A queue that refuses enqueues while `down` is set; everything else goes to the embedded store.
struct FlakyQueue {
    inner: EmbeddedStore,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl JobQueue for FlakyQueue {
    async fn enqueue(&self, jobs: &[shared::Job]) -> Result<(), shared::error::QueueError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(shared::error::QueueError::Backend(
                "queue unreachable".into(),
            ));
        }
        self.inner.enqueue(jobs).await
    }
    async fn enqueue_delayed(
        &self,
        job: &shared::Job,
        delay: std::time::Duration,
    ) -> Result<(), shared::error::QueueError> {
        self.inner.enqueue_delayed(job, delay).await
    }
    async fn receive(
        &self,
        max: usize,
    ) -> Result<Vec<shared::ports::Delivery>, shared::error::QueueError> {
        self.inner.receive(max).await
    }
    async fn ack(&self, d: &shared::ports::Delivery) -> Result<(), shared::error::QueueError> {
        self.inner.ack(d).await
    }
    async fn fail(
        &self,
        d: &shared::ports::Delivery,
        e: &str,
        r: std::time::Duration,
    ) -> Result<shared::ports::FailOutcome, shared::error::QueueError> {
        self.inner.fail(d, e, r).await
    }
    async fn defer(
        &self,
        d: &shared::ports::Delivery,
        until: chrono::DateTime<Utc>,
    ) -> Result<(), shared::error::QueueError> {
        self.inner.defer(d, until).await
    }
    async fn depth(&self, t: &TenantId) -> Result<QueueDepth, shared::error::QueueError> {
        self.inner.depth(t).await
    }
    async fn dlq_depth(&self, t: &TenantId) -> Result<QueueDepth, shared::error::QueueError> {
        self.inner.dlq_depth(t).await
    }
    async fn replay_dlq(&self, t: &TenantId) -> Result<usize, shared::error::QueueError> {
        self.inner.replay_dlq(t).await
    }
}

/// When the queue is down the webhook answers 503 and the CRM's redelivery is not dropped as a
/// duplicate: nothing is lost.
#[tokio::test]
async fn a_webhook_that_could_not_be_enqueued_is_accepted_on_redelivery() {
    let store = EmbeddedStore::in_memory().unwrap();
    let mut tenant = TenantConfig::new("acme");
    tenant.api_key = Some("key-acme".into());
    tenant.accounts.push(shared::CrmAccount {
        provider: shared::Provider::HubSpot,
        account_id: "62515".into(),
        our_writer: None,
        webhook_auth: Some(shared::WebhookAuth::Signature {
            secret: "hs-secret".into(),
        }),
    });
    let mut tenants = Tenants::new();
    tenants.add(tenant, vec![]);
    let s = Arc::new(store.clone());
    let queue = Arc::new(FlakyQueue {
        inner: store.clone(),
        down: std::sync::atomic::AtomicBool::new(true),
    });
    let router = shared::http::router(AppState {
        service: SyncService::new(s.clone(), s.clone(), s, Arc::new(tenants)),
        queue: queue.clone(),
        settings: Arc::new(HttpSettings::default()),
    });
    let body = r#"[{"eventId":7,"subscriptionId":1,"portalId":62515,"occurredAt":1795773600000,"subscriptionType":"contact.propertyChange","objectId":501,"propertyName":"firstname","propertyValue":"A","changeSource":"CRM_UI","sourceId":"userId:1"}]"#;
    let send = || {
        let router = router.clone();
        async move {
            let res = router
                .oneshot(hubspot_request(body, "hs-secret"))
                .await
                .unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, _) = send().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(store.depth(&TenantId::new("acme")).await.unwrap().jobs, 0);
    queue.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = send().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accepted"], 1, "the redelivery is not a duplicate");
    assert_eq!(store.depth(&TenantId::new("acme")).await.unwrap().jobs, 1);
    let (_, again) = send().await;
    assert_eq!(again["dropped"], 1, "a real duplicate still is");
}

/// A state store whose dedupe marks fail from the `fail_from`-th on (a DynamoDB error mid-batch).
#[derive(Clone)]
struct FlakyDedupe {
    inner: EmbeddedStore,
    marks: Arc<std::sync::atomic::AtomicUsize>,
    fail_from: usize,
}

#[async_trait::async_trait]
impl shared::adapters::state::StateKv for FlakyDedupe {
    async fn kv_get(&self, p: &str, k: &str) -> Result<Option<String>, shared::error::StoreError> {
        self.inner.kv_get(p, k).await
    }
    async fn kv_put(&self, p: &str, k: &str, v: &str) -> Result<(), shared::error::StoreError> {
        self.inner.kv_put(p, k, v).await
    }
    async fn kv_put_new(
        &self,
        p: &str,
        k: &str,
        v: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, shared::error::StoreError> {
        let n = self.marks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n + 1 >= self.fail_from {
            return Err(shared::error::StoreError::Backend("throttled".into()));
        }
        self.inner.kv_put_new(p, k, v, ttl).await
    }
    async fn kv_delete(&self, p: &str, k: &str) -> Result<(), shared::error::StoreError> {
        self.inner.kv_delete(p, k).await
    }
    async fn kv_scan(
        &self,
        p: &str,
        prefix: &str,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<String>, shared::error::StoreError> {
        self.inner.kv_scan(p, prefix, newest_first, limit).await
    }
    async fn kv_entries(
        &self,
        p: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, shared::error::StoreError> {
        self.inner.kv_entries(p, prefix).await
    }
    async fn kv_update(
        &self,
        p: &str,
        k: &str,
        update: shared::adapters::state::Update<'_>,
    ) -> Result<(), shared::error::StoreError> {
        self.inner.kv_update(p, k, update).await
    }
}

/// A batch that fails part-way (the third event's dedupe mark cannot be written) answers with an
/// error and forgets the marks it did write: HubSpot's retry of the whole batch is accepted.
#[tokio::test]
async fn a_batch_that_fails_part_way_is_accepted_whole_on_retry() {
    let store = EmbeddedStore::in_memory().unwrap();
    let mut tenant = TenantConfig::new("acme");
    tenant.api_key = Some("key-acme".into());
    tenant.accounts.push(shared::CrmAccount {
        provider: shared::Provider::HubSpot,
        account_id: "62515".into(),
        our_writer: None,
        webhook_auth: Some(shared::WebhookAuth::Signature {
            secret: "hs-secret".into(),
        }),
    });
    let mut tenants = Tenants::new();
    tenants.add(tenant, vec![]);
    let s = Arc::new(store.clone());
    let state = Arc::new(FlakyDedupe {
        inner: store.clone(),
        marks: Arc::default(),
        fail_from: 3,
    });
    let router = shared::http::router(AppState {
        service: SyncService::new(s.clone(), s.clone(), state.clone(), Arc::new(tenants)),
        queue: s,
        settings: Arc::new(HttpSettings::default()),
    });
    let events: Vec<Value> = (0..3)
        .map(|i| {
            serde_json::json!({"eventId": 10 + i, "subscriptionId": 1, "portalId": 62515,
                "occurredAt": 1795773600000u64 + i, "subscriptionType": "contact.propertyChange",
                "objectId": 600 + i, "propertyName": "firstname", "propertyValue": "A",
                "changeSource": "CRM_UI", "sourceId": "userId:1"})
        })
        .collect();
    let body = serde_json::to_string(&events).unwrap();
    let send = || {
        let (router, body) = (router.clone(), body.clone());
        async move {
            let req = Request::builder()
                .method("POST")
                .uri("/webhooks/hubspot")
                .header("content-type", "application/json")
                .header("x-hubspot-signature-version", "v1")
                .header(
                    "x-hubspot-signature",
                    shared::signature::hubspot_v1("hs-secret", body.as_bytes()),
                )
                .body(Body::from(body))
                .unwrap();
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, _) = send().await;
    assert!(status.is_server_error(), "{status}");
    assert_eq!(store.depth(&TenantId::new("acme")).await.unwrap().jobs, 0);
    // The store recovers; HubSpot retries the batch.
    let healthy = FlakyDedupe {
        fail_from: usize::MAX,
        ..(*state).clone()
    };
    let router = shared::http::router(AppState {
        service: SyncService::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(healthy),
            Arc::new({
                let mut t = Tenants::new();
                let mut c = TenantConfig::new("acme");
                c.accounts.push(shared::CrmAccount {
                    provider: shared::Provider::HubSpot,
                    account_id: "62515".into(),
                    our_writer: None,
                    webhook_auth: Some(shared::WebhookAuth::Signature {
                        secret: "hs-secret".into(),
                    }),
                });
                t.add(c, vec![]);
                t
            }),
        ),
        queue: Arc::new(store.clone()),
        settings: Arc::new(HttpSettings::default()),
    });
    let req = Request::builder()
        .method("POST")
        .uri("/webhooks/hubspot")
        .header("content-type", "application/json")
        .header("x-hubspot-signature-version", "v1")
        .header(
            "x-hubspot-signature",
            shared::signature::hubspot_v1("hs-secret", body.as_bytes()),
        )
        .body(Body::from(body.clone()))
        .unwrap();
    let res = router.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        answer["accepted"], 3,
        "no event of the retried batch is a duplicate: {answer}"
    );
    assert_eq!(store.depth(&TenantId::new("acme")).await.unwrap().jobs, 3);
}

/// Globex's state in every store: a contact, its HubSpot link, a conflict, a cursor, a Sync Now
/// progress and a dead letter.
async fn globex_everywhere(store: &EmbeddedStore) -> String {
    use shared::ports::{ConflictLog, Cursors, LinkStore, SyncNowLog, SyncNowProgress};
    use shared::{Conflict, ConflictRecord, ContactLink, Field, Job, Provider, Side};
    let globex = TenantId::new("globex");
    let id = globex_contact(store).await;
    let now = Utc::now();
    let base = ContactFields {
        email: Some("boss@globex.example".into()),
        ..Default::default()
    };
    store
        .put_link(&ContactLink::synced(
            &globex,
            &id,
            Provider::HubSpot,
            "hs-9",
            Some(now),
            base,
            Vec::new(),
            now,
        ))
        .await
        .unwrap();
    store
        .log_conflict(&ConflictRecord {
            tenant: globex.clone(),
            contact_id: id.clone(),
            provider: Provider::HubSpot,
            external_id: "hs-9".into(),
            conflict: Conflict {
                field: Field::FirstName,
                base_value: Some("A".into()),
                app_value: Some("B".into()),
                crm_value: Some("C".into()),
                winner: Side::Crm,
                resolved_value: Some("C".into()),
                at: now,
            },
        })
        .await
        .unwrap();
    store
        .set_cursor(&globex, "poll#hubspot", "cursor-globex")
        .await
        .unwrap();
    let progress = SyncNowProgress {
        phase: "done".into(),
        backfilled: 7,
        ..Default::default()
    };
    store
        .save_sync_now_progress(&globex, &progress)
        .await
        .unwrap();
    // A dead letter: a job that failed all its attempts.
    store
        .enqueue(&[Job::Reconcile {
            tenant: globex.clone(),
            round: 1,
        }])
        .await
        .unwrap();
    for _ in 0..3 {
        let d = store.receive(10).await.unwrap().pop().expect("the job");
        store
            .fail(&d, "boom", std::time::Duration::ZERO)
            .await
            .unwrap();
    }
    assert_eq!(store.dlq_depth(&globex).await.unwrap().jobs, 1);
    id
}

/// Tenant isolation, route by route: with its own key (and its own webhook secret), acme cannot
/// read or change any of globex's contacts, links, conflicts, cursors, Sync Now progress or
/// dead letters; a job of acme's naming a globex contact touches nothing of globex's.
#[tokio::test]
async fn one_tenants_credentials_reach_nothing_of_anothers_on_any_route() {
    use shared::ports::{ConflictLog, Cursors, LinkStore, SyncNowLog};
    use shared::{ChangeEvent, ChangeKind, Origin, Provider};
    let (store, router) = setup();
    let id = globex_everywhere(&store).await;
    let globex = TenantId::new("globex");
    let acme = TenantId::new("acme");
    let before = (
        store.get(&globex, &id).await.unwrap(),
        store.links_for_tenant(&globex).await.unwrap(),
    );
    let key = Some("key-acme");
    let path = format!("/contacts/{id}");

    // Reads: nothing of globex's shows.
    let (status, list) = call(&router, "GET", "/contacts", key, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], serde_json::json!([]), "{list}");
    assert_eq!(
        call(&router, "GET", &path, key, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, conflicts) = call(&router, "GET", "/conflicts", key, None).await;
    assert_eq!(conflicts["items"], serde_json::json!([]), "{conflicts}");
    let (_, status_json) = call(&router, "GET", "/sync/status", key, None).await;
    assert_eq!(status_json["tenant"], "acme", "{status_json}");
    assert_eq!(status_json["dlq_depth"], 0, "{status_json}");
    assert_eq!(status_json["sync_now"], Value::Null, "{status_json}");
    let (status, _) = call(&router, "GET", "/setup/pronouns-status", key, None).await;
    assert_eq!(status, StatusCode::OK);

    // Changes: refused, or made in acme's own namespace only.
    for (method, body) in [
        ("PUT", Some(r#"{"email":"x@acme.example"}"#)),
        ("DELETE", None),
    ] {
        let (status, _) = call(&router, method, &path, key, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} across tenants");
    }
    let (_, replayed) = call(&router, "POST", "/dlq/replay", key, None).await;
    assert_eq!(replayed["moved"], 0, "{replayed}");
    assert_eq!(
        call(&router, "POST", "/sync", key, None).await.0,
        StatusCode::ACCEPTED
    );
    let body = format!(
        r#"{{"events":[{{"action":"upsert","contact":{{"id":"{id}","email":"x@acme.example"}}}},{{"action":"delete","id":"{id}"}}]}}"#
    );
    let req = app_request(
        "acme",
        &app_webhook_signature("secret-acme", body.as_bytes()),
        &body,
    );
    let status = router.clone().oneshot(req).await.unwrap().status();
    assert!(status.is_success(), "{status}");
    // Every job queued meanwhile is acme's.
    let deliveries = store.receive(100).await.unwrap();
    assert!(!deliveries.is_empty());
    for d in &deliveries {
        assert_eq!(d.job.tenant(), &acme, "{:?}", d.job);
    }
    // A job of acme's naming globex's contact, as a worker runs it.
    let s = Arc::new(store.clone());
    let service = SyncService::new(s.clone(), s.clone(), s, Arc::new(tenants()));
    let _ = service
        .handle(&ChangeEvent::new(
            acme.clone(),
            Origin::App,
            id.clone(),
            ChangeKind::Upsert,
        ))
        .await;

    // Globex's state is as it was.
    assert_eq!(store.get(&globex, &id).await.unwrap(), before.0);
    assert_eq!(store.links_for_tenant(&globex).await.unwrap(), before.1);
    assert_eq!(store.conflicts(&globex, 10).await.unwrap().len(), 1);
    assert_eq!(
        store
            .cursor(&globex, "poll#hubspot")
            .await
            .unwrap()
            .as_deref(),
        Some("cursor-globex")
    );
    assert_eq!(
        store
            .sync_now_progress(&globex)
            .await
            .unwrap()
            .map(|p| p.backfilled),
        Some(7)
    );
    assert_eq!(store.dlq_depth(&globex).await.unwrap().jobs, 1);
    assert!(
        store
            .link_for_contact(&acme, &id, Provider::HubSpot)
            .await
            .unwrap()
            .is_none(),
        "no link of acme's to globex's record"
    );
}

/// The CRM webhooks in the isolation matrix: a HubSpot batch of globex's portal signed with
/// acme's app secret, a Pipedrive delivery of globex's company with acme's Basic login, and a
/// batch that slips a globex event behind an acme one are refused, and nothing is queued for
/// anyone; each tenant's own credentials reach its own tenant only.
#[tokio::test]
async fn one_tenants_crm_webhooks_cannot_speak_for_another() {
    use shared::{CrmAccount, Provider, WebhookAuth};
    let store = EmbeddedStore::in_memory().unwrap();
    let mut tenants = Tenants::new();
    for (id, portal, company) in [("acme", "111", "1001"), ("globex", "222", "2002")] {
        let mut t = TenantConfig::new(id);
        t.api_key = Some(format!("key-{id}"));
        t.accounts.push(CrmAccount {
            provider: Provider::HubSpot,
            account_id: portal.into(),
            our_writer: None,
            webhook_auth: Some(WebhookAuth::Signature {
                secret: format!("hs-{id}"),
            }),
        });
        t.accounts.push(CrmAccount {
            provider: Provider::Pipedrive,
            account_id: company.into(),
            our_writer: None,
            webhook_auth: Some(WebhookAuth::Basic {
                user: format!("pd-{id}"),
                password: format!("pw-{id}"),
            }),
        });
        tenants.add(t, vec![]);
    }
    let s = Arc::new(store.clone());
    let router = shared::http::router(AppState {
        service: SyncService::new(s.clone(), s.clone(), s.clone(), Arc::new(tenants)),
        queue: s,
        settings: Arc::new(HttpSettings::default()),
    });
    let hubspot_event = |portal: u64, event: u64| {
        format!(
            r#"{{"eventId":{event},"subscriptionId":1,"portalId":{portal},"occurredAt":1795773600000,"subscriptionType":"contact.propertyChange","objectId":501,"propertyName":"firstname","propertyValue":"A","changeSource":"CRM_UI","sourceId":"userId:1"}}"#
        )
    };
    let hubspot = |body: String, secret: &'static str| {
        let router = router.clone();
        async move {
            let req = hubspot_request(&body, secret);
            router.oneshot(req).await.unwrap().status()
        }
    };
    let pipedrive_body = |company: u64| {
        serde_json::json!({
            "meta": {"action": "change", "entity": "person", "company_id": company.to_string(),
                     "entity_id": "77", "id": format!("evt-{company}"), "timestamp": "2026-01-01T00:00:00.000Z",
                     "user_id": "5", "version": "2.0", "webhook_id": "1", "change_source": "app"},
            "data": {"id": 77, "name": "X", "emails": [], "phones": [], "custom_fields": {}},
            "previous": {"name": "Y"}
        })
        .to_string()
    };
    let pipedrive = |body: String, user: &'static str, password: &'static str| {
        let router = router.clone();
        async move {
            use base64::Engine;
            let login =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let req = Request::builder()
                .method("POST")
                .uri("/webhooks/pipedrive")
                .header("content-type", "application/json")
                .header("authorization", format!("Basic {login}"))
                .body(Body::from(body))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        }
    };
    let (acme, globex) = (TenantId::new("acme"), TenantId::new("globex"));
    let queued = |t: TenantId| {
        let store = store.clone();
        async move { store.depth(&t).await.unwrap().jobs }
    };

    // Across tenants: refused, nothing queued.
    assert_eq!(
        hubspot(format!("[{}]", hubspot_event(222, 1)), "hs-acme").await,
        StatusCode::UNAUTHORIZED
    );
    let mixed = format!("[{},{}]", hubspot_event(111, 2), hubspot_event(222, 3));
    assert_eq!(hubspot(mixed, "hs-acme").await, StatusCode::BAD_REQUEST);
    assert_eq!(
        pipedrive(pipedrive_body(2002), "pd-acme", "pw-acme").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        pipedrive(pipedrive_body(2002), "pd-globex", "pw-acme").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        (queued(acme.clone()).await, queued(globex.clone()).await),
        (0, 0)
    );

    // Each with its own: accepted, for itself only.
    assert_eq!(
        hubspot(format!("[{}]", hubspot_event(222, 4)), "hs-globex").await,
        StatusCode::OK
    );
    assert_eq!(
        pipedrive(pipedrive_body(1001), "pd-acme", "pw-acme").await,
        StatusCode::OK
    );
    assert_eq!(
        (queued(acme.clone()).await, queued(globex.clone()).await),
        (1, 1)
    );
    for d in store.receive(10).await.unwrap() {
        let expected = match d.job.change().and_then(|e| e.origin.provider()) {
            Some(Provider::HubSpot) => &globex,
            _ => &acme,
        };
        assert_eq!(d.job.tenant(), expected, "{:?}", d.job);
    }
}

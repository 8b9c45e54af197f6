//! The operator routes beyond authentication, through the real router: the conflict log, DLQ
//! replay, Sync Now and the status, each scoped to the caller's tenant; contact paging; the app
//! webhook's delete.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedStore;
use shared::crm::memory::MemoryCrm;
use shared::http::{AppState, HttpSettings};
use shared::ports::{ContactStore, FailOutcome, JobQueue};
use shared::signature::app_webhook_signature;
use shared::sync::SyncService;
use shared::sync::worker;
use shared::tenant::{TenantConfig, Tenants};
use shared::{ChangeKind, Field, FieldPatch, Origin, Provider, TenantId};
use tower::ServiceExt;

struct World {
    store: EmbeddedStore,
    router: axum::Router,
    service: SyncService,
    /// Each tenant's HubSpot.
    acme_crm: MemoryCrm,
    globex_crm: MemoryCrm,
}

fn acme() -> TenantId {
    TenantId::new("acme")
}

fn globex() -> TenantId {
    TenantId::new("globex")
}

fn world() -> World {
    let store = EmbeddedStore::in_memory().unwrap();
    let acme_crm = MemoryCrm::new(Provider::HubSpot);
    let globex_crm = MemoryCrm::new(Provider::HubSpot);
    let mut tenants = Tenants::new();
    for (id, crm) in [("acme", &acme_crm), ("globex", &globex_crm)] {
        let mut t = TenantConfig::new(id);
        t.api_key = Some(format!("key-{id}"));
        t.app_webhook_secret = Some(format!("secret-{id}"));
        tenants.add(t, vec![Arc::new(crm.clone())]);
    }
    let s = Arc::new(store.clone());
    let service = SyncService::new(s.clone(), s.clone(), s.clone(), Arc::new(tenants));
    let router = shared::http::router(AppState {
        service: service.clone(),
        queue: s,
        settings: Arc::new(HttpSettings::default()),
    });
    World {
        store,
        router,
        service,
        acme_crm,
        globex_crm,
    }
}

impl World {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        tenant: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer key-{tenant}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Creates a contact through the API and syncs it; returns (contact id, CRM id).
    async fn synced_contact(&self, tenant: &str, email: &str, first: &str) -> (String, String) {
        let (status, c) = self
            .call(
                "POST",
                "/contacts",
                tenant,
                Some(json!({"email": email, "first_name": first})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
        self.drain().await;
        let id = c["id"].as_str().unwrap().to_string();
        let (_, c) = self
            .call("GET", &format!("/contacts/{id}"), tenant, None)
            .await;
        let crm_id = c["sync"]["crms"]["hubspot"]["external_id"]
            .as_str()
            .unwrap_or_else(|| panic!("not synced: {c}"))
            .to_string();
        (id, crm_id)
    }

    /// Runs the worker until the queue is empty.
    async fn drain(&self) {
        while worker::run_once(&self.service, &self.store, 10)
            .await
            .unwrap()
            > 0
        {}
    }

    /// Dead-letters one job of `tenant` (three failed attempts, no backoff).
    async fn dead_letter(&self, tenant: &TenantId, record: &str) {
        let q: &dyn JobQueue = &self.store;
        q.enqueue_changes(&[shared::ChangeEvent::new(
            tenant.clone(),
            Origin::App,
            record,
            ChangeKind::Upsert,
        )])
        .await
        .unwrap();
        loop {
            let d = q
                .receive(10)
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.job.change().unwrap().record_id == record);
            let Some(d) = d else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            if q.fail(&d, "boom", Duration::ZERO).await.unwrap() == FailOutcome::DeadLettered {
                return;
            }
        }
    }
}

#[tokio::test]
async fn the_conflict_log_shows_both_values_the_winner_and_only_the_callers_conflicts() {
    let w = world();
    let (id, crm_id) = w.synced_contact("acme", "ann@acme.example", "Ann").await;
    w.synced_contact("globex", "gus@globex.example", "Gus")
        .await;
    // Both sides change the first name before a sync sees either.
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Anne".into()));
    w.acme_crm.user_edit(&crm_id, &patch);
    let (status, _) = w
        .call(
            "PUT",
            &format!("/contacts/{id}"),
            "acme",
            Some(json!({"email": "ann@acme.example", "first_name": "Annie"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    w.drain().await;

    let (status, log) = w.call("GET", "/conflicts", "acme", None).await;
    assert_eq!(status, StatusCode::OK);
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    let c = &items[0];
    assert_eq!(c["contact_id"], id.as_str());
    assert_eq!(c["field"], "first_name");
    assert_eq!(c["base_value"], "Ann");
    assert_eq!(c["app_value"], "Annie");
    assert_eq!(c["crm_value"], "Anne");
    assert_eq!(c["winner"], "crm");
    assert_eq!(c["resolved_value"], "Anne");
    // What the log says is what both sides hold.
    let (_, contact) = w
        .call("GET", &format!("/contacts/{id}"), "acme", None)
        .await;
    assert_eq!(contact["first_name"], "Anne");
    assert_eq!(
        w.acme_crm
            .record(&crm_id)
            .unwrap()
            .fields
            .first_name
            .as_deref(),
        Some("Anne")
    );

    let (_, other) = w.call("GET", "/conflicts", "globex", None).await;
    assert_eq!(
        other["items"],
        json!([]),
        "another tenant's conflicts are not shown"
    );
    for bad in [
        "/conflicts?limit=0",
        "/conflicts?limit=1001",
        "/conflicts?limit=x",
    ] {
        let (status, body) = w.call("GET", bad, "acme", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"]["message"].is_string());
    }
    let (_, limited) = w.call("GET", "/conflicts?limit=1", "acme", None).await;
    assert_eq!(limited["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn dlq_replay_and_status_are_the_callers_own() {
    let w = world();
    w.dead_letter(&acme(), "a1").await;
    w.dead_letter(&acme(), "a2").await;
    w.dead_letter(&globex(), "g1").await;
    let (_, acme_status) = w.call("GET", "/sync/status", "acme", None).await;
    assert_eq!(acme_status["tenant"], "acme");
    assert_eq!(acme_status["dlq_depth"], 2);
    assert_eq!(acme_status["queue_scope"], "tenant");
    let (_, globex_status) = w.call("GET", "/sync/status", "globex", None).await;
    assert_eq!(globex_status["dlq_depth"], 1);

    let (status, moved) = w.call("POST", "/dlq/replay", "acme", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(moved, json!({"moved": 2}));
    let (_, acme_status) = w.call("GET", "/sync/status", "acme", None).await;
    assert_eq!(acme_status["dlq_depth"], 0);
    assert_eq!(acme_status["queue_depth"], 2, "back in the queue");
    let (_, globex_status) = w.call("GET", "/sync/status", "globex", None).await;
    assert_eq!(
        globex_status["dlq_depth"], 1,
        "the other tenant's dead letter stays"
    );
    assert_eq!(globex_status["queue_depth"], 0);
    let (_, again) = w.call("POST", "/dlq/replay", "acme", None).await;
    assert_eq!(again, json!({"moved": 0}));
}

#[tokio::test]
async fn sync_now_and_the_crm_figures_concern_only_the_caller() {
    let w = world();
    w.synced_contact("acme", "ann@acme.example", "Ann").await;
    w.synced_contact("acme", "bob@acme.example", "Bob").await;
    w.globex_crm
        .fail_with(Some(shared::error::CrmError::Unavailable {
            provider: Provider::HubSpot,
            message: "globex's HubSpot is down".into(),
        }));
    let (status, _) = w
        .call(
            "POST",
            "/contacts",
            "globex",
            Some(json!({"email": "gus@globex.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let q: &dyn JobQueue = &w.store;
    let d = q.receive(10).await.unwrap().remove(0);
    worker::process(&w.service, q, &d).await.unwrap();

    let (_, acme_status) = w.call("GET", "/sync/status", "acme", None).await;
    let hubspot = &acme_status["crms"][0];
    assert_eq!(hubspot["synced_contacts"], 2, "{acme_status}");
    assert_eq!(hubspot["errors"], 0);
    assert_eq!(hubspot["total_errors"], 0);
    assert_eq!(
        hubspot["last_error"],
        Value::Null,
        "another tenant's error is not shown"
    );
    let (_, globex_status) = w.call("GET", "/sync/status", "globex", None).await;
    assert_eq!(globex_status["crms"][0]["synced_contacts"], 0);
    assert!(
        globex_status["crms"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("globex's HubSpot is down")
    );

    // Sync Now queues the caller's reconcile only.
    let (_, before) = w.call("GET", "/sync/status", "globex", None).await;
    let (status, body) = w.call("POST", "/sync", "acme", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({"status": "queued"}));
    let (_, after) = w.call("GET", "/sync/status", "globex", None).await;
    assert_eq!(after["queue_depth"], before["queue_depth"]);
    let (_, acme_after) = w.call("GET", "/sync/status", "acme", None).await;
    assert_eq!(acme_after["queue_depth"], 1);
    let jobs = q.receive(10).await.unwrap();
    let reconcile = jobs
        .iter()
        .find(|d| matches!(d.job, shared::Job::Reconcile { .. }))
        .expect("the reconcile job");
    assert_eq!(reconcile.job.tenant(), &acme());
}

#[tokio::test]
async fn contacts_page_through_every_contact_once() {
    let w = world();
    for i in 0..7 {
        let (status, _) = w
            .call(
                "POST",
                "/contacts",
                "acme",
                Some(json!({"email": format!("p{i}@acme.example")})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    w.call(
        "POST",
        "/contacts",
        "globex",
        Some(json!({"email": "g@globex.example"})),
    )
    .await;
    let mut seen = Vec::new();
    let mut uri = "/contacts?limit=3".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = w.call("GET", &uri, "acme", None).await;
        assert_eq!(status, StatusCode::OK);
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|c| c["email"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => uri = format!("/contacts?limit=3&after={next}"),
            None => break,
        }
        assert!(pages < 10, "no loop");
    }
    assert_eq!(pages, 3, "3 + 3 + 1");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "{seen:?}");
    assert!(seen.iter().all(|e| e.ends_with("@acme.example")));
    for bad in ["/contacts?limit=0", "/contacts?limit=501"] {
        assert_eq!(
            w.call("GET", bad, "acme", None).await.0,
            StatusCode::BAD_REQUEST
        );
    }
}

#[tokio::test]
async fn the_app_webhook_deletes_a_contact_and_archives_it_in_the_crm() {
    let w = world();
    let (id, crm_id) = w.synced_contact("acme", "del@acme.example", "Del").await;
    let body = json!({"events": [{"action": "delete", "id": id}]}).to_string();
    let req = Request::builder()
        .method("POST")
        .uri("/webhooks/app")
        .header("content-type", "application/json")
        .header("x-contact-sync-tenant", "acme")
        .header(
            "x-webhook-signature",
            app_webhook_signature("secret-acme", body.as_bytes()),
        )
        .body(Body::from(body.clone()))
        .unwrap();
    let res = w.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let stored = w.store.get(&acme(), &id).await.unwrap().unwrap();
    assert!(stored.deleted, "the contact is deleted in the app");
    w.drain().await;
    assert!(
        w.acme_crm.record(&crm_id).unwrap().archived,
        "and archived in the CRM"
    );
    let (status, _) = w
        .call("GET", &format!("/contacts/{id}"), "acme", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

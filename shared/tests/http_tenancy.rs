//! App API authentication and tenant isolation, through the real router.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use serde_json::Value;
use shared::adapters::embedded::EmbeddedStore;
use shared::http::{AppState, HttpSettings};
use shared::ports::{ContactStore, JobQueue};
use shared::service::SyncService;
use shared::signature::app_webhook_signature;
use shared::tenant::{TenantConfig, Tenants};
use shared::{Contact, ContactFields, TenantId};
use tower::ServiceExt;

fn setup() -> (EmbeddedStore, axum::Router) {
    let store = EmbeddedStore::in_memory().unwrap();
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
    let s = Arc::new(store.clone());
    let service = SyncService::new(s.clone(), s.clone(), s.clone(), Arc::new(tenants));
    let router = shared::http::router(AppState {
        service,
        queue: s,
        settings: Arc::new(HttpSettings::default()),
    });
    (store, router)
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
        ("GET", "/sync/status"),
        ("POST", "/sync"),
        ("GET", "/conflicts"),
        ("POST", "/dlq/replay"),
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
            let req = Request::builder()
                .method("POST")
                .uri("/webhooks/app")
                .header("content-type", "application/json")
                .header("x-contact-sync-tenant", tenant)
                .header("x-webhook-signature", sig)
                .body(Body::from(body))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        }
    };
    let depth = store.depth().await.unwrap();
    // Signed with another tenant's secret, tampered, or for an unknown tenant: rejected.
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
        StatusCode::NOT_FOUND
    );
    assert_eq!(store.depth().await.unwrap(), depth, "nothing enqueued");
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
    assert_eq!(store.depth().await.unwrap(), depth + 1);
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

//! Webhook ingest throughput in process, one core: signed requests through the real
//! `webhook-ingest` router on the embedded store, from the first byte to the 200.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedStore;
use shared::http::{AppState, HttpSettings};
use shared::ports::JobQueue;
use shared::sync::SyncService;
use shared::tenant::{TenantConfig, Tenants};
use shared::{CrmAccount, Provider, TenantId, WebhookAuth};
use tower::ServiceExt;

use crate::Figure;

const PUBLIC: &str = "https://bench.example";
const HUBSPOT_SECRET: &str = "bench-hubspot-secret";
const PORTAL: &str = "62515";
const COMPANY: &str = "7001";
const LOGIN: (&str, &str) = ("bench-hook", "bench-hook-password");
/// The events/s per core the issue asks of webhook ingest.
const GOAL: f64 = 50_000.0;

fn router(store: &EmbeddedStore) -> axum::Router {
    let mut config = TenantConfig::new("bench");
    config.accounts = vec![
        CrmAccount {
            provider: Provider::HubSpot,
            account_id: PORTAL.into(),
            our_writer: Some("1".into()),
            webhook_auth: Some(WebhookAuth::Signature {
                secret: HUBSPOT_SECRET.into(),
            }),
        },
        CrmAccount {
            provider: Provider::Pipedrive,
            account_id: COMPANY.into(),
            our_writer: Some("1".into()),
            webhook_auth: Some(WebhookAuth::Basic {
                user: LOGIN.0.into(),
                password: LOGIN.1.into(),
            }),
        },
    ];
    let mut tenants = Tenants::new();
    tenants.add(config, Vec::new());
    let s = Arc::new(store.clone());
    let service = SyncService::new(s.clone(), s.clone(), s.clone(), Arc::new(tenants));
    shared::http::webhook_router(AppState {
        service,
        queue: s,
        settings: Arc::new(HttpSettings {
            public_base_url: Some(PUBLIC.into()),
        }),
    })
}

/// HubSpot deliveries of 100 events each (one contact each), signed v3 as HubSpot signs them.
fn hubspot_requests(events: usize) -> Vec<Request<Body>> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..events.div_ceil(100))
        .map(|batch| {
            let items: Vec<Value> = (0..100)
                .map(|i| {
                    let n = batch * 100 + i;
                    json!({
                        "eventId": n, "subscriptionId": 1, "portalId": 62515, "appId": 2,
                        "occurredAt": now, "subscriptionType": "contact.propertyChange",
                        "attemptNumber": 0, "objectId": 100_000 + n,
                        "changeSource": "CRM_UI", "propertyName": "firstname",
                        "propertyValue": format!("Name{n}")
                    })
                })
                .collect();
            let body = serde_json::to_vec(&items).unwrap();
            let ts = now.to_string();
            let url = format!("{PUBLIC}/webhooks/hubspot");
            let sig = shared::signature::hubspot_v3(HUBSPOT_SECRET, "POST", &url, &body, &ts);
            Request::post("/webhooks/hubspot")
                .header("content-type", "application/json")
                .header("x-hubspot-signature-v3", sig)
                .header("x-hubspot-request-timestamp", ts)
                .body(Body::from(body))
                .unwrap()
        })
        .collect()
}

/// Pipedrive webhooks v2 deliveries, one event each, with the registered Basic login.
fn pipedrive_requests(events: usize) -> Vec<Request<Body>> {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", LOGIN.0, LOGIN.1))
    );
    (0..events)
        .map(|n| {
            let body = json!({
                "meta": {"action": "change", "entity": "person", "company_id": COMPANY,
                         "entity_id": (200_000 + n).to_string(), "id": format!("evt-{n}"),
                         "version": "2.0", "change_source": "app", "user_id": "77",
                         "timestamp": "2026-12-07T10:00:00Z"},
                "data": {"id": 200_000 + n, "first_name": format!("Name{n}")},
                "previous": {"first_name": "Old"}
            });
            Request::post("/webhooks/pipedrive")
                .header("content-type", "application/json")
                .header("authorization", &auth)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap()
        })
        .collect()
}

/// Sends `requests` one after the other; the events per second from the first to the last 200.
async fn drive(
    router: &axum::Router,
    requests: Vec<Request<Body>>,
    events: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for req in requests {
        let res = router.clone().oneshot(req).await?;
        ensure!(
            res.status().is_success(),
            "a webhook answered {}",
            res.status()
        );
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(events: usize) -> anyhow::Result<Vec<Figure>> {
    let events = events.div_ceil(100) * 100;
    let dir = std::env::temp_dir().join(format!("contact-sync-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open_dir(&dir).context("the embedded store")?;
    let router = router(&store);
    let tenant = TenantId::new("bench");
    let mut figures = Vec::new();

    let hubspot = drive(&router, hubspot_requests(events), events).await?;
    let queued = store.depth(&tenant).await?.jobs;
    ensure!(
        queued == events,
        "{queued} of {events} HubSpot events queued"
    );
    figures.push(Figure::higher(
        "ingest: HubSpot webhook events/s, one core",
        hubspot,
        "ev/s",
        GOAL,
    ));

    let pipedrive = drive(&router, pipedrive_requests(events), events).await?;
    let queued = store.depth(&tenant).await?.jobs;
    ensure!(
        queued == 2 * events,
        "{} of {events} Pipedrive events queued",
        queued - events
    );
    figures.push(Figure::higher(
        "ingest: Pipedrive webhook events/s, one core",
        pipedrive,
        "ev/s",
        GOAL,
    ));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}

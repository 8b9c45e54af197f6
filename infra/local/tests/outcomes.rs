//! Black-box: sync outcomes go to the configured webhook URL as JSON arrays — a contact synced
//! with each CRM (the fields written, never their values), a conflict resolved — in the shapes
//! `docs/events.schema.json` documents.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use common::{LocalProcess, eventually, get_json, temp_dir};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

async fn receive(State(seen): State<Seen>, Json(batch): Json<Vec<Value>>) -> &'static str {
    seen.lock().unwrap().extend(batch);
    "ok"
}

#[tokio::test]
async fn outcomes_reach_the_configured_webhook_without_personal_data() {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/outcomes", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/outcomes", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = temp_dir("outcomes");
    let http = common::http();
    let p = LocalProcess::start(
        &dir,
        &[
            ("POLL_INTERVAL_SECS", "3600"),
            ("OUTCOMES_WEBHOOK_URL", url.as_str()),
        ],
    )
    .await;
    let email = "outcome@example.com";
    let id =
        common::create_contact(&http, &p.url, json!({"email": email, "first_name": "Otto"})).await;
    common::crm_status_becomes(&http, &p.url, &id, "pipedrive", "synced", 15).await;
    let c = common::crm_status_becomes(&http, &p.url, &id, "hubspot", "synced", 15).await;
    let hs_id = c["sync"]["crms"]["hubspot"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    p.settled().await;

    let synced = |seen: &Seen, provider: &str| -> Option<Value> {
        seen.lock()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "contact_synced" && o["provider"] == provider)
            .cloned()
    };
    for provider in ["hubspot", "pipedrive"] {
        let o = eventually(10, "a contact_synced outcome", || async {
            synced(&seen, provider)
        })
        .await;
        assert_eq!(o["tenant"], "default");
        assert_eq!(o["contact_id"], id.as_str());
        assert_eq!(o["action"], "created");
        assert!(
            o["crm_fields"]
                .as_array()
                .unwrap()
                .contains(&json!("first_name")),
            "{o}"
        );
    }

    // Both sides change the first name before a sync: a conflict, the CRM's value kept.
    common::sim_webhooks(&http, &p.sim, "hubspot", false).await;
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"firstname": "Ottilie"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    common::sim_webhooks(&http, &p.sim, "hubspot", true).await;
    let r = http
        .put(format!("{}/contacts/{id}", p.url))
        .json(&json!({"email": email, "first_name": "Otis"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let conflict = eventually(20, "a conflict_resolved outcome", || async {
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "conflict_resolved")
            .cloned();
        if found.is_none() {
            // HubSpot's edit is found by the poll (its webhook was off).
            let _ = http.post(format!("{}/sync", p.url)).send().await;
        }
        found
    })
    .await;
    assert_eq!(conflict["field"], "first_name");
    assert_eq!(conflict["provider"], "hubspot");
    assert!(
        matches!(conflict["winner"].as_str(), Some("crm" | "app")),
        "{conflict}"
    );

    // Ids and field names only: no value of the person's leaves in an outcome.
    let all = serde_json::to_string(&*seen.lock().unwrap()).unwrap();
    for value in [email, "Otto", "Otis", "Ottilie"] {
        assert!(!all.contains(value), "{value} in {all}");
    }
    let status = get_json(&http, format!("{}/sync/status", p.url)).await;
    assert_eq!(status["dlq_depth"], 0);
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

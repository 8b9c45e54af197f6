//! Black-box: a contact's sync history over HTTP — its creation in both CRMs, a HubSpot
//! user's edit coming back, an app edit going out — and nothing for the echoes.

mod common;

use common::{LocalProcess, eventually, get_json, temp_dir};
use serde_json::{Value, json};

fn part<'a>(entry: &'a Value, provider: &str) -> &'a Value {
    entry["crms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["provider"] == provider)
        .unwrap_or_else(|| panic!("no {provider} part in {entry}"))
}

fn change<'a>(writes: &'a Value, field: &str) -> &'a Value {
    writes
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == field)
        .unwrap_or_else(|| panic!("no {field} in {writes}"))
}

#[tokio::test]
async fn a_contacts_history_tells_each_sync_newest_first() {
    let dir = temp_dir("history");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("POLL_INTERVAL_SECS", "3600")]).await;
    let id = common::create_contact(
        &http,
        &p.url,
        json!({"email": "ada@example.com", "first_name": "Ada"}),
    )
    .await;
    let contact = common::crm_status_becomes(&http, &p.url, &id, "pipedrive", "synced", 15).await;
    common::crm_status_becomes(&http, &p.url, &id, "hubspot", "synced", 15).await;
    let hs_id = contact["sync"]["crms"]["hubspot"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    p.settled().await;

    // A HubSpot user's edit comes back to the app (and goes on to Pipedrive).
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"lastname": "Lovelace"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    eventually(15, "the HubSpot edit in the app", || {
        let (http, url) = (http.clone(), format!("{}/contacts/{id}", p.url));
        async move { (get_json(&http, url).await["last_name"] == "Lovelace").then_some(()) }
    })
    .await;
    p.settled().await;

    // An app edit goes out to both.
    let r = http
        .put(format!("{}/contacts/{id}", p.url))
        .json(&json!({"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "job_title": "Analyst"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    p.settled().await;

    let history = get_json(&http, format!("{}/contacts/{id}/history", p.url)).await;
    assert_eq!(history["contact_id"], id.as_str());
    let items = history["items"].as_array().unwrap();
    let triggers: Vec<&str> = items
        .iter()
        .map(|e| e["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(
        triggers,
        ["app", "webhook", "app"],
        "newest first, one entry a sync that wrote, none for the echoes: {history}"
    );
    // The creation: every field set in both CRMs.
    let created = &items[2];
    for crm in ["hubspot", "pipedrive"] {
        assert_eq!(part(created, crm)["action"], "created", "{created}");
        let first = change(&part(created, crm)["crm_writes"], "first_name");
        assert_eq!(
            (&first["old"], &first["new"]),
            (&Value::Null, &json!("Ada"))
        );
    }
    assert_eq!(part(created, "hubspot")["record_id"], hs_id.as_str());
    // The HubSpot edit: into the app from HubSpot, on to Pipedrive.
    let edit = &items[1];
    let into_app = change(&part(edit, "hubspot")["app_writes"], "last_name");
    assert_eq!(
        (&into_app["old"], &into_app["new"]),
        (&Value::Null, &json!("Lovelace"))
    );
    let on = change(&part(edit, "pipedrive")["crm_writes"], "last_name");
    assert_eq!(on["new"], "Lovelace");
    // The app edit: out to both, old → new.
    let out = &items[0];
    for crm in ["hubspot", "pipedrive"] {
        let job = change(&part(out, crm)["crm_writes"], "job_title");
        assert_eq!(
            (&job["old"], &job["new"]),
            (&Value::Null, &json!("Analyst")),
            "{out}"
        );
    }

    let r = http
        .get(format!("{}/contacts/nobody/history", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

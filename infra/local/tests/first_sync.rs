//! Black-box: the first sync of contacts the app had before any CRM was connected. Sync Now
//! backfills both CRMs at once, in rounds of a short job deadline; each CRM's emails are listed
//! once for the whole backfill (kept between rounds), not once per round or per chunk; a CRM
//! done early is polled once, while the other goes on.

mod common;

use common::{LocalProcess, eventually, get_json, temp_dir};
use serde_json::{Value, json};

const CONTACTS: usize = 240;

#[tokio::test]
async fn a_first_sync_lists_each_crm_once_across_its_rounds() {
    let dir = temp_dir("first-sync");
    let http = common::http();
    // The app's contacts, before any CRM is connected.
    let p = LocalProcess::start(&dir, &[("CRM_SIMULATOR", "off")]).await;
    for i in 0..CONTACTS {
        common::create_contact(
            &http,
            &p.url,
            json!({"email": format!("first{i}@example.com"), "first_name": format!("First {i}")}),
        )
        .await;
    }
    p.stop();

    // Both CRMs connected (the simulators at their real limits); a job deadline of 5 s gives
    // each round 3 s of backfill: Pipedrive's 240 creates (6 s at 80 per 2 s) take several.
    let p = LocalProcess::start(
        &dir,
        &[("JOB_DEADLINE_SECS", "5"), ("POLL_INTERVAL_SECS", "3600")],
    )
    .await;
    // A person a user made in Pipedrive before (its webhook lost): matched by the listing,
    // not created again.
    common::sim_webhooks(&http, &p.sim, "pipedrive", false).await;
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/pipedrive/persons", p.sim))
        .json(&json!({"name": "First Seven", "emails": [{"value": "first7@example.com", "primary": true}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    common::sim_webhooks(&http, &p.sim, "pipedrive", true).await;
    let r = http.post(format!("{}/sync", p.url)).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let status = eventually(120, "Sync Now done", || async {
        let s = get_json(&http, format!("{}/sync/status", p.url)).await;
        (s["sync_now"]["phase"] == "done").then_some(s)
    })
    .await;
    let progress = &status["sync_now"];
    assert_eq!(progress["errors"], json!([]), "{status}");
    assert!(
        progress["rounds"].as_u64().unwrap() >= 2,
        "several rounds: {progress}"
    );
    assert_eq!(
        progress["polled"],
        json!(["hubspot", "pipedrive"]),
        "{progress}"
    );
    for crm in status["crms"].as_array().unwrap() {
        assert_eq!(crm["synced_contacts"], CONTACTS, "{crm}");
    }

    let pd = get_json(&http, format!("{}/_sim/pipedrive/stats", p.sim)).await;
    let hs = get_json(&http, format!("{}/_sim/hubspot/stats", p.sim)).await;
    let pd_calls = &pd["calls_by_endpoint"];
    assert_eq!(
        pd_calls["POST /api/v2/persons"],
        CONTACTS - 1,
        "one person matched, the others created once: {pd}"
    );
    // One listing for the index (the runner's start and Sync Now also poll, in update_time
    // order): none per round or chunk.
    let log = get_json(&http, format!("{}/_sim/pipedrive/requests", p.sim)).await;
    let (polls, listings): (Vec<&Value>, Vec<&Value>) = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "GET" && r["path"] == "/api/v2/persons")
        .map(|r| &r["query"])
        .partition(|q| {
            q.as_str()
                .unwrap_or_default()
                .contains("sort_by=update_time")
        });
    assert_eq!(listings.len(), 1, "{listings:?}");
    assert!(polls.len() <= 2, "{polls:?}");
    // A create a round's deadline cut short is finished by the per-contact path, which
    // searches for it: at most one per round, never one per chunk or contact.
    let searches = pd_calls["GET /api/v2/persons/search"].as_u64().unwrap_or(0);
    assert!(
        searches <= progress["rounds"].as_u64().unwrap(),
        "{searches} searches: {pd}"
    );
    assert_eq!(pd["rate_limited"], 0, "{pd}");
    let hs_calls = &hs["by_endpoint"];
    assert_eq!(hs_calls["GET /crm/v3/objects/contacts"], 1, "{hs}");
    assert_eq!(hs["rate_limited"], 0, "{hs}");
    println!(
        "first sync of {CONTACTS}: {} rounds; Pipedrive {pd_calls}; HubSpot {hs_calls}",
        progress["rounds"]
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

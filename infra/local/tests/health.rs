//! Black-box: a CRM's webhooks switched off are found out — the poll keeps finding changes no
//! webhook delivered while none comes in — and status, health and the counts say so.

mod common;

use common::{LocalProcess, eventually, get_json, temp_dir};
use serde_json::{Value, json};

fn crm<'a>(v: &'a Value, provider: &str) -> &'a Value {
    v["crms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == provider)
        .unwrap_or_else(|| panic!("no {provider} in {v}"))
}

/// No sync job queued or in flight (`settled` would wait for the HubSpot deliveries that failed
/// while switched off, which the simulator retries with HubSpot's backoff).
async fn idle(http: &reqwest::Client, url: &str) {
    eventually(30, "no job queued", || async {
        let s = get_json(http, format!("{url}/sync/status")).await;
        (s["queue_depth"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn webhooks_switched_off_are_reported_broken_and_back_on_ok() {
    let dir = temp_dir("health");
    let http = common::http();
    let p = LocalProcess::start(
        &dir,
        // A check Sync Now queues for our latest Pipedrive write (its echo on the way) waits
        // for the check grace: short here, so the queue drains.
        &[
            ("POLL_INTERVAL_SECS", "3600"),
            ("WEBHOOK_GRACE_SECS", "1"),
            ("CHECK_GRACE_SECS", "1"),
        ],
    )
    .await;
    let id = common::create_contact(
        &http,
        &p.url,
        json!({"email": "hook@example.com", "first_name": "Hook"}),
    )
    .await;
    let contact = common::crm_status_becomes(&http, &p.url, &id, "hubspot", "synced", 15).await;
    common::crm_status_becomes(&http, &p.url, &id, "pipedrive", "synced", 15).await;
    p.settled().await;
    let hs_id = contact["sync"]["crms"]["hubspot"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Our writes' echoes came in: webhooks work.
    let health = get_json(&http, format!("{}/sync/health", p.url)).await;
    let hs = crm(&health, "hubspot");
    assert_eq!(hs["webhooks"], "ok", "{hs}");
    assert_eq!(hs["in_sync"], 1, "{hs}");
    assert!(hs["last_webhook_at"].is_string(), "{hs}");

    // HubSpot stops sending webhooks; a user edits the contact there. Once the edit is older
    // than the grace and no webhook came in within it, the poll (Sync Now's here) finds the
    // change no webhook delivered: webhooks look broken.
    common::sim_webhooks(&http, &p.sim, "hubspot", false).await;
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"lastname": "Offline"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // The edit older than the grace: a webhook had its time to bring it.
    eventually(10, "the edit older than the webhooks' grace", || async {
        let c = get_json(&http, format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim)).await;
        let modified: chrono::DateTime<chrono::Utc> =
            c["properties"]["lastmodifieddate"].as_str()?.parse().ok()?;
        (chrono::Utc::now() - modified > chrono::Duration::milliseconds(1500)).then_some(())
    })
    .await;
    let broken = eventually(30, "HubSpot's webhooks reported broken", || async {
        idle(&http, &p.url).await;
        http.post(format!("{}/sync", p.url)).send().await.unwrap();
        idle(&http, &p.url).await;
        let health = get_json(&http, format!("{}/sync/health", p.url)).await;
        (crm(&health, "hubspot")["webhooks"] == "broken").then_some(health)
    })
    .await;
    let hs = crm(&broken, "hubspot");
    assert!(hs["last_missed_at"].is_string(), "{hs}");
    assert!(
        hs["warning"]
            .as_str()
            .unwrap()
            .contains("HubSpot webhooks look broken"),
        "{hs}"
    );
    assert_eq!(
        crm(&broken, "pipedrive")["webhooks"],
        "ok",
        "Pipedrive's still come in"
    );
    let status = get_json(&http, format!("{}/sync/status", p.url)).await;
    let hs_status = crm(&status, "hubspot");
    assert_eq!(hs_status["webhooks"], "broken");
    assert!(
        hs_status["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("look broken")),
        "{hs_status}"
    );
    // The poll still brought the edit in.
    let c = get_json(&http, format!("{}/contacts/{id}", p.url)).await;
    assert_eq!(c["last_name"], "Offline");

    // Back on: the next webhook, and a poll that finds nothing missed, clear it.
    common::sim_webhooks(&http, &p.sim, "hubspot", true).await;
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"lastname": "Online"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    eventually(30, "HubSpot's webhooks ok again", || async {
        idle(&http, &p.url).await;
        http.post(format!("{}/sync", p.url)).send().await.unwrap();
        idle(&http, &p.url).await;
        let health = get_json(&http, format!("{}/sync/health", p.url)).await;
        (crm(&health, "hubspot")["webhooks"] == "ok").then_some(())
    })
    .await;
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

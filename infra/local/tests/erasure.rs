//! Black-box: a person erased on request — through the API, or by a GDPR delete in HubSpot —
//! is gone from the app, from both CRMs and from every byte of the store's files.

mod common;

use common::{LocalProcess, eventually, get_json, temp_dir};
use serde_json::{Value, json};

async fn hubspot_has(http: &reqwest::Client, sim: &str, email: &str) -> bool {
    let all = get_json(http, format!("{sim}/_sim/hubspot/contacts")).await;
    all.to_string().contains(email)
}

/// The live Pipedrive person with this email, if any.
async fn pipedrive_person(http: &reqwest::Client, sim: &str, email: &str) -> Option<Value> {
    let all = get_json(http, format!("{sim}/_sim/pipedrive/persons")).await;
    all["data"]
        .as_array()?
        .iter()
        .find(|p| p["is_deleted"] == false && p.to_string().contains(email))
        .cloned()
}

/// Every file of the store's folder, searched for `needle` byte by byte.
fn found_in_files(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

#[tokio::test]
async fn an_erased_email_is_found_nowhere() {
    let dir = temp_dir("erasure");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("POLL_INTERVAL_SECS", "3600")]).await;
    let email = "erase.me@example.com";
    let id = common::create_contact(
        &http,
        &p.url,
        json!({"email": email, "first_name": "Erin", "last_name": "Rase", "phone": "+1 555 0142"}),
    )
    .await;
    let keep = common::create_contact(
        &http,
        &p.url,
        json!({"email": "keep@example.com", "first_name": "Kim"}),
    )
    .await;
    let c = common::crm_status_becomes(&http, &p.url, &id, "hubspot", "synced", 15).await;
    common::crm_status_becomes(&http, &p.url, &id, "pipedrive", "synced", 15).await;
    let hs_id = c["sync"]["crms"]["hubspot"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A conflict of hers in the log, and history: more places her data goes.
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"lastname": "Raised"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    eventually(15, "the HubSpot edit in the app", || {
        let (http, url) = (http.clone(), format!("{}/contacts/{id}", p.url));
        async move { (get_json(&http, url).await["last_name"] == "Raised").then_some(()) }
    })
    .await;
    p.settled().await;
    assert!(hubspot_has(&http, &p.sim, email).await);
    assert!(pipedrive_person(&http, &p.sim, email).await.is_some());
    assert!(
        !found_in_files(&dir, email).is_empty(),
        "the search of the files sees the email while it is stored"
    );

    let r = http
        .delete(format!("{}/contacts/{id}?erase=true", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    p.settled().await;
    let r = http
        .get(format!("{}/contacts/{id}", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        !hubspot_has(&http, &p.sim, email).await,
        "GDPR-deleted in HubSpot, archived copies too"
    );
    assert!(
        pipedrive_person(&http, &p.sim, email).await.is_none(),
        "deleted in Pipedrive"
    );
    let kept = get_json(&http, format!("{}/contacts/{keep}", p.url)).await;
    assert_eq!(
        kept["sync"]["badge"], "synced",
        "the other contact is untouched: {kept}"
    );

    // A GDPR delete made in HubSpot erases the person here and in Pipedrive too.
    let other = "gdpr.in.hubspot@example.com";
    let id2 =
        common::create_contact(&http, &p.url, json!({"email": other, "first_name": "Gail"})).await;
    let c2 = common::crm_status_becomes(&http, &p.url, &id2, "hubspot", "synced", 15).await;
    common::crm_status_becomes(&http, &p.url, &id2, "pipedrive", "synced", 15).await;
    p.settled().await;
    let hs2 = c2["sync"]["crms"]["hubspot"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http
        .post(format!("{}/_sim/hubspot/contacts/{hs2}/gdpr-delete", p.sim))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    eventually(
        15,
        "the HubSpot privacy deletion erased the contact",
        || {
            let (http, url) = (http.clone(), format!("{}/contacts/{id2}", p.url));
            async move { (http.get(url).send().await.ok()?.status() == 404).then_some(()) }
        },
    )
    .await;
    p.settled().await;
    assert!(pipedrive_person(&http, &p.sim, other).await.is_none());

    // Not a byte of either email is left in the store's files.
    p.stop();
    for e in [email, other] {
        assert_eq!(found_in_files(&dir, e), Vec::<String>::new(), "{e} found");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

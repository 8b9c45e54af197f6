//! Black-box: the preview of a first sync writes nothing in either CRM or the app, says what
//! the Sync Now after it then does, and that Sync Now reuses the preview's listing of each CRM.

mod common;

use common::{LocalProcess, eventually, get_json, temp_dir};
use serde_json::{Value, json};

const CONTACTS: usize = 6;

fn crm<'a>(preview: &'a Value, provider: &str) -> &'a Value {
    preview["crms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == provider)
        .unwrap_or_else(|| panic!("no {provider} in {preview}"))
}

fn emails(group: &Value) -> Vec<String> {
    let mut out: Vec<String> = group["examples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["email"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

async fn sim_post(http: &reqwest::Client, url: String, body: Value) {
    let r = http.post(url).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// The Pipedrive listings that are not polls (a poll lists in `update_time` order).
async fn pipedrive_listings(http: &reqwest::Client, sim: &str) -> usize {
    let log = get_json(http, format!("{sim}/_sim/pipedrive/requests")).await;
    log.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "GET" && r["path"] == "/api/v2/persons")
        .filter(|r| {
            !r["query"]
                .as_str()
                .unwrap_or_default()
                .contains("sort_by=update_time")
        })
        .count()
}

#[tokio::test]
async fn a_preview_writes_nothing_and_the_first_sync_does_what_it_said() {
    let dir = temp_dir("preview");
    let http = common::http();
    // The app's contacts, before any CRM is connected.
    let p = LocalProcess::start(&dir, &[("CRM_SIMULATOR", "off")]).await;
    for i in 0..CONTACTS {
        common::create_contact(
            &http,
            &p.url,
            json!({"email": format!("p{i}@example.com"), "first_name": format!("P{i}")}),
        )
        .await;
    }
    p.stop();

    let p = LocalProcess::start(&dir, &[("POLL_INTERVAL_SECS", "3600")]).await;
    p.settled().await;
    // What the CRMs had before (their webhooks lost): in Pipedrive a person with an app
    // contact's email and another first name, one without an email, one only Pipedrive has;
    // in HubSpot a contact with an app contact's email and the same name, one only it has.
    for crm in ["hubspot", "pipedrive"] {
        common::sim_webhooks(&http, &p.sim, crm, false).await;
    }
    let persons = format!("{}/_sim/pipedrive/persons", p.sim);
    sim_post(&http, persons.clone(), json!({"first_name": "Paula", "last_name": "Zero", "emails": [{"value": "p0@example.com", "primary": true}]})).await;
    sim_post(&http, persons.clone(), json!({"name": "No Mail"})).await;
    sim_post(
        &http,
        persons,
        json!({"name": "Pd Only", "emails": [{"value": "pdonly@example.com", "primary": true}]}),
    )
    .await;
    let contacts = format!("{}/_sim/hubspot/contacts", p.sim);
    sim_post(
        &http,
        contacts.clone(),
        json!({"properties": {"email": "p1@example.com", "firstname": "P1"}}),
    )
    .await;
    sim_post(
        &http,
        contacts,
        json!({"properties": {"email": "hsonly@example.com", "firstname": "Hs"}}),
    )
    .await;
    for crm in ["hubspot", "pipedrive"] {
        common::sim_webhooks(&http, &p.sim, crm, true).await;
    }
    let (hs_before, pd_before) = p.settled().await;
    let listings_before = pipedrive_listings(&http, &p.sim).await;

    let r = http
        .get(format!("{}/sync/preview", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let preview: Value = r.json().await.unwrap();
    let (hs_after, pd_after) = p.settled().await;

    // Nothing written anywhere.
    assert_eq!(
        hs_after["write_calls"], hs_before["write_calls"],
        "{hs_after}"
    );
    assert_eq!(
        pd_after["write_calls"], pd_before["write_calls"],
        "{pd_after}"
    );
    let app = get_json(&http, format!("{}/contacts?limit=100", p.url)).await;
    assert_eq!(app["items"].as_array().unwrap().len(), CONTACTS, "{app}");
    let status = get_json(&http, format!("{}/sync/status", p.url)).await;
    for c in status["crms"].as_array().unwrap() {
        assert_eq!(c["synced_contacts"], 0, "{c}");
    }

    // What it says, per CRM.
    let pd = crm(&preview, "pipedrive");
    assert_eq!(pd["error"], Value::Null, "{pd}");
    assert_eq!(pd["app_contacts"], CONTACTS, "{pd}");
    assert_eq!(pd["linked"], 0, "{pd}");
    assert_eq!(pd["matched"]["count"], 1, "{pd}");
    assert_eq!(emails(&pd["matched"]), ["p0@example.com"], "{pd}");
    assert_eq!(pd["created"]["count"], CONTACTS - 1, "{pd}");
    assert_eq!(pd["imported"]["count"], 1, "{pd}");
    assert_eq!(
        emails(&pd["created_from_other_crms"]),
        ["hsonly@example.com"],
        "{pd}"
    );
    assert_eq!(emails(&pd["imported"]), ["pdonly@example.com"], "{pd}");
    assert_eq!(pd["crm_without_email"]["count"], 1, "{pd}");
    assert_eq!(
        pd["crm_without_email"]["examples"][0]["name"], "No Mail",
        "{pd}"
    );
    assert_eq!(pd["app_without_email"]["count"], 0, "{pd}");
    assert_eq!(pd["records_listed"], 3, "{pd}");
    assert_eq!(pd["listing_complete"], true, "{pd}");
    let first_name = pd["conflicts"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "first_name")
        .unwrap_or_else(|| panic!("a first-name conflict: {pd}"));
    assert_eq!(
        (
            &first_name["app_value"],
            &first_name["crm_value"],
            &first_name["winner"]
        ),
        (&json!("P0"), &json!("Paula"), &json!("crm")),
        "the CRM wins by default: {pd}"
    );
    assert_eq!(pd["conflicts"]["contacts"], 1, "{pd}");
    // Its cost: the listing, and what the simulator counted for it.
    let spent =
        pd_after["tokens_used"].as_u64().unwrap() - pd_before["tokens_used"].as_u64().unwrap();
    assert_eq!(
        pd["crm_tokens"], spent,
        "the preview's tokens, as Pipedrive counted them: {pd}"
    );
    assert_eq!(pd["crm_requests"], 1, "{pd}");

    let hs = crm(&preview, "hubspot");
    assert_eq!(hs["error"], Value::Null, "{hs}");
    assert_eq!(hs["matched"]["count"], 1, "{hs}");
    assert_eq!(emails(&hs["matched"]), ["p1@example.com"], "{hs}");
    assert_eq!(hs["created"]["count"], CONTACTS - 1, "{hs}");
    assert_eq!(emails(&hs["imported"]), ["hsonly@example.com"], "{hs}");
    assert_eq!(
        emails(&hs["created_from_other_crms"]),
        ["pdonly@example.com"],
        "{hs}"
    );
    assert_eq!(hs["crm_without_email"]["count"], 0, "{hs}");
    assert_eq!(
        hs["conflicts"]["fields"], 0,
        "same name on both sides: {hs}"
    );
    assert_eq!(
        hs_after["requests"].as_u64().unwrap() - hs_before["requests"].as_u64().unwrap(),
        hs["crm_requests"].as_u64().unwrap(),
        "the preview's requests, as HubSpot counted them: {hs}"
    );

    // The first sync then does what the preview said, without listing either CRM again.
    let r = http.post(format!("{}/sync", p.url)).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    eventually(60, "Sync Now done", || async {
        let s = get_json(&http, format!("{}/sync/status", p.url)).await;
        (s["sync_now"]["phase"] == "done").then_some(s)
    })
    .await;
    p.settled().await;
    assert_eq!(
        pipedrive_listings(&http, &p.sim).await,
        listings_before + 1,
        "the backfill reused the preview's listing of Pipedrive"
    );
    let hs_done = get_json(&http, format!("{}/_sim/hubspot/stats", p.sim)).await;
    assert_eq!(
        hs_done["by_endpoint"]["GET /crm/v3/objects/contacts"], 1,
        "the backfill reused the preview's listing of HubSpot: {hs_done}"
    );
    // HubSpot's search shows a new record a second late: the contact made there just before
    // this Sync Now comes in with a poll after that (here: another Sync Now).
    let all = eventually(30, "both CRMs' own records imported", || async {
        let app = get_json(&http, format!("{}/contacts?limit=100", p.url)).await;
        let mut all: Vec<String> = app["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["email"].as_str().map(str::to_owned))
            .collect();
        all.sort();
        if all.len() < CONTACTS + 2 {
            p.settled().await;
            http.post(format!("{}/sync", p.url)).send().await.unwrap();
            return None;
        }
        Some(all)
    })
    .await;
    assert_eq!(all.len(), CONTACTS + 2, "the two imported: {all:?}");
    assert!(all.contains(&"pdonly@example.com".to_string()));
    assert!(all.contains(&"hsonly@example.com".to_string()));
    let (_, pd_done) = p.settled().await;
    let creates = |s: &Value| {
        s["calls_by_endpoint"]["POST /api/v2/persons"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(
        creates(&pd_done),
        creates(&pd_before)
            + pd["created"]["count"].as_u64().unwrap()
            + pd["created_from_other_crms"]["count"].as_u64().unwrap(),
        "created in Pipedrive as previewed: {pd_done}"
    );

    // The contacts can be searched by email or name, page by page.
    let found = get_json(&http, format!("{}/contacts?q=PDONLY", p.url)).await;
    let emails_of = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["email"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(emails_of(&found), ["pdonly@example.com"]);
    let mut seen = Vec::new();
    let mut url = format!("{}/contacts?q=example.com&limit=3", p.url);
    loop {
        let page = get_json(&http, url.clone()).await;
        assert!(page["items"].as_array().unwrap().len() <= 3, "{page}");
        seen.extend(emails_of(&page));
        match page["next"].as_str() {
            Some(next) => url = format!("{}/contacts?q=example.com&limit=3&after={next}", p.url),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, all, "every contact once, page by page");
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

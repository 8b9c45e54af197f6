//! Black-box: the runner with eight workers on one queue (`SYNC_WORKERS=8`), as several
//! sync-worker Lambdas run at once, and edits arriving on all three sides at once. Every
//! contact ends with exactly one record per CRM, and every edit survives.

mod common;

use std::collections::HashMap;

use common::{LocalProcess, get_json, temp_dir};
use serde_json::{Value, json};

const CONTACTS: usize = 30;

fn email(i: usize) -> String {
    format!("worker-race-{i}@example.com")
}

/// Live records of the CRM, by email, as `(first name, last name)`; panics on a second live
/// record with the same email.
async fn crm_names(
    http: &reqwest::Client,
    p: &LocalProcess,
    provider: &str,
) -> HashMap<String, (Value, Value)> {
    let (url, list, email, first, last): (_, _, fn(&Value) -> Value, &str, &str) = match provider {
        "hubspot" => (
            format!("{}/_sim/hubspot/contacts", p.sim),
            "results",
            |r| r["properties"]["email"].clone(),
            "firstname",
            "lastname",
        ),
        _ => (
            format!("{}/_sim/pipedrive/persons", p.sim),
            "data",
            |r| r["emails"][0]["value"].clone(),
            "first_name",
            "last_name",
        ),
    };
    let all = get_json(http, url).await;
    let mut by_email = HashMap::new();
    for r in all[list].as_array().unwrap() {
        if r["archived"] == true || r["is_deleted"] == true {
            continue;
        }
        // Pipedrive shows an unset name as "".
        let unset_empty = |v: Value| if v == "" { Value::Null } else { v };
        let names = match provider {
            "hubspot" => (
                r["properties"][first].clone(),
                r["properties"][last].clone(),
            ),
            _ => (r[first].clone(), r[last].clone()),
        };
        let names = (unset_empty(names.0), unset_empty(names.1));
        let key = email(r).as_str().unwrap().to_string();
        assert!(
            by_email.insert(key.clone(), names).is_none(),
            "a second {provider} record for {key}"
        );
    }
    by_email
}

/// The app's contacts, by email, as `(id, first name, last name)`.
async fn app_names(
    http: &reqwest::Client,
    p: &LocalProcess,
) -> HashMap<String, (String, Value, Value)> {
    let page = get_json(http, format!("{}/contacts?limit=100", p.url)).await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["email"].as_str().unwrap().to_string(),
                (
                    c["id"].as_str().unwrap().to_string(),
                    c["first_name"].clone(),
                    c["last_name"].clone(),
                ),
            )
        })
        .collect()
}

/// All three sides hold `expected(i)` (first and last name) for every contact, with one record
/// per CRM.
async fn assert_converged(
    http: &reqwest::Client,
    p: &LocalProcess,
    expected: impl Fn(usize) -> (Value, Value),
) {
    let app = app_names(http, p).await;
    assert_eq!(app.len(), CONTACTS, "{app:?}");
    for provider in ["hubspot", "pipedrive"] {
        let crm = crm_names(http, p, provider).await;
        assert_eq!(crm.len(), CONTACTS, "one {provider} record per contact");
        for i in 0..CONTACTS {
            let want = expected(i);
            assert_eq!(crm[&email(i)], want, "{provider}, contact {i}");
            let (_, first, last) = &app[&email(i)];
            assert_eq!((first.clone(), last.clone()), want, "app, contact {i}");
        }
    }
    let status = get_json(http, format!("{}/sync/status", p.url)).await;
    assert_eq!(status["dlq_depth"], 0, "{status}");
    for crm in status["crms"].as_array().unwrap() {
        assert_eq!(crm["synced_contacts"], CONTACTS, "{status}");
        assert_eq!(crm["pending"], 0, "{status}");
    }
}

#[tokio::test]
async fn eight_workers_create_once_and_lose_no_edit() {
    let dir = temp_dir("workers");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("SYNC_WORKERS", "8")]).await;

    // Each contact is created and at once renamed: the create's and the update's jobs run on
    // different workers at the same time.
    let writes: Vec<_> = (0..CONTACTS)
        .map(|i| {
            let http = http.clone();
            let url = p.url.clone();
            tokio::spawn(async move {
                let c: Value = http
                    .post(format!("{url}/contacts"))
                    .json(&json!({"email": email(i), "first_name": format!("Old {i}")}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = c["id"].as_str().unwrap();
                let r = http
                    .put(format!("{url}/contacts/{id}"))
                    .json(&json!({"email": email(i), "first_name": format!("New {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    p.settled().await;
    assert_converged(&http, &p, |i| (json!(format!("New {i}")), Value::Null)).await;

    // Then edits on all three sides at once: a third of the contacts in HubSpot's UI, a third
    // in Pipedrive's, a third in the app.
    let app = app_names(&http, &p).await;
    let hubspot = get_json(&http, format!("{}/_sim/hubspot/contacts", p.sim)).await;
    let pipedrive = get_json(&http, format!("{}/_sim/pipedrive/persons", p.sim)).await;
    let id_of = |list: &Value, key: &str, i: usize| -> String {
        list[key]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["properties"]["email"] == email(i).as_str()
                    || r["emails"][0]["value"] == email(i).as_str()
            })
            .map(|r| r["id"].to_string().trim_matches('"').to_string())
            .unwrap()
    };
    let mut edits = Vec::new();
    for i in 0..CONTACTS {
        let http = http.clone();
        let (url, body) = match i % 3 {
            0 => (
                format!(
                    "{}/_sim/hubspot/contacts/{}",
                    p.sim,
                    id_of(&hubspot, "results", i)
                ),
                json!({"properties": {"lastname": "FromHubSpot"}}),
            ),
            1 => (
                format!(
                    "{}/_sim/pipedrive/persons/{}",
                    p.sim,
                    id_of(&pipedrive, "data", i)
                ),
                json!({"last_name": "FromPipedrive"}),
            ),
            _ => (String::new(), Value::Null),
        };
        let app_url = format!("{}/contacts/{}", p.url, app[&email(i)].0);
        edits.push(tokio::spawn(async move {
            let r = if url.is_empty() {
                http.put(app_url)
                    .json(&json!({"email": email(i), "first_name": format!("New {i}"), "last_name": "FromApp"}))
                    .send()
                    .await
                    .unwrap()
            } else {
                http.patch(url).json(&body).send().await.unwrap()
            };
            assert!(r.status().is_success(), "{}", r.status());
        }));
    }
    for e in edits {
        e.await.unwrap();
    }
    p.settled().await;
    assert_converged(&http, &p, |i| {
        let last = ["FromHubSpot", "FromPipedrive", "FromApp"][i % 3];
        (json!(format!("New {i}")), json!(last))
    })
    .await;
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

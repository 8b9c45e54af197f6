//! Black-box: the runner with the in-process Pipedrive simulator, driven over HTTP.

mod common;

use common::{LocalProcess, eventually, get_json, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WEBHOOK_USER: &str = "pd-hook";
const WEBHOOK_PASSWORD: &str = "pd-hook-secret";
const COMPANY: u64 = 7001;
const API_USER: u64 = 9001;

fn env(poll_secs: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("POLL_INTERVAL_SECS", poll_secs),
        ("PIPEDRIVE_WEBHOOK_USER", WEBHOOK_USER),
        ("PIPEDRIVE_WEBHOOK_PASSWORD", WEBHOOK_PASSWORD),
    ]
}

/// The live simulated person with this primary email.
async fn person_by_email(http: &reqwest::Client, sim: &str, email: &str) -> Option<Value> {
    let all = get_json(http, format!("{sim}/_sim/pipedrive/persons")).await;
    all["data"]
        .as_array()?
        .iter()
        .find(|p| p["is_deleted"] == false && p["emails"][0]["value"] == email)
        .cloned()
}

async fn field_key(http: &reqwest::Client, sim: &str, name: &str) -> Option<String> {
    let fields = get_json(http, format!("{sim}/_sim/pipedrive/fields")).await;
    fields["data"]
        .as_array()?
        .iter()
        .find(|f| f["field_name"] == name)
        .and_then(|f| f["field_code"].as_str())
        .map(str::to_owned)
}

async fn pd_stats(http: &reqwest::Client, sim: &str) -> Value {
    get_json(http, format!("{sim}/_sim/pipedrive/stats")).await
}

fn endpoint_calls(stats: &Value, endpoint: &str) -> u64 {
    stats["calls_by_endpoint"][endpoint].as_u64().unwrap_or(0)
}

/// The Pipedrive simulator's stats once the runner has settled.
async fn settled(_http: &reqwest::Client, p: &LocalProcess) -> Value {
    p.settled().await.1
}

fn tokens(stats: &Value) -> u64 {
    stats["tokens_used"].as_u64().unwrap()
}

#[tokio::test]
async fn app_to_pipedrive_and_back_without_echo_within_the_token_budget() {
    let dir = temp_dir("pipedrive-flow");
    let http = common::http();
    let p = LocalProcess::start(&dir, &env("3600")).await;

    // Pronouns setup creates the Pipedrive person field (and the HubSpot property).
    let setup: Value = http
        .post(format!("{}/setup/pronouns-fields", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(setup["ready"], true, "{setup}");
    let pd = setup["crms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "pipedrive")
        .unwrap();
    let pronouns_key = field_key(&http, &p.sim, "pronouns").await.unwrap();
    assert_eq!(pd["field_key"], pronouns_key.as_str());
    assert_eq!(pronouns_key.len(), 40);
    // The simulated account has no contact sync: job titles live in a custom field.
    let job_key = field_key(&http, &p.sim, "job_title").await.unwrap();
    let before = settled(&http, &p).await;

    // App → Pipedrive: one search (no duplicates) and one create.
    let created: Value = http
        .post(format!("{}/contacts", p.url))
        .json(
            &json!({"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
                      "pronouns": "she/her", "job_title": "Analyst", "phone": "+44 20 7946 0000"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let person = eventually(10, "the person in Pipedrive", || {
        let http = http.clone();
        let sim = p.sim.clone();
        async move { person_by_email(&http, &sim, "ada@example.com").await }
    })
    .await;
    assert_eq!(person["custom_fields"][&pronouns_key], "she/her");
    assert_eq!(person["custom_fields"][&job_key], "Analyst");
    assert_eq!(person["first_name"], "Ada");
    assert_eq!(person["last_name"], "Lovelace");
    assert_eq!(person["phones"][0]["value"], "+44 20 7946 0000");
    let pd_id = person["id"].as_u64().unwrap();
    let synced = eventually(10, "the synced badge", || {
        let http = http.clone();
        let url = format!("{}/contacts/{id}", p.url);
        async move {
            let c = get_json(&http, url).await;
            (c["sync"]["badge"] == "synced").then_some(c)
        }
    })
    .await;
    assert_eq!(
        synced["sync"]["crms"]["pipedrive"]["external_id"],
        pd_id.to_string()
    );
    let after_create = settled(&http, &p).await;
    let create_cost = tokens(&after_create) - tokens(&before);

    // Pipedrive → app: an edit in Pipedrive's web app arrives by webhook.
    let r = http
        .patch(format!("{}/_sim/pipedrive/persons/{pd_id}", p.sim))
        .json(&json!({"last_name": "King", "custom_fields": {job_key.clone(): "Countess"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let updated = eventually(10, "the Pipedrive edit in the app", || {
        let http = http.clone();
        let url = format!("{}/contacts/{id}", p.url);
        async move {
            let c = get_json(&http, url).await;
            (c["last_name"] == "King").then_some(c)
        }
    })
    .await;
    assert_eq!(updated["job_title"], "Countess");
    assert_eq!(updated["pronouns"], "she/her");
    assert_eq!(updated["first_name"], "Ada");
    let after_inbound = settled(&http, &p).await;
    let inbound_cost = tokens(&after_inbound) - tokens(&after_create);

    // App → Pipedrive: an edit of the linked contact.
    let r = http
        .put(format!("{}/contacts/{id}", p.url))
        .json(
            &json!({"email": "ada@example.com", "first_name": "Augusta", "last_name": "King",
                      "pronouns": "she/her", "job_title": "Countess", "phone": "+44 20 7946 0000"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    eventually(10, "the app edit in Pipedrive", || {
        let http = http.clone();
        let url = format!("{}/_sim/pipedrive/persons/{pd_id}", p.sim);
        async move {
            let person = get_json(&http, url).await;
            (person["data"]["first_name"] == "Augusta").then_some(())
        }
    })
    .await;
    let after_outbound = settled(&http, &p).await;
    let outbound_cost = tokens(&after_outbound) - tokens(&after_inbound);
    println!(
        "Pipedrive tokens: first create {create_cost} (search + create), Pipedrive→app edit {inbound_cost}, app→Pipedrive edit {outbound_cost}"
    );
    assert_eq!(create_cost, 25, "search 20 + create 5");
    assert_eq!(inbound_cost, 1, "Pipedrive→app edit: one read");
    assert_eq!(
        outbound_cost, 6,
        "app→Pipedrive edit: read 1 + update 5; its echo costs 0"
    );

    // Settled: one create, one update, no echo writes; the app contact was written once (the
    // Pipedrive edit) after its creation.
    let stats = after_outbound;
    let contact = get_json(&http, format!("{}/contacts/{id}", p.url)).await;
    assert_eq!(
        contact["version"], 3,
        "created, the Pipedrive edit, our PUT: {contact}"
    );
    assert_eq!(endpoint_calls(&stats, "POST /api/v2/persons"), 1, "{stats}");
    assert_eq!(
        endpoint_calls(&stats, "PATCH /api/v2/persons/{id}"),
        1,
        "{stats}"
    );
    assert!(
        stats["webhook_deliveries"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    let live = get_json(&http, format!("{}/_sim/pipedrive/persons", p.sim)).await;
    assert_eq!(
        live["data"].as_array().unwrap().len(),
        1,
        "no duplicate persons"
    );

    let status = get_json(&http, format!("{}/sync/status", p.url)).await;
    let pipedrive = status["crms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "pipedrive")
        .unwrap();
    assert_eq!(pipedrive["pronouns_field"], true);
    assert_eq!(pipedrive["errors"], 0, "{status}");
    assert_eq!(pipedrive["synced_contacts"], 1);
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_change_missed_by_webhooks_arrives_through_the_poll() {
    let dir = temp_dir("pipedrive-poll");
    let http = common::http();
    let p = LocalProcess::start(&dir, &env("2")).await;
    let created: Value = http
        .post(format!("{}/contacts", p.url))
        .json(&json!({"email": "grace@example.com", "first_name": "Grace"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let person = eventually(10, "the person in Pipedrive", || {
        let http = http.clone();
        let sim = p.sim.clone();
        async move { person_by_email(&http, &sim, "grace@example.com").await }
    })
    .await;
    let pd_id = person["id"].as_u64().unwrap();
    settled(&http, &p).await;

    let r = http
        .post(format!("{}/_sim/pipedrive/webhooks", p.sim))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // In the same second as our create, as a quick user would: `update_time` has whole seconds.
    http.patch(format!("{}/_sim/pipedrive/persons/{pd_id}", p.sim))
        .json(&json!({"last_name": "Hopper"}))
        .send()
        .await
        .unwrap();
    let updated = eventually(15, "the missed change through the poll", || {
        let http = http.clone();
        let url = format!("{}/contacts/{id}", p.url);
        async move {
            let c = get_json(&http, url).await;
            (c["last_name"] == "Hopper").then_some(c)
        }
    })
    .await;
    assert_eq!(updated["first_name"], "Grace");
    let stats = pd_stats(&http, &p.sim).await;
    assert!(stats["webhooks_dropped"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        endpoint_calls(&stats, "GET /api/v2/persons") >= 1,
        "{stats}"
    );
    assert_eq!(endpoint_calls(&stats, "POST /api/v2/persons"), 1, "{stats}");
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_merge_of_two_linked_persons_retires_the_merged_away_link_without_recreating() {
    let dir = temp_dir("pipedrive-merge");
    let http = common::http();
    let p = LocalProcess::start(&dir, &env("3600")).await;
    let mut ids = Vec::new();
    let mut pd_ids = Vec::new();
    for email in ["keep@example.com", "gone@example.com"] {
        let c: Value = http
            .post(format!("{}/contacts", p.url))
            .json(&json!({"email": email, "first_name": "M"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(c["id"].as_str().unwrap().to_string());
        let person = eventually(10, "the person in Pipedrive", || {
            let http = http.clone();
            let sim = p.sim.clone();
            async move { person_by_email(&http, &sim, email).await }
        })
        .await;
        pd_ids.push(person["id"].as_u64().unwrap());
    }
    settled(&http, &p).await;
    let r = http
        .post(format!(
            "{}/_sim/pipedrive/persons/{}/merge",
            p.sim, pd_ids[1]
        ))
        .json(&json!({"merge_with_id": pd_ids[0]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let gone = eventually(10, "the merged-away link to be retired", || {
        let http = http.clone();
        let url = format!("{}/contacts/{}", p.url, ids[1]);
        async move {
            let c = get_json(&http, url).await;
            (c["sync"]["crms"]["pipedrive"]["status"] == "deleted").then_some(c)
        }
    })
    .await;
    assert_eq!(gone["email"], "gone@example.com", "the app contact is kept");
    let stats = settled(&http, &p).await;
    assert_eq!(
        endpoint_calls(&stats, "POST /api/v2/persons"),
        2,
        "the merged-away person is not recreated: {stats}"
    );
    let keep = get_json(&http, format!("{}/contacts/{}", p.url, ids[0])).await;
    assert_eq!(keep["sync"]["crms"]["pipedrive"]["status"], "synced");
    assert_eq!(
        keep["sync"]["crms"]["pipedrive"]["external_id"],
        pd_ids[0].to_string()
    );

    // The survivor keeps the merged-away email among its other emails. A new contact with
    // that email is not this person's (it is linked to another contact, and not by its own
    // email): it gets a person of its own, instead of a conflict retried into the DLQ. (Once
    // Pipedrive's search shows the merge: its index lags writes by a second.)
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let r = http
        .delete(format!("{}/contacts/{}", p.url, ids[1]))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let again: Value = http
        .post(format!("{}/contacts", p.url))
        .json(&json!({"email": "gone@example.com", "first_name": "N"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again_id = again["id"].as_str().unwrap().to_string();
    let linked = eventually(15, "the new contact linked to a person of its own", || {
        let http = http.clone();
        let url = format!("{}/contacts/{again_id}", p.url);
        async move {
            let c = get_json(&http, url).await;
            (c["sync"]["crms"]["pipedrive"]["status"] == "synced").then_some(c)
        }
    })
    .await;
    let own = linked["sync"]["crms"]["pipedrive"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(own, pd_ids[0].to_string(), "{linked}");
    let person = get_json(&http, format!("{}/_sim/pipedrive/persons/{own}", p.sim)).await;
    assert_eq!(person["data"]["first_name"], "N", "{person}");
    assert_eq!(
        person["data"]["emails"][0]["value"], "gone@example.com",
        "{person}"
    );
    let keep = get_json(&http, format!("{}/contacts/{}", p.url, ids[0])).await;
    assert_eq!(
        keep["first_name"], "M",
        "the survivor's contact is untouched"
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

fn change_event(company: u64, event_id: &str, source: &str, user: u64) -> Value {
    json!({
        "meta": {"action": "change", "entity": "person", "company_id": company.to_string(),
                 "correlation_id": "c0ffee00-0000-4000-8000-000000000000", "entity_id": "424242",
                 "id": event_id, "is_bulk_edit": false, "timestamp": "2026-01-01T00:00:00.000Z",
                 "type": "general", "user_id": user.to_string(), "version": "2.0",
                 "webhook_id": "1", "webhook_owner_id": "9002", "change_source": source,
                 "attempt": 1, "host": "sim-company.pipedrive.com"},
        "data": {"id": 424242, "name": "X", "emails": [], "phones": [], "custom_fields": {}},
        "previous": {"name": "Y"}
    })
}

#[tokio::test]
async fn bad_pipedrive_webhooks_are_rejected_and_nothing_is_enqueued() {
    let dir = temp_dir("pipedrive-bad-webhooks");
    let http = common::http();
    let p = LocalProcess::start(&dir, &env("3600")).await;
    let url = format!("{}/webhooks/pipedrive", p.url);
    let send = |body: Vec<u8>, auth: Option<(&'static str, &'static str)>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let mut req = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            if let Some((u, pw)) = auth {
                req = req.basic_auth(u, Some(pw));
            }
            req.send().await.unwrap()
        }
    };
    let depth = || {
        let http = http.clone();
        let url = format!("{}/sync/status", p.url);
        async move { get_json(&http, url).await["queue_depth"].as_u64().unwrap() }
    };
    settled(&http, &p).await;
    let before = depth().await;
    let good_auth = Some((WEBHOOK_USER, WEBHOOK_PASSWORD));
    let body = change_event(COMPANY, "0b1e4f6a-0000-4000-8000-000000000001", "app", 9002)
        .to_string()
        .into_bytes();

    assert_eq!(
        send(body.clone(), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(body.clone(), Some((WEBHOOK_USER, "wrong")))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(body.clone(), Some(("someone", WEBHOOK_PASSWORD)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(b"{\"meta\": {\"action\": ".to_vec(), good_auth)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let unknown = change_event(999, "0b1e4f6a-0000-4000-8000-000000000002", "app", 9002);
    assert_eq!(
        send(unknown.to_string().into_bytes(), good_auth)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let mut huge = change_event(COMPANY, "0b1e4f6a-0000-4000-8000-000000000003", "app", 9002);
    huge["data"]["notes"] = json!("x".repeat(1024 * 1024 + 1));
    assert_eq!(
        send(huge.to_string().into_bytes(), good_auth)
            .await
            .status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        depth().await,
        before,
        "nothing enqueued by rejected webhooks"
    );

    // Our own API write is dropped; a web-app change is accepted once, its retry dropped.
    let own = change_event(
        COMPANY,
        "0b1e4f6a-0000-4000-8000-000000000004",
        "api",
        API_USER,
    );
    let r: Value = send(own.to_string().into_bytes(), good_auth)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"accepted": 0, "dropped": 1}));
    let r = send(body.clone(), good_auth).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "dropped": 0})
    );
    let mut retry: Value = serde_json::from_slice(&body).unwrap();
    retry["meta"]["attempt"] = json!(2);
    let again: Value = send(retry.to_string().into_bytes(), good_auth)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, json!({"accepted": 0, "dropped": 1}));
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One half of a Pipedrive merge as webhooks v2 sends it: the merged-away person's `delete`
/// with `merged_to_id`, or the survivor's `change` with `merged_from_id`.
fn merge_half(delete: bool, merged_away: u64, survivor: u64, event_id: &str) -> Value {
    let (action, entity, key, other) = if delete {
        ("delete", merged_away, "merged_to_id", survivor)
    } else {
        ("change", survivor, "merged_from_id", merged_away)
    };
    let mut meta = json!({"action": action, "entity": "person", "company_id": COMPANY.to_string(),
        "correlation_id": "c0ffee00-0000-4000-8000-0000000000aa", "entity_id": entity.to_string(),
        "id": event_id, "is_bulk_edit": false, "timestamp": "2026-01-01T00:00:00.000Z",
        "type": "general", "user_id": "9002", "version": "2.0", "webhook_id": "1",
        "webhook_owner_id": "9002", "change_source": "app", "attempt": 1,
        "host": "sim-company.pipedrive.com"});
    meta[key] = json!(other.to_string());
    let data = if delete {
        Value::Null
    } else {
        json!({"id": survivor, "name": "S", "emails": [], "phones": [], "custom_fields": {}})
    };
    json!({"meta": meta, "data": data, "previous": {"name": "S"}})
}

/// A linked person merged into one we never linked: the link moves to the survivor (the re-key
/// branch), whichever half of the merge arrives first; nothing is recreated or imported twice.
#[tokio::test]
async fn a_merge_into_an_unlinked_person_rekeys_the_link_whatever_the_event_order() {
    let dir = temp_dir("pipedrive-merge-rekey");
    let http = common::http();
    let p = LocalProcess::start(&dir, &env("3600")).await;
    let switch = |enabled: bool| {
        let r = http
            .post(format!("{}/_sim/pipedrive/webhooks", p.sim))
            .json(&json!({"enabled": enabled}))
            .send();
        async move { assert!(r.await.unwrap().status().is_success()) }
    };
    for (n, delete_first) in [(1, true), (2, false)] {
        let email = format!("linked{n}@example.com");
        let c: Value = http
            .post(format!("{}/contacts", p.url))
            .json(&json!({"email": email, "first_name": "L"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = c["id"].as_str().unwrap().to_string();
        let linked = eventually(10, "the person in Pipedrive", || {
            let (http, sim, email) = (http.clone(), p.sim.clone(), email.clone());
            async move { person_by_email(&http, &sim, &email).await }
        })
        .await["id"]
            .as_u64()
            .unwrap();
        p.settled().await;
        // A person created in Pipedrive while its webhooks were off: never seen, never linked.
        switch(false).await;
        let survivor: Value = http
            .post(format!("{}/_sim/pipedrive/persons", p.sim))
            .json(&json!({"name": "S", "emails": [{"value": format!("survivor{n}@example.com"), "primary": true}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let survivor = survivor["data"]["id"].as_u64().unwrap();
        let r = http
            .post(format!("{}/_sim/pipedrive/persons/{linked}/merge", p.sim))
            .json(&json!({"merge_with_id": survivor}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        switch(true).await;
        let halves = [
            merge_half(
                true,
                linked,
                survivor,
                &format!("0b1e4f6a-0000-4000-8000-00000000{n}0d1"),
            ),
            merge_half(
                false,
                linked,
                survivor,
                &format!("0b1e4f6a-0000-4000-8000-00000000{n}0c1"),
            ),
        ];
        let order: Vec<&Value> = if delete_first {
            halves.iter().collect()
        } else {
            halves.iter().rev().collect()
        };
        for half in order {
            let r = http
                .post(format!("{}/webhooks/pipedrive", p.url))
                .basic_auth(WEBHOOK_USER, Some(WEBHOOK_PASSWORD))
                .json(half)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        // The link is re-keyed first, then the contact written: wait for both. The survivor's
        // values win where only it changed: the app contact takes its email.
        let survivor_email = format!("survivor{n}@example.com");
        eventually(
            10,
            "the link re-keyed and the survivor's email taken",
            || {
                let (http, url) = (http.clone(), format!("{}/contacts/{id}", p.url));
                let survivor_email = survivor_email.clone();
                async move {
                    let c = get_json(&http, url).await;
                    let survivor_id = survivor.to_string();
                    (c["sync"]["crms"]["pipedrive"]["external_id"].as_str() == Some(&survivor_id)
                        && c["sync"]["crms"]["pipedrive"]["status"] == "synced"
                        && c["email"] == survivor_email.as_str())
                    .then_some(c)
                }
            },
        )
        .await;
    }
    let stats = settled(&http, &p).await;
    assert_eq!(
        endpoint_calls(&stats, "POST /api/v2/persons"),
        2,
        "only the two app contacts were ever created: {stats}"
    );
    let contacts = get_json(&http, format!("{}/contacts", p.url)).await;
    assert_eq!(
        contacts["items"].as_array().map(Vec::len),
        Some(2),
        "no survivor imported as a new contact: {contacts}"
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Pipedrive user deletes a synced person and the webhook never comes (delivery paused):
/// the poll lists changed persons only, so nothing sees it, until Sync Now reads every linked
/// person (a dozen here: in one listing by ids) and finds it gone: the link becomes a
/// tombstone, the app keeps its contact, and nothing is recreated in Pipedrive.
#[tokio::test]
async fn a_pipedrive_delete_whose_webhook_was_lost_is_found_by_sync_now() {
    let dir = temp_dir("pipedrive-lost-delete");
    let http = common::http();
    let p = LocalProcess::start(&dir, &env("3600")).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let body = json!({"email": format!("gone{i}@example.com"), "first_name": "Ada"});
        ids.push(common::create_contact(&http, &p.url, body).await);
    }
    let id = ids[5].clone();
    let linked = common::crm_status_becomes(&http, &p.url, &id, "pipedrive", "synced", 20).await;
    let pd_id = linked["sync"]["crms"]["pipedrive"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    settled(&http, &p).await;
    common::sim_webhooks(&http, &p.sim, "pipedrive", false).await;
    let r = http
        .delete(format!("{}/_sim/pipedrive/persons/{pd_id}", p.sim))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let before = settled(&http, &p).await;
    let c = get_json(&http, format!("{}/contacts/{id}", p.url)).await;
    assert_eq!(
        c["sync"]["crms"]["pipedrive"]["status"], "synced",
        "nothing told us yet: {c}"
    );

    let r = http.post(format!("{}/sync", p.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let after = common::crm_status_becomes(&http, &p.url, &id, "pipedrive", "deleted", 30).await;
    assert_eq!(after["first_name"], "Ada", "the app keeps its contact");
    let stats = settled(&http, &p).await;
    assert!(
        person_by_email(&http, &p.sim, "gone5@example.com")
            .await
            .is_none(),
        "nothing recreated in Pipedrive"
    );
    let single_reads = endpoint_calls(&stats, "GET /api/v2/persons/{id}")
        - endpoint_calls(&before, "GET /api/v2/persons/{id}");
    assert!(
        single_reads <= 1,
        "a dozen linked persons read in one listing, then only the gone one by the worker: {stats}"
    );
    for other in ids.iter().filter(|o| **o != id) {
        let c = get_json(&http, format!("{}/contacts/{other}", p.url)).await;
        assert_eq!(c["sync"]["crms"]["pipedrive"]["status"], "synced", "{c}");
    }
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

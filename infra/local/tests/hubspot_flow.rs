//! Black-box: the runner with the in-process HubSpot simulator, driven over HTTP.

mod common;

use common::{LocalProcess, eventually, get_json, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn find_by_email<'a>(contacts: &'a Value, email: &str) -> Option<&'a Value> {
    contacts["results"]
        .as_array()?
        .iter()
        .find(|c| c["properties"]["email"] == email && c["archived"] != true)
}

#[tokio::test]
async fn app_to_hubspot_and_back_without_echo() {
    let dir = temp_dir("hubspot-flow");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[]).await;

    // Pronouns setup creates the HubSpot property.
    let setup: Value = http
        .post(format!("{}/setup/pronouns-fields", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(setup["ready"], true, "{setup}");

    // App → HubSpot, with pronouns.
    let created: Value = http
        .post(format!("{}/contacts", p.url))
        .json(&json!({"email": "grace@example.com", "first_name": "Grace", "pronouns": "she/her"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let hs = eventually(10, "the contact in HubSpot", || {
        let http = http.clone();
        let url = format!("{}/_sim/hubspot/contacts", p.sim);
        async move {
            let all = get_json(&http, url).await;
            find_by_email(&all, "grace@example.com").cloned()
        }
    })
    .await;
    assert_eq!(hs["properties"]["pronouns"], "she/her");
    assert_eq!(hs["properties"]["firstname"], "Grace");
    let hs_id = hs["id"].as_str().unwrap().to_string();
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
        synced["sync"]["crms"]["hubspot"]["external_id"],
        hs_id.as_str()
    );

    // Edit in HubSpot's UI → webhook → app.
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"lastname": "Hopper", "jobtitle": "Rear Admiral"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let updated = eventually(10, "the HubSpot edit in the app", || {
        let http = http.clone();
        let url = format!("{}/contacts/{id}", p.url);
        async move {
            let c = get_json(&http, url).await;
            (c["last_name"] == "Hopper").then_some(c)
        }
    })
    .await;
    assert_eq!(updated["job_title"], "Rear Admiral");
    assert_eq!(updated["pronouns"], "she/her");

    // Settled (every webhook delivered and handled): no echo write to HubSpot, and the app
    // contact was written once after its creation (the HubSpot edit).
    let (stats2, _) = p.settled().await;
    let contact = get_json(&http, format!("{}/contacts/{id}", p.url)).await;
    assert_eq!(
        contact["version"], 2,
        "created, then the HubSpot edit: {contact}"
    );
    assert_eq!(
        stats2["write_calls"], 1,
        "one create, no echo writes: {stats2}"
    );
    assert!(
        stats2["webhook_deliveries"].as_u64().unwrap() >= 1,
        "{stats2}"
    );

    let status = get_json(&http, format!("{}/sync/status", p.url)).await;
    let hubspot = &status["crms"][0];
    assert_eq!(hubspot["provider"], "hubspot");
    assert_eq!(hubspot["pronouns_field"], true);
    assert_eq!(hubspot["errors"], 0);
    assert!(hubspot["last_sync_at"].is_string());
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_hubspot_webhooks_are_rejected_and_nothing_is_enqueued() {
    let dir = temp_dir("hubspot-bad-webhooks");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("POLL_INTERVAL_SECS", "3600")]).await;
    let url = format!("{}/webhooks/hubspot", p.url);
    let secret = "sim-hubspot-secret";
    let event = |portal: u64, i: u64| {
        json!({"eventId": i, "subscriptionId": 1, "portalId": portal, "appId": 1234567,
               "occurredAt": 1767225600000u64 + i, "subscriptionType": "contact.propertyChange",
               "attemptNumber": 0, "objectId": 900000 + i, "propertyName": "firstname",
               "propertyValue": "X", "changeSource": "CRM_UI", "sourceId": "userId:1"})
    };
    let now_ms = || chrono_now_ms().to_string();
    let send = |body: String, ts: String, sig: Option<String>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let mut req = http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-hubspot-request-timestamp", ts);
            if let Some(s) = sig {
                req = req.header("x-hubspot-signature-v3", s);
            }
            req.body(body).send().await.unwrap()
        }
    };
    let depth = || {
        let http = http.clone();
        let url = format!("{}/sync/status", p.url);
        async move { get_json(&http, url).await["queue_depth"].as_u64().unwrap() }
    };
    let before = depth().await;

    let body = json!([event(62515, 1)]).to_string();
    let ts = now_ms();
    let wrong = v3(secret, &url, &format!("{body} "), &ts);
    assert_eq!(
        send(body.clone(), ts.clone(), Some(wrong)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(body.clone(), ts.clone(), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let stale_ts = (chrono_now_ms() - 6 * 60 * 1000).to_string();
    let stale = v3(secret, &url, &body, &stale_ts);
    assert_eq!(
        send(body.clone(), stale_ts, Some(stale)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Authenticated before anything else is read: a body that is no batch, unsigned or with
    // a wrong signature, is a 401 (the parser is never reached); one whose portal cannot be
    // read cannot be verified, so it is a 401 too.
    for junk in [
        "not json at all",
        "{\"portalId\": 62515}",
        "[{\"objectId\": ",
    ] {
        assert_eq!(
            send(junk.to_string(), ts.clone(), None).await.status(),
            StatusCode::UNAUTHORIZED,
            "{junk}"
        );
        let wrong = v3("not-the-secret", &url, junk, &ts);
        assert_eq!(
            send(junk.to_string(), ts.clone(), Some(wrong))
                .await
                .status(),
            StatusCode::UNAUTHORIZED,
            "{junk}"
        );
    }
    let malformed = "[{\"objectId\": ".to_string();
    let sig = v3(secret, &url, &malformed, &ts);
    assert_eq!(
        send(malformed, ts.clone(), Some(sig)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Correctly signed, but not an event batch: a 400.
    let shapeless = json!([{"portalId": 62515, "objectId": "x"}]).to_string();
    let sig = v3(secret, &url, &shapeless, &ts);
    assert_eq!(
        send(shapeless, ts.clone(), Some(sig)).await.status(),
        StatusCode::BAD_REQUEST
    );
    let many = json!((0..101).map(|i| event(62515, i)).collect::<Vec<_>>()).to_string();
    let sig = v3(secret, &url, &many, &ts);
    assert_eq!(
        send(many, ts.clone(), Some(sig)).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // An unknown portal has no secret to verify with: not told apart from a wrong signature.
    let unknown = json!([event(999, 1)]).to_string();
    let sig = v3(secret, &url, &unknown, &ts);
    assert_eq!(
        send(unknown, ts.clone(), Some(sig)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Correctly signed, but declared as something other than JSON: a 415.
    let plain = json!([event(62515, 2)]).to_string();
    let sig = v3(secret, &url, &plain, &ts);
    let r = http
        .post(&url)
        .header("content-type", "text/plain")
        .header("x-hubspot-request-timestamp", ts.clone())
        .header("x-hubspot-signature-v3", sig)
        .body(plain)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        depth().await,
        before,
        "nothing enqueued by rejected webhooks"
    );

    // The same request correctly signed is accepted and enqueued once; a duplicate is dropped.
    let good = v3(secret, &url, &body, &ts);
    let r = send(body.clone(), ts.clone(), Some(good.clone())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["accepted"], 1);
    let again: Value = send(body, ts, Some(good)).await.json().await.unwrap();
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["dropped"], 1);
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Signs like HubSpot (v3); `hubspot_v3` is checked against HubSpot's published vectors.
fn v3(secret: &str, url: &str, body: &str, ts: &str) -> String {
    shared::signature::hubspot_v3(secret, "POST", url, body.as_bytes(), ts)
}

/// Connecting HubSpot to an app that already has 1,000 contacts: Sync Now backfills them with
/// batch lookups by email and batch upserts (100 per call) under a tight simulated rate limit;
/// nothing lost, nothing doubled.
#[tokio::test]
async fn backfill_of_1000_contacts_uses_batch_upserts_under_the_rate_limit() {
    let dir = temp_dir("hubspot-backfill");
    let http = common::http();
    let n = 1000;
    {
        let p = LocalProcess::start(&dir, &[("CRM_SIMULATOR", "off")]).await;
        for i in 0..n {
            let r = http
                .post(format!("{}/contacts", p.url))
                .json(&json!({"email": format!("person{i}@example.com"), "first_name": format!("P{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        // Their sync jobs (no CRM yet: nothing to do) are done before the CRMs connect, so
        // Sync Now's backfill is what links every one of them.
        eventually(60, "the app's sync jobs to drain", || {
            let (http, url) = (http.clone(), format!("{}/sync/status", p.url));
            async move { (get_json(&http, url).await["queue_depth"] == 0).then_some(()) }
        })
        .await;
        p.stop();
    }
    let p = LocalProcess::start(
        &dir,
        &[
            ("SIM_HUBSPOT_BURST_LIMIT", "10"),
            ("POLL_INTERVAL_SECS", "3600"),
        ],
    )
    .await;
    let r = http.post(format!("{}/sync", p.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let status = eventually(120, "Sync Now to finish", || {
        let http = http.clone();
        let url = format!("{}/sync/status", p.url);
        async move {
            let s = get_json(&http, url).await;
            (s["sync_now"]["phase"] == "done" && s["queue_depth"] == 0).then_some(s)
        }
    })
    .await;
    // Both CRMs are connected (Pipedrive simulated too): each gets all n contacts.
    assert_eq!(status["sync_now"]["backfilled"], 2 * n, "{status}");
    assert_eq!(status["sync_now"]["errors"], json!([]));
    assert_eq!(status["dlq_depth"], 0);
    let hubspot = &status["crms"][0];
    assert_eq!(hubspot["synced_contacts"], n);
    assert_eq!(hubspot["errors"], 0);

    let stats = get_json(&http, format!("{}/_sim/hubspot/stats", p.sim)).await;
    // One listing of HubSpot's contacts (the email index, cheaper than ten batch reads by
    // email), then per 100 contacts one batch upsert; the records this Sync Now linked are not
    // read again to find deleted ones.
    let batch_calls = stats["by_endpoint"]["POST /crm/v3/objects/contacts/batch/{action}"]
        .as_u64()
        .unwrap_or(0);
    let upserts = stats["write_calls"].as_u64().unwrap_or(0);
    assert_eq!(upserts, 10, "1,000 contacts in batches of 100 ({stats})");
    assert_eq!(batch_calls, 10, "ten upserts ({stats})");
    assert_eq!(
        stats["by_endpoint"]["GET /crm/v3/objects/contacts"], 1,
        "one listing for the index ({stats})"
    );
    assert_eq!(stats["records_written"], n, "{stats}");
    let all = get_json(&http, format!("{}/_sim/hubspot/contacts", p.sim)).await;
    let emails: std::collections::HashSet<_> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["archived"] != true)
        .map(|c| c["properties"]["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(emails.len(), n, "every contact exactly once in HubSpot");
    assert_eq!(all["results"].as_array().unwrap().len(), n, "no duplicates");
    println!(
        "backfill: {upserts} batch calls, {} requests, {} answered 429",
        stats["requests"], stats["rate_limited"]
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A user deletes the pronouns property in HubSpot's settings, then edits the first name
/// there: the edit reaches the app and Pipedrive, and pronouns are kept everywhere (HubSpot's
/// silence about a property it no longer has is not a user clearing it).
#[tokio::test]
async fn a_deleted_hubspot_property_does_not_clear_the_value() {
    let dir = temp_dir("hubspot-deleted-property");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[]).await;
    let setup: Value = http
        .post(format!("{}/setup/pronouns-fields", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(setup["ready"], true, "{setup}");
    let created: Value = http
        .post(format!("{}/contacts", p.url))
        .json(&json!({"email": "ada@example.com", "first_name": "Ada", "pronouns": "she/her"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    p.settled().await;
    let all = get_json(&http, format!("{}/_sim/hubspot/contacts", p.sim)).await;
    let hs = find_by_email(&all, "ada@example.com").expect("in HubSpot");
    assert_eq!(hs["properties"]["pronouns"], "she/her");
    let hs_id = hs["id"].as_str().unwrap().to_string();

    let r = http
        .delete(format!("{}/_sim/hubspot/properties/pronouns", p.sim))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"firstname": "Augusta"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    p.settled().await;

    let c = get_json(&http, format!("{}/contacts/{id}", p.url)).await;
    assert_eq!(c["first_name"], "Augusta", "{c}");
    assert_eq!(c["pronouns"], "she/her", "not cleared in the app: {c}");
    let persons = get_json(&http, format!("{}/_sim/pipedrive/persons", p.sim)).await;
    let person = persons["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["emails"][0]["value"] == "ada@example.com")
        .expect("in Pipedrive")
        .clone();
    assert_eq!(person["first_name"], "Augusta");
    let fields = get_json(&http, format!("{}/_sim/pipedrive/fields", p.sim)).await;
    let pronouns_key = fields["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field_name"] == "pronouns")
        .and_then(|f| f["field_code"].as_str())
        .expect("the Pipedrive pronouns field")
        .to_string();
    assert_eq!(
        person["custom_fields"][&pronouns_key], "she/her",
        "not cleared in Pipedrive: {person}"
    );
    let warnings = &c["sync"]["crms"]["hubspot"]["warnings"];
    assert!(
        warnings.to_string().contains("pronouns"),
        "HubSpot's pronouns are left out with a warning: {c}"
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A HubSpot user deletes a synced contact and the webhook never comes (delivery paused):
/// the poll lists changed records only, so nothing sees it, until Sync Now reads every linked
/// record in batches and finds it gone: the link becomes a tombstone, the app keeps its
/// contact, and nothing is recreated in HubSpot.
#[tokio::test]
async fn a_hubspot_delete_whose_webhook_was_lost_is_found_by_sync_now() {
    let dir = temp_dir("hubspot-lost-delete");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("POLL_INTERVAL_SECS", "3600")]).await;
    let body = json!({"email": "ada@example.com", "first_name": "Ada"});
    let id = common::create_contact(&http, &p.url, body).await;
    let linked = common::crm_status_becomes(&http, &p.url, &id, "hubspot", "synced", 10).await;
    let hs_id = linked["sync"]["crms"]["hubspot"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    p.settled().await;
    common::sim_webhooks(&http, &p.sim, "hubspot", false).await;
    let r = http
        .delete(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    p.settled().await;
    let before = get_json(&http, format!("{}/contacts/{id}", p.url)).await;
    assert_eq!(
        before["sync"]["crms"]["hubspot"]["status"], "synced",
        "nothing told us yet: {before}"
    );

    let r = http.post(format!("{}/sync", p.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let after = common::crm_status_becomes(&http, &p.url, &id, "hubspot", "deleted", 30).await;
    assert_eq!(after["first_name"], "Ada", "the app keeps its contact");
    p.settled().await;
    let all = get_json(&http, format!("{}/_sim/hubspot/contacts", p.sim)).await;
    assert!(
        find_by_email(&all, "ada@example.com").is_none(),
        "nothing recreated in HubSpot: {all}"
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

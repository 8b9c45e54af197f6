//! Black-box: a tenant's field rules over HTTP, honoured by the sync — a field the app owns
//! goes out and never comes back in, a field that is off goes nowhere — and rules that cannot
//! be stored are refused with a clear error.

mod common;

use common::{LocalProcess, eventually, get_json, temp_dir};
use serde_json::{Value, json};

async fn hubspot_contact(http: &reqwest::Client, sim: &str, email: &str) -> Option<Value> {
    let all = get_json(http, format!("{sim}/_sim/hubspot/contacts")).await;
    all["results"]
        .as_array()?
        .iter()
        .find(|c| c["properties"]["email"] == email)
        .cloned()
}

#[tokio::test]
async fn field_rules_decide_which_way_each_field_flows() {
    let dir = temp_dir("field-rules");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("POLL_INTERVAL_SECS", "3600")]).await;
    let url = format!("{}/settings/fields", p.url);

    // Defaults: every field two-way under the tenant's policy.
    let defaults = get_json(&http, url.clone()).await;
    assert_eq!(
        defaults["fields"]["phone"],
        json!({"direction": "two_way", "winner": null})
    );
    assert_eq!(defaults["conflict_policy"], "crm_wins");

    // Refused: a rule for the email, an unknown field, an unknown direction.
    for bad in [
        json!({"fields": {"email": {"direction": "off"}}}),
        json!({"fields": {"fax": {"direction": "off"}}}),
        json!({"fields": {"phone": {"direction": "sideways"}}}),
    ] {
        let r = http.put(&url).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
    }
    let r = http
        .put(&url)
        .json(&json!({"fields": {"phone": {"direction": "app_to_crms"}, "job_title": {"direction": "off"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(stored["fields"]["phone"]["direction"], "app_to_crms");
    assert_eq!(stored["fields"]["job_title"]["direction"], "off");

    // The phone goes out; the job title, off, does not.
    let id = common::create_contact(
        &http,
        &p.url,
        json!({"email": "rule@example.com", "first_name": "Rue", "phone": "+1 555 0101", "job_title": "Chief"}),
    )
    .await;
    common::crm_status_becomes(&http, &p.url, &id, "hubspot", "synced", 15).await;
    p.settled().await;
    let hs = hubspot_contact(&http, &p.sim, "rule@example.com")
        .await
        .unwrap();
    assert_eq!(hs["properties"]["phone"], "+1 555 0101");
    assert!(
        hs["properties"]["jobtitle"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "an off field is not sent: {hs}"
    );
    let hs_id = hs["id"].as_str().unwrap().to_string();

    // A HubSpot user's edit of the app-owned phone (and of the first name, two-way) comes in
    // for the first name only.
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"phone": "+1 555 0199", "firstname": "Ruth"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    eventually(15, "the first name in the app", || {
        let (http, url) = (http.clone(), format!("{}/contacts/{id}", p.url));
        async move { (get_json(&http, url).await["first_name"] == "Ruth").then_some(()) }
    })
    .await;
    p.settled().await;
    let contact = get_json(&http, format!("{}/contacts/{id}", p.url)).await;
    assert_eq!(
        contact["phone"], "+1 555 0101",
        "the app owns the phone: {contact}"
    );
    assert_eq!(contact["job_title"], "Chief");
    let hs = hubspot_contact(&http, &p.sim, "rule@example.com")
        .await
        .unwrap();
    assert_eq!(
        hs["properties"]["phone"], "+1 555 0199",
        "the CRM user's edit stays in HubSpot"
    );

    // The app's own change of the phone goes out.
    let r = http
        .put(format!("{}/contacts/{id}", p.url))
        .json(&json!({"email": "rule@example.com", "first_name": "Ruth", "phone": "+1 555 0102", "job_title": "Chief"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(15, "the app's phone in HubSpot", || {
        let http = http.clone();
        let sim = p.sim.clone();
        async move {
            let hs = hubspot_contact(&http, &sim, "rule@example.com").await?;
            (hs["properties"]["phone"] == "+1 555 0102").then_some(())
        }
    })
    .await;
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

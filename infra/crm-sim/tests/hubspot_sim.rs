//! Drives the HubSpot simulator over HTTP, the way a sync engine would.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use base64::Engine;
use crm_sim::{SimConfig, SimServer, hubspot::HubSpotConfig};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TOKEN: &str = "sim-hubspot-token";

async fn start(config: HubSpotConfig) -> SimServer {
    crm_sim::start(
        SimConfig {
            hubspot: config,
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

struct Resp {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

struct Api {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn new(server: &SimServer) -> Self {
        Self {
            base: server.base_url(),
            client: reqwest::Client::new(),
            token: Some(TOKEN.into()),
        }
    }

    fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            base: self.base.clone(),
            client: self.client.clone(),
            token: token.map(String::from),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None).await
    }

    async fn create(&self, props: Value) -> Resp {
        self.post("/crm/v3/objects/contacts", json!({ "properties": props }))
            .await
    }
}

fn no_limits() -> HubSpotConfig {
    HubSpotConfig {
        burst_limit: None,
        daily_limit: None,
        search_per_second: 0,
        ..Default::default()
    }
}

// ---- contacts ------------------------------------------------------------------------------

#[tokio::test]
async fn contact_crud_roundtrip() {
    let server = start(HubSpotConfig::default()).await;
    let api = Api::new(&server);

    let created = api
        .create(json!({"email": "Jane@Example.com", "firstname": "Jane"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(created.body["properties"]["email"], "jane@example.com");
    assert_eq!(created.body["properties"]["hs_object_id"], id.as_str());
    assert_eq!(created.body["archived"], false);
    let created_at = created.body["createdAt"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "{created_at}"
    );

    let got = api.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    let props = got.body["properties"].as_object().unwrap();
    for p in [
        "email",
        "firstname",
        "lastname",
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
    ] {
        assert!(props.contains_key(p), "default property {p} missing");
    }
    assert_eq!(props["lastname"], Value::Null);

    // Only requested properties (plus the always-returned system ones); by email too.
    let by_email = api
        .get("/crm/v3/objects/contacts/jane%40example.com?idProperty=email&properties=firstname")
        .await;
    assert_eq!(by_email.status, StatusCode::OK);
    assert_eq!(by_email.body["id"], id.as_str());
    assert_eq!(by_email.body["properties"]["firstname"], "Jane");
    assert!(by_email.body["properties"].get("email").is_none());

    let before = got.body["properties"]["lastmodifieddate"].clone();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let patched = api
        .patch(
            &format!("/crm/v3/objects/contacts/{id}"),
            json!({"properties": {"lastname": "Doe", "firstname": ""}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["properties"]["lastname"], "Doe");
    let got = api
        .get(&format!(
            "/crm/v3/objects/contacts/{id}?properties=firstname,lastname"
        ))
        .await;
    assert_eq!(got.body["properties"]["lastname"], "Doe");
    assert_eq!(got.body["properties"]["firstname"], Value::Null);
    assert_ne!(got.body["properties"]["lastmodifieddate"], before);
    assert_eq!(
        got.body["updatedAt"],
        got.body["properties"]["lastmodifieddate"]
    );

    let by_email = api
        .patch(
            "/crm/v3/objects/contacts/JANE%40example.com?idProperty=email",
            json!({"properties": {"jobtitle": "CTO"}}),
        )
        .await;
    assert_eq!(by_email.status, StatusCode::OK);
    assert_eq!(by_email.body["id"], id.as_str());
    assert_eq!(
        server.hubspot.contact(&id).unwrap().prop("jobtitle"),
        Some("CTO")
    );

    let deleted = api.delete(&format!("/crm/v3/objects/contacts/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = api.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["category"], "OBJECT_NOT_FOUND");
    let archived = api
        .get(&format!("/crm/v3/objects/contacts/{id}?archived=true"))
        .await;
    assert_eq!(archived.status, StatusCode::OK);
    assert_eq!(archived.body["archived"], true);
    assert!(archived.body["archivedAt"].is_string());
    // Patching an archived contact is a 404; the email is free again.
    let patch_archived = api
        .patch(
            &format!("/crm/v3/objects/contacts/{id}"),
            json!({"properties": {"lastname": "X"}}),
        )
        .await;
    assert_eq!(patch_archived.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.create(json!({"email": "jane@example.com"}))
            .await
            .status,
        StatusCode::CREATED
    );
    let unknown = api.get("/crm/v3/objects/contacts/999999999").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body["correlationId"].is_string());
}

#[tokio::test]
async fn list_pages_with_after_cursor() {
    let server = start(no_limits()).await;
    server
        .hubspot
        .seed_contacts((0..25).map(|i| [("email", format!("p{i}@x.com"))]))
        .unwrap();
    let api = Api::new(&server);
    let mut seen = Vec::new();
    let mut path = "/crm/v3/objects/contacts?limit=10&properties=email".to_string();
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK);
        for r in page.body["results"].as_array().unwrap() {
            seen.push(r["properties"]["email"].as_str().unwrap().to_string());
        }
        match page.body["paging"]["next"]["after"].as_str() {
            Some(after) => {
                path = format!("/crm/v3/objects/contacts?limit=10&properties=email&after={after}")
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen[24], "p24@x.com");
    let too_big = api.get("/crm/v3/objects/contacts?limit=101").await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn duplicate_email_conflict_names_existing_id() {
    let server = start(HubSpotConfig::default()).await;
    let api = Api::new(&server);
    let first = api.create(json!({"email": "dup@example.com"})).await;
    let id = first.body["id"].as_str().unwrap();
    let again = api.create(json!({"email": "DUP@example.com"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["status"], "error");
    assert_eq!(again.body["category"], "CONFLICT");
    assert_eq!(
        again.body["message"],
        format!("Contact already exists. Existing ID: {id}")
    );
    // Changing another contact's email to a taken one is a 409 too.
    let other = api.create(json!({"email": "other@example.com"})).await;
    let other_id = other.body["id"].as_str().unwrap();
    let taken = api
        .patch(
            &format!("/crm/v3/objects/contacts/{other_id}"),
            json!({"properties": {"email": "dup@example.com"}}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(
        taken.body["message"],
        format!("Contact already exists. Existing ID: {id}")
    );
    let invalid = api.create(json!({"email": "not an email"})).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(invalid.body["errors"][0]["code"], "INVALID_EMAIL");
}

#[tokio::test]
async fn unknown_property_is_rejected_until_created() {
    let server = start(HubSpotConfig::default()).await;
    let api = Api::new(&server);
    let c = api.create(json!({"email": "p@example.com"})).await;
    let id = c.body["id"].as_str().unwrap().to_string();
    let path = format!("/crm/v3/objects/contacts/{id}");

    let bad = api
        .patch(&path, json!({"properties": {"pronouns": "they/them"}}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["category"], "VALIDATION_ERROR");
    let msg = bad.body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Property values were not valid: [")
            && msg.contains("PROPERTY_DOESNT_EXIST"),
        "{msg}"
    );
    assert_eq!(bad.body["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(
        bad.body["errors"][0]["context"]["propertyName"][0],
        "pronouns"
    );
    assert!(!server.hubspot.property_exists("pronouns"));
    assert_eq!(
        api.get("/crm/v3/properties/contacts/pronouns").await.status,
        StatusCode::NOT_FOUND
    );

    let read_only = api
        .patch(&path, json!({"properties": {"lastmodifieddate": "0"}}))
        .await;
    assert_eq!(read_only.status, StatusCode::BAD_REQUEST);
    assert_eq!(read_only.body["errors"][0]["code"], "READ_ONLY_VALUE");

    let incomplete = api
        .post(
            "/crm/v3/properties/contacts",
            json!({"name": "pronouns", "label": "Pronouns", "type": "string"}),
        )
        .await;
    assert_eq!(incomplete.status, StatusCode::BAD_REQUEST);
    let bad_enum = api
        .post(
            "/crm/v3/properties/contacts",
            json!({"name": "pronouns", "label": "Pronouns", "type": "text",
                   "fieldType": "text", "groupName": "contactinformation"}),
        )
        .await;
    assert_eq!(bad_enum.status, StatusCode::BAD_REQUEST);

    let definition = json!({"name": "pronouns", "label": "Pronouns", "type": "string",
                            "fieldType": "text", "groupName": "contactinformation"});
    let created = api
        .post("/crm/v3/properties/contacts", definition.clone())
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.header("location"),
        Some("/crm/v3/properties/contacts/pronouns")
    );
    assert_eq!(created.body["name"], "pronouns");
    assert_eq!(created.body["type"], "string");
    assert!(server.hubspot.property_exists("pronouns"));

    let again = api.post("/crm/v3/properties/contacts", definition).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["category"], "OBJECT_ALREADY_EXISTS");
    assert!(again.body["message"].as_str().unwrap().contains("pronouns"));

    let fetched = api.get("/crm/v3/properties/contacts/pronouns").await;
    assert_eq!(fetched.status, StatusCode::OK);
    let listed = api.get("/crm/v3/properties/contacts").await;
    assert!(
        listed.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "pronouns")
    );

    let ok = api
        .patch(&path, json!({"properties": {"pronouns": "they/them"}}))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["properties"]["pronouns"], "they/them");
}

// ---- batch ---------------------------------------------------------------------------------

#[tokio::test]
async fn batch_over_100_inputs_is_rejected() {
    let server = start(HubSpotConfig::default()).await;
    let api = Api::new(&server);
    let inputs: Vec<Value> = (0..101)
        .map(|i| json!({"properties": {"email": format!("b{i}@example.com")}}))
        .collect();
    let resp = api
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.body["category"], "VALIDATION_ERROR");
    assert!(server.hubspot.contacts().is_empty());

    let ok = api
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({ "inputs": &inputs[..100] }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(ok.body["status"], "COMPLETE");
    assert_eq!(ok.body["results"].as_array().unwrap().len(), 100);
    assert!(ok.body["startedAt"].is_string() && ok.body["completedAt"].is_string());
    let stats = server.hubspot.stats();
    assert_eq!(stats.batch_calls, 1);
    assert_eq!(stats.write_calls, 1);
    assert_eq!(stats.records_written, 100);

    let reads: Vec<Value> = (0..101).map(|i| json!({"id": i.to_string()})).collect();
    let read = api
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"properties": [], "propertiesWithHistory": [], "inputs": reads}),
        )
        .await;
    assert_eq!(read.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn batch_upsert_reports_new_flags() {
    let server = start(HubSpotConfig::default()).await;
    let api = Api::new(&server);
    let existing = server
        .hubspot
        .ui_create([("email", "luke@lukesdiner.com"), ("firstname", "Luke")])
        .unwrap();
    let resp = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [
                {"id": "LUKE@lukesdiner.com", "idProperty": "email", "properties": {"phone": "5555555555"}},
                {"id": "new@lukesdiner.com", "idProperty": "email", "properties": {"firstname": "New"}},
            ]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let results = resp.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let updated = results
        .iter()
        .find(|r| r["id"] == existing.as_str())
        .unwrap();
    assert_eq!(updated["new"], false);
    assert_eq!(updated["properties"]["phone"], "5555555555");
    let created = results
        .iter()
        .find(|r| r["id"] != existing.as_str())
        .unwrap();
    assert_eq!(created["new"], true);
    assert_eq!(created["properties"]["email"], "new@lukesdiner.com");

    let luke = server.hubspot.contact(&existing).unwrap();
    assert_eq!(luke.prop("firstname"), Some("Luke"));
    assert_eq!(luke.prop("phone"), Some("5555555555"));
    assert!(server.hubspot.find_by_email("NEW@lukesdiner.com").is_some());

    let no_key = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "x@y.com", "properties": {}}]}),
        )
        .await;
    assert_eq!(no_key.status, StatusCode::BAD_REQUEST);
    let not_unique = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "Ann", "idProperty": "firstname", "properties": {}}]}),
        )
        .await;
    assert_eq!(not_unique.status, StatusCode::BAD_REQUEST);
    let dup = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [
                {"id": "a@y.com", "idProperty": "email", "properties": {}},
                {"id": "A@y.com", "idProperty": "email", "properties": {}}]}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST);

    // A custom unique property works as the upsert key.
    let prop = api
        .post(
            "/crm/v3/properties/contacts",
            json!({"name": "app_contact_id", "label": "App contact ID", "type": "string",
                   "fieldType": "text", "groupName": "contactinformation", "hasUniqueValue": true}),
        )
        .await;
    assert_eq!(prop.status, StatusCode::CREATED);
    let first = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "app-1", "idProperty": "app_contact_id",
                               "properties": {"email": "app1@y.com"}}]}),
        )
        .await;
    assert_eq!(first.body["results"][0]["new"], true);
    let second = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "app-1", "idProperty": "app_contact_id",
                               "properties": {"firstname": "Appy"}}]}),
        )
        .await;
    assert_eq!(second.body["results"][0]["new"], false);
    assert_eq!(
        second.body["results"][0]["id"],
        first.body["results"][0]["id"]
    );
}

#[tokio::test]
async fn batch_partial_failures_are_207() {
    let server = start(HubSpotConfig::default()).await;
    let api = Api::new(&server);
    let a = server.hubspot.ui_create([("email", "a@x.com")]).unwrap();

    // batch/read: properties and propertiesWithHistory are required.
    let missing_fields = api
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"inputs": [{"id": a}]}),
        )
        .await;
    assert_eq!(missing_fields.status, StatusCode::BAD_REQUEST);
    assert!(
        missing_fields.body["message"]
            .as_str()
            .unwrap()
            .contains("propertiesWithHistory")
    );

    let read = api
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"properties": ["email"], "propertiesWithHistory": ["email"],
                   "inputs": [{"id": a}, {"id": "424242"}]}),
        )
        .await;
    assert_eq!(read.status, StatusCode::MULTI_STATUS);
    assert_eq!(read.body["numErrors"], 1);
    assert_eq!(read.body["results"][0]["id"], a.as_str());
    assert_eq!(read.body["results"][0]["properties"]["email"], "a@x.com");
    assert_eq!(
        read.body["results"][0]["propertiesWithHistory"]["email"][0]["value"],
        "a@x.com"
    );
    assert_eq!(read.body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(read.body["errors"][0]["context"]["ids"], json!(["424242"]));

    let by_email = api
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"properties": [], "propertiesWithHistory": [], "idProperty": "email",
                   "inputs": [{"id": "A@x.com"}]}),
        )
        .await;
    assert_eq!(by_email.status, StatusCode::OK);
    assert_eq!(by_email.body["results"][0]["id"], a.as_str());

    // batch/create with objectWriteTraceIds: per-input failures.
    let create = api
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({"inputs": [
                {"objectWriteTraceId": "row-1", "properties": {"email": "fresh@x.com"}},
                {"objectWriteTraceId": "row-2", "properties": {"email": "a@x.com"}},
            ]}),
        )
        .await;
    assert_eq!(create.status, StatusCode::MULTI_STATUS);
    assert_eq!(create.body["numErrors"], 1);
    assert_eq!(create.body["results"].as_array().unwrap().len(), 1);
    assert_eq!(create.body["errors"][0]["category"], "CONFLICT");
    assert_eq!(
        create.body["errors"][0]["context"]["objectWriteTraceId"],
        json!(["row-2"])
    );
    assert_eq!(
        create.body["errors"][0]["message"],
        format!("Contact already exists. Existing ID: {a}")
    );
    // Without trace ids the whole batch fails and nothing is written.
    let before = server.hubspot.contacts().len();
    let atomic = api
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({"inputs": [
                {"properties": {"email": "fresh2@x.com"}},
                {"properties": {"email": "a@x.com"}},
            ]}),
        )
        .await;
    assert_eq!(atomic.status, StatusCode::CONFLICT);
    assert_eq!(server.hubspot.contacts().len(), before);

    // batch/update: an unknown id fails alone.
    let update = api
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [
                {"id": a, "properties": {"firstname": "Ann"}},
                {"id": "999999", "properties": {"firstname": "Nobody"}},
            ]}),
        )
        .await;
    assert_eq!(update.status, StatusCode::MULTI_STATUS);
    assert_eq!(update.body["numErrors"], 1);
    assert_eq!(
        update.body["errors"][0]["context"]["ids"],
        json!(["999999"])
    );
    assert_eq!(
        server.hubspot.contact(&a).unwrap().prop("firstname"),
        Some("Ann")
    );
    // ... but an unknown property fails the whole batch.
    let invalid = api
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [
                {"id": a, "properties": {"firstname": "Changed"}},
                {"id": a, "properties": {"nope": "x"}},
            ]}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        server.hubspot.contact(&a).unwrap().prop("firstname"),
        Some("Ann")
    );

    let archive = api
        .post(
            "/crm/v3/objects/contacts/batch/archive",
            json!({"inputs": [{"id": a}, {"id": "31337"}]}),
        )
        .await;
    assert_eq!(archive.status, StatusCode::NO_CONTENT);
    assert!(server.hubspot.contact(&a).unwrap().archived);
}

// ---- search --------------------------------------------------------------------------------

#[tokio::test]
async fn search_filters_sorts_and_never_returns_archived() {
    let server = start(no_limits()).await;
    let api = Api::new(&server);
    let ids = server
        .hubspot
        .seed_contacts([
            vec![("email", "ann@x.com"), ("firstname", "Ann")],
            vec![("email", "bob@x.com"), ("firstname", "Bob")],
            vec![("email", "cy@y.com")],
        ])
        .unwrap();
    server.hubspot.ui_delete(&ids[1]).unwrap();

    let all = api.post("/crm/v3/objects/contacts/search", json!({})).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["total"], 2);
    assert!(all.header("x-hubspot-ratelimit-max").is_none());
    assert!(all.header("x-hubspot-ratelimit-remaining").is_none());

    let eq = api
        .post(
            "/crm/v3/objects/contacts/search",
            json!({"filterGroups": [{"filters": [
                {"propertyName": "email", "operator": "EQ", "value": "ANN@x.com"}]}],
                "properties": ["firstname"]}),
        )
        .await;
    assert_eq!(eq.body["total"], 1);
    assert_eq!(eq.body["results"][0]["id"], ids[0].as_str());
    assert_eq!(eq.body["results"][0]["properties"]["firstname"], "Ann");
    assert!(
        eq.body["results"][0]["properties"]
            .get("lastmodifieddate")
            .is_some()
    );

    let sorted = api
        .post(
            "/crm/v3/objects/contacts/search",
            json!({"filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}],
                "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}]}),
        )
        .await;
    let order: Vec<&str> = sorted.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec![ids[2].as_str(), ids[0].as_str()]);

    let none = api
        .post(
            "/crm/v3/objects/contacts/search",
            json!({"filterGroups": [{"filters": [
                {"propertyName": "email", "operator": "EQ", "value": "bob@x.com"}]}]}),
        )
        .await;
    assert_eq!(none.body["total"], 0);

    let groups: Vec<Value> = (0..6)
        .map(|_| json!({"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}))
        .collect();
    let too_many = api
        .post(
            "/crm/v3/objects/contacts/search",
            json!({ "filterGroups": groups }),
        )
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many.body["category"], "VALIDATION_ERROR");
    let big_limit = api
        .post("/crm/v3/objects/contacts/search", json!({"limit": 201}))
        .await;
    assert_eq!(big_limit.status, StatusCode::BAD_REQUEST);
}

/// Search lags writes, creates and updates alike: a new record is missing and an updated one
/// shows its earlier values (and matches by them) until the index catches up; reads by id see
/// the write at once.
#[tokio::test]
async fn search_lags_creates_and_updates() {
    let server = start(HubSpotConfig {
        search_index_lag_ms: 800,
        ..no_limits()
    })
    .await;
    let api = Api::new(&server);
    let by_name = |name: &str| {
        json!({"filterGroups": [{"filters": [
            {"propertyName": "firstname", "operator": "EQ", "value": name}]}],
            "properties": ["firstname"]})
    };
    let created = api
        .create(json!({"email": "lag@x.com", "firstname": "Ann"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_string();
    let now = api
        .post("/crm/v3/objects/contacts/search", by_name("Ann"))
        .await;
    assert_eq!(now.body["total"], 0, "a new record is not indexed yet");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = api
        .post("/crm/v3/objects/contacts/search", by_name("Ann"))
        .await;
    assert_eq!(later.body["total"], 1);

    let path = format!("/crm/v3/objects/contacts/{id}");
    let updated = api
        .patch(&path, json!({"properties": {"firstname": "Bea"}}))
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(api.get(&path).await.body["properties"]["firstname"], "Bea");
    let old = api
        .post("/crm/v3/objects/contacts/search", by_name("Ann"))
        .await;
    assert_eq!(old.body["total"], 1, "the index still holds the old value");
    assert_eq!(old.body["results"][0]["properties"]["firstname"], "Ann");
    let new = api
        .post("/crm/v3/objects/contacts/search", by_name("Bea"))
        .await;
    assert_eq!(new.body["total"], 0);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let caught_up = api
        .post("/crm/v3/objects/contacts/search", by_name("Bea"))
        .await;
    assert_eq!(caught_up.body["total"], 1);
    assert_eq!(
        caught_up.body["results"][0]["properties"]["firstname"],
        "Bea"
    );
}

#[tokio::test]
async fn search_cannot_page_past_ten_thousand() {
    let server = start(no_limits()).await;
    let api = Api::new(&server);
    let ids = server
        .hubspot
        .seed_contacts((0..10_001).map(|i| [("email", format!("c{i}@bulk.example"))]))
        .unwrap();
    assert_eq!(ids.len(), 10_001);

    let body = |after: &str| {
        json!({"filterGroups": [{"filters": [
                {"propertyName": "hs_object_id", "operator": "GTE", "value": "0"}]}],
               "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
               "properties": ["email"], "limit": 200, "after": after})
    };
    let last_page = api
        .post("/crm/v3/objects/contacts/search", body("9800"))
        .await;
    assert_eq!(last_page.status, StatusCode::OK);
    assert_eq!(last_page.body["total"], 10_001);
    assert_eq!(last_page.body["results"].as_array().unwrap().len(), 200);
    assert_eq!(last_page.body["results"][199]["id"], ids[9_999].as_str());
    // HubSpot still offers the next page, and asking for it fails.
    assert_eq!(last_page.body["paging"]["next"]["after"], "10000");
    let beyond = api
        .post("/crm/v3/objects/contacts/search", body("10000"))
        .await;
    assert_eq!(beyond.status, StatusCode::BAD_REQUEST);
    assert_eq!(beyond.body["category"], "VALIDATION_ERROR");

    // The remedy works: restart with an id window.
    let windowed = api
        .post(
            "/crm/v3/objects/contacts/search",
            json!({"filterGroups": [{"filters": [
                {"propertyName": "hs_object_id", "operator": "GT", "value": ids[9_999]}]}],
               "limit": 200}),
        )
        .await;
    assert_eq!(windowed.status, StatusCode::OK);
    assert_eq!(windowed.body["total"], 1);
    assert_eq!(windowed.body["results"][0]["id"], ids[10_000].as_str());
}

#[tokio::test]
async fn search_has_its_own_per_second_limit() {
    let server = start(HubSpotConfig {
        search_per_second: 2,
        burst_limit: Some(100),
        ..Default::default()
    })
    .await;
    let api = Api::new(&server);
    for _ in 0..2 {
        let ok = api.post("/crm/v3/objects/contacts/search", json!({})).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    let limited = api.post("/crm/v3/objects/contacts/search", json!({})).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["policyName"], "SECONDLY");
    assert_eq!(limited.body["errorType"], "RATE_LIMIT");
    assert!(limited.header("x-hubspot-ratelimit-remaining").is_none());
    // Search did not use the 10-second window.
    let list = api.get("/crm/v3/objects/contacts").await;
    assert_eq!(list.header("x-hubspot-ratelimit-remaining"), Some("99"));
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(
        api.post("/crm/v3/objects/contacts/search", json!({}))
            .await
            .status,
        StatusCode::OK
    );
}

// ---- rate limits, auth, outage -------------------------------------------------------------

#[tokio::test]
async fn burst_limit_answers_429_with_headers() {
    let server = start(HubSpotConfig {
        burst_limit: Some(5),
        daily_limit: Some(1_000),
        ..Default::default()
    })
    .await;
    let api = Api::new(&server);
    for i in 0..5u32 {
        let r = api.get("/crm/v3/objects/contacts").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header("x-hubspot-ratelimit-interval-milliseconds"),
            Some("10000")
        );
        assert_eq!(r.header("x-hubspot-ratelimit-max"), Some("5"));
        let remaining = (4 - i).to_string();
        assert_eq!(
            r.header("x-hubspot-ratelimit-remaining"),
            Some(remaining.as_str())
        );
        assert_eq!(r.header("x-hubspot-ratelimit-daily"), Some("1000"));
        let daily_remaining = (999 - i).to_string();
        assert_eq!(
            r.header("x-hubspot-ratelimit-daily-remaining"),
            Some(daily_remaining.as_str())
        );
    }
    let limited = api.get("/crm/v3/objects/contacts").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["status"], "error");
    assert_eq!(limited.body["errorType"], "RATE_LIMIT");
    assert_eq!(limited.body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(
        limited.body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert!(limited.body["correlationId"].is_string());
    assert_eq!(limited.header("x-hubspot-ratelimit-remaining"), Some("0"));
    assert_eq!(server.hubspot.stats().rate_limited, 1);

    // Lift the burst limit through the control endpoint, then hit the daily one.
    let client = reqwest::Client::new();
    let r = client
        .put(format!(
            "{}/_sim/hubspot/config/rate-limit",
            server.base_url()
        ))
        .json(&json!({"burst_limit": null, "daily_limit": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sixth = api.get("/crm/v3/objects/contacts").await;
    assert_eq!(sixth.status, StatusCode::OK);
    assert!(sixth.header("x-hubspot-ratelimit-max").is_none());
    assert_eq!(
        sixth.header("x-hubspot-ratelimit-daily-remaining"),
        Some("0")
    );
    let daily = api.get("/crm/v3/objects/contacts").await;
    assert_eq!(daily.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(daily.body["policyName"], "DAILY");
    assert_eq!(daily.body["message"], "You have reached your daily limit.");
}

#[tokio::test]
async fn auth_is_required_and_oauth_tokens_work() {
    let server = start(HubSpotConfig {
        burst_limit: Some(110),
        ..Default::default()
    })
    .await;
    let api = Api::new(&server);
    let anonymous = api.with_token(None).get("/crm/v3/objects/contacts").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["category"], "INVALID_AUTHENTICATION");
    assert!(
        anonymous.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Authentication credentials not found")
    );
    let wrong = api
        .with_token(Some("pat-na1-wrong"))
        .post("/crm/v3/objects/contacts/search", json!({}))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let client = reqwest::Client::new();
    let form = |refresh: &str| {
        vec![
            ("grant_type", "refresh_token".to_string()),
            ("client_id", "sim-hubspot-client-id".to_string()),
            ("client_secret", "sim-hubspot-secret".to_string()),
            ("refresh_token", refresh.to_string()),
        ]
    };
    let mut tokens = Vec::new();
    for version in ["v1", "v3"] {
        let resp = client
            .post(format!("{}/oauth/{version}/token", server.base_url()))
            .form(&form("sim-hubspot-refresh-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 1800);
        assert_eq!(body["refresh_token"], "sim-hubspot-refresh-token");
        tokens.push(body["access_token"].as_str().unwrap().to_string());
    }
    assert_eq!(server.hubspot.stats().refreshes, 2);

    let oauth = api.with_token(Some(&tokens[1]));
    let listed = oauth.get("/crm/v3/objects/contacts").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.header("x-hubspot-ratelimit-max"), Some("110"));
    assert!(listed.header("x-hubspot-ratelimit-daily").is_none());

    let bad = client
        .post(format!("{}/oauth/v1/token", server.base_url()))
        .form(&form("stolen"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["status"], "BAD_REFRESH_TOKEN");
    let v3_query = client
        .post(format!(
            "{}/oauth/v3/token?grant_type=refresh_token",
            server.base_url()
        ))
        .form(&form("sim-hubspot-refresh-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(v3_query.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.hubspot.stats().refreshes, 2);

    server.hubspot.expire_oauth_tokens();
    let expired = oauth.get("/crm/v3/objects/contacts").await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.body["category"], "EXPIRED_AUTHENTICATION");
    // The static token is unaffected.
    assert_eq!(
        api.get("/crm/v3/objects/contacts").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn outage_answers_503_until_lifted() {
    let server = start(HubSpotConfig::default()).await;
    let api = Api::new(&server);
    let client = reqwest::Client::new();
    let switch = |down: bool| {
        client
            .post(format!("{}/_sim/hubspot/outage", server.base_url()))
            .json(&json!({ "down": down }))
            .send()
    };
    assert_eq!(switch(true).await.unwrap().status(), StatusCode::OK);
    let down = api.get("/crm/v3/objects/contacts").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.body["status"], "error");
    assert!(down.body["correlationId"].is_string());
    let oauth = client
        .post(format!("{}/oauth/v1/token", server.base_url()))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Control endpoints keep working.
    let listing = client
        .get(format!("{}/_sim/hubspot/contacts", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::OK);
    switch(false).await.unwrap();
    assert_eq!(
        api.get("/crm/v3/objects/contacts").await.status,
        StatusCode::OK
    );
    let stats = server.hubspot.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.by_endpoint["GET /crm/v3/objects/contacts"], 2);
}

// ---- webhooks ------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (String, Receiver) {
        let r = Receiver::default();
        r.fail_first.store(fail_first, Ordering::SeqCst);
        let app = Router::new()
            .route("/hubspot/webhook", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hubspot/webhook"), r)
    }

    /// Waits until at least `n` requests arrived.
    async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Bytes)> {
        for _ in 0..500 {
            {
                let hits = self.hits.lock().unwrap();
                if hits.len() >= n {
                    return hits.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} webhook requests, got {}",
            self.hits.lock().unwrap().len()
        );
    }

    fn events(&self) -> Vec<Value> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| serde_json::from_slice::<Vec<Value>>(b).unwrap())
            .collect()
    }
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    r.hits.lock().unwrap().push((headers, body));
    let failing = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    } else {
        axum::http::StatusCode::NO_CONTENT
    }
}

fn webhook_config(url: &str) -> HubSpotConfig {
    HubSpotConfig {
        webhook_url: Some(url.to_string()),
        client_secret: "test-client-secret".into(),
        app_id: 9_318_066,
        webhook_batch_window_ms: 50,
        webhook_retry_delays: vec![Duration::from_millis(100)],
        ..Default::default()
    }
}

/// The receiver's own check of HubSpot's signatures, written from the reference.
fn verify_signatures(headers: &HeaderMap, body: &[u8], secret: &str, url: &str) {
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("x-hubspot-signature-version"), "v1");
    let mut v1 = Sha256::new();
    v1.update(secret.as_bytes());
    v1.update(body);
    assert_eq!(h("x-hubspot-signature"), hex::encode(v1.finalize()));

    let ts = h("x-hubspot-request-timestamp");
    let age = chrono::Utc::now().timestamp_millis() - ts.parse::<i64>().unwrap();
    assert!((0..300_000).contains(&age), "timestamp age {age} ms");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("POST{url}").as_bytes());
    mac.update(body);
    mac.update(ts.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(h("x-hubspot-signature-v3"), expected);
}

#[tokio::test]
async fn webhooks_are_batched_and_signed() {
    let (url, receiver) = Receiver::start(0).await;
    let server = start(webhook_config(&url)).await;
    let api = Api::new(&server);

    let created = api
        .create(json!({"email": "hook@example.com", "firstname": "Hook", "company": "Acme"}))
        .await;
    let id: u64 = created.body["id"].as_str().unwrap().parse().unwrap();
    let hits = receiver.wait_for(1).await;
    assert!(
        server
            .hubspot
            .wait_for_webhooks(Duration::from_secs(5))
            .await
    );
    assert_eq!(hits.len(), 1, "one API call's events arrive in one POST");
    let (headers, body) = &hits[0];
    verify_signatures(headers, body, "test-client-secret", &url);

    let events: Vec<Value> = serde_json::from_slice(body).unwrap();
    // creation + propertyChange for the subscribed email and firstname (company is not subscribed).
    assert_eq!(events.len(), 3, "{events:?}");
    let creation = events
        .iter()
        .find(|e| e["subscriptionType"] == "contact.creation")
        .unwrap();
    assert_eq!(creation["objectId"], json!(id));
    assert_eq!(creation["portalId"], 62515);
    assert_eq!(creation["appId"], 9_318_066);
    assert_eq!(creation["attemptNumber"], 0);
    assert_eq!(creation["changeSource"], "INTEGRATION");
    assert_eq!(creation["sourceId"], "9318066");
    assert!(creation["occurredAt"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(creation["eventId"].is_u64() && creation["subscriptionId"].is_u64());
    let mut changed: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["subscriptionType"] == "contact.propertyChange")
        .map(|e| {
            (
                e["propertyName"].as_str().unwrap().to_string(),
                e["propertyValue"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        vec![
            ("email".to_string(), "hook@example.com".to_string()),
            ("firstname".to_string(), "Hook".to_string())
        ]
    );

    // A UI edit is attributed to a user; a no-op API write sends nothing.
    server
        .hubspot
        .ui_update(&id.to_string(), [("lastname", "Smith")])
        .unwrap();
    let _ = receiver.wait_for(2).await;
    api.patch(
        &format!("/crm/v3/objects/contacts/{id}"),
        json!({"properties": {"lastname": "Smith"}}),
    )
    .await;
    api.delete(&format!("/crm/v3/objects/contacts/{id}")).await;
    let hits = receiver.wait_for(3).await;
    assert!(
        server
            .hubspot
            .wait_for_webhooks(Duration::from_secs(5))
            .await
    );
    for (h, b) in &hits {
        verify_signatures(h, b, "test-client-secret", &url);
    }
    let events = receiver.events();
    let ui = events
        .iter()
        .find(|e| e["propertyName"] == "lastname")
        .unwrap();
    assert_eq!(ui["changeSource"], "CRM_UI");
    assert_eq!(ui["sourceId"], "userId:7765123");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["propertyName"] == "lastname")
            .count(),
        1
    );
    let deletion = events
        .iter()
        .find(|e| e["subscriptionType"] == "contact.deletion")
        .unwrap();
    assert_eq!(deletion["objectId"], json!(id));
    assert_eq!(deletion["changeSource"], "INTEGRATION");
    let stats = server.hubspot.stats();
    assert_eq!(stats.webhook_deliveries, 3);
    assert_eq!(stats.webhook_failures, 0);
}

#[tokio::test]
async fn webhooks_are_retried_after_a_500() {
    let (url, receiver) = Receiver::start(1).await;
    let server = start(webhook_config(&url)).await;
    let id = server
        .hubspot
        .ui_create([("email", "retry@example.com")])
        .unwrap();
    let hits = receiver.wait_for(2).await;
    assert!(
        server
            .hubspot
            .wait_for_webhooks(Duration::from_secs(5))
            .await
    );
    let first: Vec<Value> = serde_json::from_slice(&hits[0].1).unwrap();
    let second: Vec<Value> = serde_json::from_slice(&hits[1].1).unwrap();
    assert_eq!(first.len(), second.len());
    assert!(first.iter().all(|e| e["attemptNumber"] == 0));
    assert!(second.iter().all(|e| e["attemptNumber"] == 1));
    assert_eq!(first[0]["eventId"], second[0]["eventId"]);
    assert_eq!(second[0]["objectId"], json!(id.parse::<u64>().unwrap()));
    // The retry is signed over its own body.
    verify_signatures(&hits[1].0, &hits[1].1, "test-client-secret", &url);
    let stats = server.hubspot.stats();
    assert_eq!(stats.webhook_failures, 1);
    assert_eq!(stats.webhook_deliveries, 1);
    assert_eq!(stats.webhook_events_dropped, 0);
}

#[tokio::test]
async fn webhooks_give_up_after_max_attempts_and_can_be_paused() {
    let (url, receiver) = Receiver::start(usize::MAX).await;
    let server = start(HubSpotConfig {
        webhook_max_attempts: 3,
        webhook_retry_delays: vec![Duration::from_millis(20)],
        ..webhook_config(&url)
    })
    .await;
    server.hubspot.ui_create([("jobtitle", "CTO")]).unwrap();
    let hits = receiver.wait_for(3).await;
    assert!(
        server
            .hubspot
            .wait_for_webhooks(Duration::from_secs(5))
            .await
    );
    // Nothing pending: no further attempt can come.
    assert_eq!(receiver.hits.lock().unwrap().len(), 3);
    let last: Vec<Value> = serde_json::from_slice(&hits[2].1).unwrap();
    assert_eq!(last[0]["attemptNumber"], 2);
    let stats = server.hubspot.stats();
    assert_eq!(stats.webhook_failures, 3);
    assert_eq!(stats.webhook_events_dropped, 2);

    // Paused: events are dropped, not queued.
    receiver.fail_first.store(0, Ordering::SeqCst);
    let client = reqwest::Client::new();
    let paused = client
        .post(format!("{}/_sim/hubspot/webhooks", server.base_url()))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    server
        .hubspot
        .ui_create([("email", "missed@example.com")])
        .unwrap();
    // Dropped at once, not queued: nothing is pending, so nothing can arrive.
    assert_eq!(server.hubspot.stats().webhook_events_pending, 0);
    assert_eq!(receiver.hits.lock().unwrap().len(), 3);
    assert_eq!(server.hubspot.stats().webhook_events_dropped, 4);
    server.hubspot.set_webhooks_enabled(true);
    server
        .hubspot
        .ui_create([("email", "seen@example.com")])
        .unwrap();
    let hits = receiver.wait_for(4).await;
    let events: Vec<Value> = serde_json::from_slice(&hits[3].1).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["propertyValue"] == "seen@example.com")
    );
    assert!(
        !events
            .iter()
            .any(|e| e["propertyValue"] == "missed@example.com")
    );
}

#[tokio::test]
async fn merge_mints_a_new_id_and_fires_merge_and_deletions() {
    let (url, receiver) = Receiver::start(0).await;
    let server = start(webhook_config(&url)).await;
    let api = Api::new(&server);
    let ids = server
        .hubspot
        .seed_contacts([
            vec![("email", "primary@x.com"), ("firstname", "Prim")],
            vec![
                ("email", "secondary@x.com"),
                ("firstname", "Sec"),
                ("phone", "+1 555"),
            ],
        ])
        .unwrap();
    let merged = api
        .post(
            "/crm/v3/objects/contacts/merge",
            json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
        )
        .await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    let new_id = merged.body["id"].as_str().unwrap().to_string();
    assert!(new_id != ids[0] && new_id != ids[1]);
    assert_eq!(merged.body["properties"]["firstname"], "Prim");
    assert_eq!(merged.body["properties"]["phone"], "+1 555");
    assert_eq!(merged.body["properties"]["email"], "primary@x.com");

    for old in &ids {
        let r = api.get(&format!("/crm/v3/objects/contacts/{old}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(
            server.hubspot.contact(old).unwrap().merged_into.as_deref(),
            Some(new_id.as_str())
        );
    }
    assert_eq!(
        server.hubspot.find_by_email("primary@x.com").unwrap().id,
        new_id
    );

    let _ = receiver.wait_for(1).await;
    assert!(
        server
            .hubspot
            .wait_for_webhooks(Duration::from_secs(5))
            .await
    );
    let events = receiver.events();
    let merge = events
        .iter()
        .find(|e| e["subscriptionType"] == "contact.merge")
        .unwrap();
    let as_num = |s: &str| json!(s.parse::<u64>().unwrap());
    assert_eq!(merge["primaryObjectId"], as_num(&ids[0]));
    assert_eq!(merge["mergedObjectIds"], json!([as_num(&ids[1])]));
    assert_eq!(merge["newObjectId"], as_num(&new_id));
    let mut deleted: Vec<Value> = events
        .iter()
        .filter(|e| e["subscriptionType"] == "contact.deletion")
        .map(|e| e["objectId"].clone())
        .collect();
    deleted.sort_by_key(|v| v.as_u64());
    assert_eq!(deleted, vec![as_num(&ids[0]), as_num(&ids[1])]);
    // No propertyChange events for fields moved by the merge.
    assert!(
        !events
            .iter()
            .any(|e| e["subscriptionType"] == "contact.propertyChange")
    );

    let self_merge = api
        .post(
            "/crm/v3/objects/contacts/merge",
            json!({"primaryObjectId": new_id, "objectIdToMerge": new_id}),
        )
        .await;
    assert_eq!(self_merge.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn control_endpoints_act_like_ui_users() {
    let server = start(HubSpotConfig::default()).await;
    let client = reqwest::Client::new();
    let base = server.base_url();
    let created = client
        .post(format!("{base}/_sim/hubspot/contacts"))
        .json(&json!({"properties": {"email": "ui@x.com", "firstname": "Ui"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let edited = client
        .patch(format!("{base}/_sim/hubspot/contacts/{id}"))
        .json(&json!({"properties": {"nonexistent": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), StatusCode::BAD_REQUEST);
    let edited = client
        .patch(format!("{base}/_sim/hubspot/contacts/{id}"))
        .json(&json!({"properties": {"firstname": "Edited"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), StatusCode::OK);
    assert_eq!(
        server.hubspot.contact(&id).unwrap().prop("firstname"),
        Some("Edited")
    );
    let deleted = client
        .delete(format!("{base}/_sim/hubspot/contacts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let all: Value = client
        .get(format!("{base}/_sim/hubspot/contacts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["results"][0]["archived"], true);
    let restored = client
        .post(format!("{base}/_sim/hubspot/contacts/{id}/restore"))
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), StatusCode::OK);
    assert!(!server.hubspot.contact(&id).unwrap().archived);
    let stats: Value = client
        .get(format!("{base}/_sim/hubspot/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // UI actions are not API calls.
    assert_eq!(stats["requests"], 0);
    assert_eq!(stats["write_calls"], 0);
    assert!(stats["by_endpoint"].is_object());
}

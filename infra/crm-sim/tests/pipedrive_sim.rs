//! End-to-end tests of the Pipedrive simulator over HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use crm_sim::pipedrive::PipedriveConfig;
use crm_sim::{SimConfig, SimServer};
use reqwest::Client;
use serde_json::{Value, json};

const TOKEN: &str = "sim-pipedrive-token";

async fn start(cfg: PipedriveConfig) -> SimServer {
    crm_sim::start(
        SimConfig {
            pipedrive: cfg,
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("start simulator")
}

/// A config without limits (and a search index that keeps up), so tests that are not about
/// those are not throttled.
fn unlimited() -> PipedriveConfig {
    PipedriveConfig {
        burst_limit: None,
        search_burst_limit: None,
        daily_token_budget: None,
        search_index_lag_ms: 0,
        ..Default::default()
    }
}

struct Api {
    base: String,
    http: Client,
}

impl Api {
    fn new(server: &SimServer) -> Self {
        Self {
            base: server.base_url(),
            http: Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("x-api-token", TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, headers, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call("GET", path, None).await;
        (s, v)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call("POST", path, Some(body)).await;
        (s, v)
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call("PATCH", path, Some(body)).await;
        (s, v)
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call("DELETE", path, None).await;
        (s, v)
    }

    async fn create(&self, body: Value) -> u64 {
        let (s, v) = self.post("/api/v2/persons", body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["data"]["id"].as_u64().unwrap()
    }
}

fn assert_error_envelope(v: &Value) {
    assert_eq!(v["success"], json!(false), "{v}");
    assert!(v["error"].is_string(), "{v}");
    assert!(v.get("data").is_some_and(Value::is_null), "{v}");
    assert!(v.get("additional_data").is_some_and(Value::is_null), "{v}");
}

#[tokio::test]
async fn person_crud_and_envelopes() {
    let server = start(unlimited()).await;
    let api = Api::new(&server);

    let (s, v) = api
        .post(
            "/api/v2/persons",
            json!({"name": "Ada Lovelace", "emails": [{"value": "ada@example.com"}],
                   "phones": [{"value": "+44 20 7946 0000", "label": "mobile"}], "visible_to": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "POST answers 200, not 201");
    assert_eq!(v["success"], json!(true));
    let p = &v["data"];
    let id = p["id"].as_u64().unwrap();
    assert_eq!(p["first_name"], json!("Ada"));
    assert_eq!(p["last_name"], json!("Lovelace"));
    assert_eq!(p["owner_id"], json!(9001));
    assert_eq!(p["is_deleted"], json!(false));
    assert_eq!(
        p["emails"],
        json!([{"value": "ada@example.com", "primary": true, "label": "work"}])
    );
    assert_eq!(p["phones"][0]["label"], json!("mobile"));
    assert_eq!(p["custom_fields"], json!({}));
    let add_time = p["add_time"].as_str().unwrap();
    assert_eq!(add_time.len(), 20, "whole-second RFC 3339: {add_time}");
    assert!(add_time.ends_with('Z'));

    let (s, v) = api.get(&format!("/api/v2/persons/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["name"], json!("Ada Lovelace"));

    let (s, v) = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"name": "Ada King", "emails": []}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["last_name"], json!("King"));
    assert_eq!(v["data"]["emails"], json!([]), "arrays are replaced");

    // Rejections the real API makes.
    let (s, v) = api
        .post("/api/v2/persons", json!({"emails": [{"value": "x@y.io"}]}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_envelope(&v);
    let (s, _) = api
        .post("/api/v2/persons", json!({"name": "A", "owner_id": "9001"}))
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "numeric strings are not coerced"
    );
    let (s, _) = api
        .post("/api/v2/persons", json!({"name": "A", "nickname": "x"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown property");
    let (s, _) = api
        .post(
            "/api/v2/persons",
            json!({"name": "A", "emails": ["a@b.io"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "emails must be objects");
    let (s, _) = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"add_time": "2024-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "add_time is create-only");
    let (s, v) = api.get("/api/v2/persons/424242").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], json!("Entity was not found"));
    assert_error_envelope(&v);

    let (s, v) = api.delete(&format!("/api/v2/persons/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"success": true, "data": {"id": id}}));
    let (s, _) = api.get(&format!("/api/v2/persons/{id}")).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "deleted persons are gone from get"
    );
    let (s, _) = api
        .patch(&format!("/api/v2/persons/{id}"), json!({"name": "X"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = api.get("/api/v2/persons").await;
    assert_eq!(v["data"], json!([]), "and from the list");
    assert_eq!(v["additional_data"]["next_cursor"], Value::Null);
    // Still stored (soft delete), visible through the control API.
    let stored = server.pipedrive.person(id).unwrap();
    assert_eq!(stored["is_deleted"], json!(true));

    let (s, _) = api.get("/api/v1/persons").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "v1 persons CRUD was removed");

    // Every request is in the log with its operationId.
    let log = server.pipedrive.request_log();
    let first = &log[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.operation_id.as_deref(), Some("addPerson"));
    assert_eq!(first.body.as_ref().unwrap()["name"], json!("Ada Lovelace"));
    assert_eq!(first.auth.as_deref(), Some("x-api-token"));
    assert_eq!(first.status, 200);
}

#[tokio::test]
async fn authentication() {
    let server = start(PipedriveConfig {
        oauth_tokens: vec!["oauth-access".into()],
        ..unlimited()
    })
    .await;
    let http = Client::new();
    let url = format!("{}/api/v1/users/me", server.base_url());

    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["success"], json!(false));
    assert_eq!(v["error"], json!("unauthorized access"));
    assert_eq!(v["errorCode"], json!(401));

    let resp = http
        .get(&url)
        .header("x-api-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = http
        .get(&url)
        .header("x-api-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"]["id"], json!(9001));
    assert_eq!(v["data"]["company_id"], json!(7001));
    assert_eq!(v["data"]["company_domain"], json!("sim-company"));

    let resp = http
        .get(format!("{url}?api_token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "legacy query token");
    let resp = http
        .get(&url)
        .bearer_auth("oauth-access")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "OAuth bearer");

    let stats = server.pipedrive.stats();
    assert_eq!(stats.unauthorized, 3);
    assert_eq!(
        stats.tokens_used,
        3 * 2,
        "401s cost nothing, users/me costs 2"
    );
}

#[tokio::test]
async fn token_costs_follow_the_spec() {
    let server = start(unlimited()).await;
    let api = Api::new(&server);
    let a = api.create(json!({"name": "A One"})).await; // 5
    let b = api.create(json!({"name": "B Two"})).await; // 5
    api.get("/api/v2/persons").await; // 10
    api.get(&format!("/api/v2/persons/{a}")).await; // 1
    api.patch(&format!("/api/v2/persons/{a}"), json!({"name": "A Uno"}))
        .await; // 5
    api.get("/api/v2/persons/search?term=Uno").await; // 20
    api.get("/api/v2/personFields").await; // 10
    api.post(
        "/api/v2/personFields",
        json!({"field_name": "X", "field_type": "varchar"}),
    )
    .await; // 5
    api.get("/api/v1/users/me").await; // 2
    api.get("/api/v1/webhooks").await; // 10
    let (s, _, _) = api
        .call(
            "PUT",
            &format!("/api/v1/persons/{b}/merge"),
            Some(json!({"merge_with_id": a})),
        )
        .await; // 40
    assert_eq!(s, StatusCode::OK);
    let (_, headers, _) = api
        .call("DELETE", &format!("/api/v2/persons/{a}"), None)
        .await; // 3

    let stats = server.pipedrive.stats();
    assert_eq!(
        stats.tokens_used,
        5 + 5 + 10 + 1 + 5 + 20 + 10 + 5 + 2 + 10 + 40 + 3
    );
    assert_eq!(stats.daily_tokens_used, stats.tokens_used);
    assert_eq!(stats.tokens_by_endpoint["POST /api/v2/persons"], 10);
    assert_eq!(stats.tokens_by_endpoint["GET /api/v2/persons/search"], 20);
    assert_eq!(
        stats.tokens_by_endpoint["PUT /api/v1/persons/{id}/merge"],
        40
    );
    assert_eq!(stats.write_calls, 6);
    assert_eq!(stats.requests, 12);
    // No daily budget configured: no token headers, but the legacy daily request counter.
    assert!(headers.get("x-daily-ratelimit-token-remaining").is_none());
    assert_eq!(
        headers["x-daily-requests-left"], "9995",
        "POST/PUT/PATCH count, DELETE does not"
    );

    // With a budget the remaining tokens are reported.
    server.pipedrive.set_rate_limit(None, Some(1_000));
    let (_, headers, _) = api.call("GET", "/api/v1/users/me", None).await;
    assert_eq!(headers["x-daily-ratelimit-token-limit"], "1000");
    assert_eq!(
        headers["x-daily-ratelimit-token-remaining"],
        (1_000 - stats.daily_tokens_used - 2).to_string().as_str()
    );
}

#[tokio::test]
async fn cursor_paging_and_updated_filters() {
    let server = start(unlimited()).await;
    let api = Api::new(&server);
    let sim = &server.pipedrive;
    let mut ids = Vec::new();
    let mut times = Vec::new();
    for i in 0..5 {
        let (_, v) = api
            .post("/api/v2/persons", json!({"name": format!("P{i} Test")}))
            .await;
        ids.push(v["data"]["id"].as_u64().unwrap());
        times.push(v["data"]["update_time"].as_str().unwrap().to_string());
        sim.advance_clock(60);
    }

    // Page through with limit 2.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/api/v2/persons?limit=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, v) = api.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        pages += 1;
        seen.extend(
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_u64().unwrap()),
        );
        match v["additional_data"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);

    // updated_since is inclusive, updated_until exclusive.
    let (_, v) = api
        .get(&format!("/api/v2/persons?updated_since={}", times[2]))
        .await;
    let got: Vec<u64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids[2..].to_vec());
    let (_, v) = api
        .get(&format!(
            "/api/v2/persons?updated_since={}&updated_until={}",
            times[1], times[3]
        ))
        .await;
    let got: Vec<u64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids[1..3].to_vec());

    // An update moves a person to the end of an update_time sort.
    sim.advance_clock(60);
    api.patch(
        &format!("/api/v2/persons/{}", ids[0]),
        json!({"name": "P0 Changed"}),
    )
    .await;
    let (_, v) = api
        .get("/api/v2/persons?sort_by=update_time&sort_direction=desc&limit=1")
        .await;
    assert_eq!(v["data"][0]["id"], json!(ids[0]));
    let next = v["additional_data"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = api
        .get(&format!(
            "/api/v2/persons?sort_by=update_time&sort_direction=desc&limit=10&cursor={next}"
        ))
        .await;
    let got: Vec<u64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![ids[4], ids[3], ids[2], ids[1]]);

    // Validation.
    let (s, v) = api
        .get("/api/v2/persons?updated_since=2025-01-01T10:20:00.000Z")
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "fractional seconds are rejected"
    );
    assert_error_envelope(&v);
    for bad in [
        "limit=501",
        "limit=0",
        "sort_by=name",
        "sort_direction=up",
        "updated_since=yesterday",
        "cursor=not-a-cursor",
        "ids=1,x",
        &format!("sort_by=update_time&cursor={next}"),
    ] {
        let (s, _) = api.get(&format!("/api/v2/persons?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (s, v) = api.get("/api/v2/persons?limit=500").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"].as_array().unwrap().len(), 5);
    let (_, v) = api
        .get(&format!("/api/v2/persons?ids={},{}", ids[3], ids[1]))
        .await;
    let got: Vec<u64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![ids[1], ids[3]]);
}

#[tokio::test]
async fn search_by_exact_email() {
    let server = start(unlimited()).await;
    let api = Api::new(&server);
    let ada = api
        .create(
            json!({"name": "Ada Lovelace", "emails": [{"value": "Ada@Example.com"}],
                       "phones": [{"value": "12345"}]}),
        )
        .await;
    api.create(json!({"name": "Adam Smith", "emails": [{"value": "ada@example.com.au"}]}))
        .await;

    let (s, v) = api
        .get("/api/v2/persons/search?term=ada%40example.com&fields=email&exact_match=true")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "exact and case-insensitive: {v}");
    let item = &items[0]["item"];
    assert_eq!(item["id"], json!(ada));
    assert_eq!(item["type"], json!("person"));
    assert_eq!(
        item["emails"],
        json!(["Ada@Example.com"]),
        "emails are strings in search"
    );
    assert_eq!(item["phones"], json!(["12345"]));
    assert_eq!(item["owner"], json!({"id": 9001}));
    assert!(items[0]["result_score"].is_number());
    assert!(v["additional_data"].get("next_cursor").is_some());

    let (_, v) = api
        .get("/api/v2/persons/search?term=ada%40example&fields=email")
        .await;
    assert_eq!(
        v["data"]["items"].as_array().unwrap().len(),
        2,
        "partial match without exact_match"
    );
    let (_, v) = api
        .get("/api/v2/persons/search?term=ada%40example&fields=email&exact_match=true")
        .await;
    assert_eq!(v["data"]["items"], json!([]));
    let (_, v) = api
        .get("/api/v2/persons/search?term=lovelace&fields=email")
        .await;
    assert_eq!(
        v["data"]["items"],
        json!([]),
        "only the requested fields are searched"
    );

    let (s, _) = api.get("/api/v2/persons/search?term=a").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "term needs 2 characters");
    let (s, _) = api
        .get("/api/v2/persons/search?term=a&exact_match=true")
        .await;
    assert_eq!(s, StatusCode::OK, "or 1 with exact_match");
    let (s, _) = api
        .get("/api/v2/persons/search?term=ada&fields=title")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.get("/api/v2/persons/search").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn person_fields_and_custom_values() {
    let server = start(unlimited()).await;
    let api = Api::new(&server);
    let (s, v) = api
        .post(
            "/api/v2/personFields",
            json!({"field_name": "App contact id", "field_type": "varchar"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let key = v["data"]["field_code"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 40);
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(v["data"]["is_custom_field"], json!(true));
    assert_eq!(
        server.pipedrive.field_key("App contact id").as_deref(),
        Some(key.as_str())
    );

    let (s, v) = api
        .post(
            "/api/v2/personFields",
            json!({"field_name": "Tier", "field_type": "enum",
                                             "options": [{"label": "Gold"}, {"label": "Silver"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let tier = v["data"]["field_code"].as_str().unwrap().to_string();
    let gold = v["data"]["options"][0]["id"].as_u64().unwrap();

    for bad in [
        json!({"field_type": "varchar"}),
        json!({"field_name": "X"}),
        json!({"field_name": "X", "field_type": "checkbox"}),
        json!({"field_name": "X", "field_type": "set"}),
        json!({"name": "X", "field_type": "varchar"}),
    ] {
        let (s, v) = api.post("/api/v2/personFields", bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_error_envelope(&v);
    }

    let (_, v) = api.get("/api/v2/personFields").await;
    let codes: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field_code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"name") && codes.contains(&key.as_str()) && codes.contains(&tier.as_str())
    );
    assert!(
        !codes.contains(&"job_title"),
        "contact-sync fields are absent by default"
    );

    let id = api
        .create(
            json!({"name": "Ada", "custom_fields": {key.clone(): "app-8812", tier.clone(): gold}}),
        )
        .await;
    let (_, v) = api.get(&format!("/api/v2/persons/{id}")).await;
    assert_eq!(v["data"]["custom_fields"][&key], json!("app-8812"));
    assert_eq!(v["data"]["custom_fields"][&tier], json!(gold));
    let (_, v) = api
        .get(&format!("/api/v2/persons/{id}?include_option_labels=true"))
        .await;
    assert_eq!(
        v["data"]["custom_fields"][&tier],
        json!({"id": gold, "label": "Gold"})
    );
    let (_, v) = api
        .get(&format!("/api/v2/persons/{id}?custom_fields={key}"))
        .await;
    assert_eq!(v["data"]["custom_fields"].as_object().unwrap().len(), 1);

    // Clear with null.
    let (s, v) = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"custom_fields": {key.clone(): null}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["custom_fields"][&key], Value::Null);

    let unknown = "0".repeat(40);
    let (s, v) = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"custom_fields": {unknown: "x"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown custom field key");
    assert_error_envelope(&v);
    let (s, _) = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"custom_fields": {tier.clone(): "Gold"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "enum takes the option id");
    let (s, _) = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"job_title": "CTO"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "job_title needs contact sync");
}

#[tokio::test]
async fn burst_limit_answers_429_with_headers() {
    let server = start(PipedriveConfig {
        burst_limit: Some(3),
        ..unlimited()
    })
    .await;
    let api = Api::new(&server);
    for i in 0..3 {
        let (s, h, _) = api.call("GET", "/api/v1/users/me", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], (2 - i).to_string().as_str());
        assert!(h.contains_key("x-ratelimit-reset"));
    }
    let (s, h, v) = api.call("GET", "/api/v1/users/me", None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["success"], json!(false));
    assert_eq!(v["errorCode"], json!(429));
    assert_eq!(h["x-ratelimit-remaining"], "0");
    let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&reset),
        "seconds until the window frees up: {reset}"
    );
    let stats = server.pipedrive.stats();
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.tokens_used, 6, "rejected requests cost nothing");

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (s, _, _) = api.call("GET", "/api/v1/users/me", None).await;
    assert_eq!(s, StatusCode::OK, "the rolling window moved on");

    // The limit can be changed at run time through the control API.
    let resp = Client::new()
        .put(format!(
            "{}/_sim/pipedrive/config/rate-limit",
            server.base_url()
        ))
        .json(&json!({"burst_limit": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for _ in 0..5 {
        let (s, _, _) = api.call("GET", "/api/v1/users/me", None).await;
        assert_eq!(s, StatusCode::OK);
    }
}

#[tokio::test]
async fn daily_token_budget_exhaustion_and_reset() {
    let server = start(PipedriveConfig {
        daily_token_budget: Some(12),
        ..unlimited()
    })
    .await;
    let api = Api::new(&server);
    let (s, h, _) = api.call("GET", "/api/v2/persons", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-daily-ratelimit-token-remaining"], "2");
    let (s, h, v) = api.call("GET", "/api/v2/persons", None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["success"], json!(false));
    assert_eq!(v["errorCode"], json!(429));
    assert_eq!(h["x-daily-ratelimit-token-remaining"], "2");
    assert_eq!(
        v["error"], "Request over limit",
        "the body of a burst 429: nothing documented tells them apart"
    );
    let (s, _, _) = api.call("GET", "/api/v1/users/me", None).await;
    assert_eq!(s, StatusCode::OK, "a 2-token call still fits");
    let (s, _, _) = api.call("GET", "/api/v2/persons/1", None).await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "budget spent: everything is refused"
    );
    let stats = server.pipedrive.stats();
    assert_eq!(stats.daily_limited, 2);
    assert_eq!(stats.daily_tokens_used, 12);

    let resp = Client::new()
        .post(format!("{}/_sim/pipedrive/reset-day", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, _, _) = api.call("GET", "/api/v2/persons", None).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "budget back after the simulated midnight"
    );

    // The simulated clock crossing midnight resets it too.
    let (s, _, _) = api.call("GET", "/api/v2/persons", None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    server.pipedrive.advance_clock(86_400);
    let (s, _, _) = api.call("GET", "/api/v2/persons", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn outage_and_unknown_paths() {
    let server = start(unlimited()).await;
    let api = Api::new(&server);
    server.pipedrive.set_outage(true);
    let (s, v) = api.get("/api/v2/persons").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_error_envelope(&v);
    let (s, _) = api.get("/api/v1/users/me").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    server.pipedrive.set_outage(false);
    let (s, _) = api.get("/api/v2/persons").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api.get("/api/v2/deals").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_envelope(&v);
    assert_eq!(
        server.pipedrive.stats().tokens_used,
        10,
        "503s and 404s cost nothing"
    );
}

/// A webhook receiver that records requests and fails the first `fail_first` of them.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Self, String) {
        let r = Receiver::default();
        r.fail_first.store(fail_first, Ordering::SeqCst);
        let app = axum::Router::new()
            .route(
                "/hook",
                post(
                    |State(r): State<Receiver>, headers: HeaderMap, body: String| async move {
                        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        r.got.lock().unwrap().push((headers, v));
                        let failing = r
                            .fail_first
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if failing {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        }
                    },
                ),
            )
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let b = self.bodies();
            if b.len() >= n {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} webhook requests, got {:?}", self.bodies());
    }
}

/// Waits until no webhook delivery of `server` is queued, being attempted or waiting for a retry.
async fn deliveries_done(server: &SimServer) {
    for _ in 0..400 {
        if server.pipedrive.stats().webhook_jobs_pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "webhook deliveries still pending: {:?}",
        server.pipedrive.stats()
    );
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test]
async fn webhooks_v2_delivery_with_basic_auth_previous_and_retries() {
    let (rx, url) = Receiver::start(1).await;
    let server = start(PipedriveConfig {
        webhook_retry_delays_ms: vec![50, 50, 50],
        ..unlimited()
    })
    .await;
    let api = Api::new(&server);

    // Register through the v1 webhooks API.
    let (s, v) = api
        .post(
            "/api/v1/webhooks",
            json!({
            "subscription_url": url, "event_action": "*", "event_object": "person",
            "name": "contact sync", "http_auth_user": "hook", "http_auth_password": "s3cret"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], json!("ok"));
    assert_eq!(v["data"]["version"], json!("2.0"));
    let webhook_id = v["data"]["id"].as_u64().unwrap();
    let (_, v) = api.get("/api/v1/webhooks").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    for bad in [
        json!({"subscription_url": url, "event_action": "*", "event_object": "person"}),
        json!({"subscription_url": "not a url", "event_action": "*", "event_object": "person", "name": "x"}),
        json!({"subscription_url": url, "event_action": "updated", "event_object": "person", "name": "x"}),
    ] {
        let (s, v) = api.post("/api/v1/webhooks", bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(v["status"], json!("error"));
        assert!(v["errors"].is_object());
    }

    // API create: the first attempt fails (500), the retry succeeds.
    let id = api
        .create(json!({"name": "Ada Lovelace", "emails": [{"value": "ada@old.example.com"}]}))
        .await;
    let bodies = rx.wait_for(2).await;
    assert_eq!(
        bodies[0]["meta"]["id"], bodies[1]["meta"]["id"],
        "a retry is the same event"
    );
    assert_eq!(bodies[0]["meta"]["attempt"], json!(1));
    assert_eq!(bodies[1]["meta"]["attempt"], json!(2));
    let create = &bodies[1];
    let meta = &create["meta"];
    assert_eq!(meta["action"], json!("create"));
    assert_eq!(meta["entity"], json!("person"));
    assert_eq!(meta["entity_id"], json!(id.to_string()));
    assert_eq!(meta["company_id"], json!("7001"));
    assert_eq!(meta["user_id"], json!("9001"));
    assert_eq!(meta["change_source"], json!("api"));
    assert_eq!(meta["version"], json!("2.0"));
    assert_eq!(meta["webhook_id"], json!(webhook_id.to_string()));
    assert_eq!(meta["host"], json!("sim-company.pipedrive.com"));
    assert!(meta["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(create["data"]["id"], json!(id));
    assert_eq!(create["data"]["visible_to"], json!("3"));
    assert_eq!(create["previous"], Value::Null);
    {
        let got = rx.got.lock().unwrap();
        assert_eq!(got[1].0["authorization"], basic("hook", "s3cret").as_str());
    }

    // API change: previous holds only the changed fields.
    api.patch(
        &format!("/api/v2/persons/{id}"),
        json!({"emails": [{"value": "ada@example.com"}]}),
    )
    .await;
    let bodies = rx.wait_for(3).await;
    let change = &bodies[2];
    assert_eq!(change["meta"]["action"], json!("change"));
    assert_eq!(change["meta"]["attempt"], json!(1));
    assert_eq!(
        change["previous"],
        json!({"emails": [{"value": "ada@old.example.com", "primary": true, "label": "work"}]})
    );
    assert_eq!(
        change["data"]["emails"][0]["value"],
        json!("ada@example.com")
    );

    // A web-app edit: change_source app, the UI user.
    server.pipedrive.ui_update(id, json!({"name": "Ada King"}));
    let bodies = rx.wait_for(4).await;
    let ui = &bodies[3];
    assert_eq!(ui["meta"]["change_source"], json!("app"));
    assert_eq!(ui["meta"]["user_id"], json!("9002"));
    assert_eq!(
        ui["previous"],
        json!({"name": "Ada Lovelace", "last_name": "Lovelace"})
    );

    // A PATCH that changes nothing sends nothing.
    api.patch(
        &format!("/api/v2/persons/{id}"),
        json!({"name": "Ada King"}),
    )
    .await;

    // Delete: data null, previous = last state.
    api.delete(&format!("/api/v2/persons/{id}")).await;
    let bodies = rx.wait_for(5).await;
    let del = &bodies[4];
    assert_eq!(del["meta"]["action"], json!("delete"));
    assert_eq!(del["data"], Value::Null);
    assert_eq!(del["previous"]["name"], json!("Ada King"));
    // Deliveries go out in event order: had the no-op PATCH made an event, it would stand
    // before the delete.
    deliveries_done(&server).await;
    assert_eq!(rx.bodies().len(), 5, "no event for the no-op PATCH");

    let stats = server.pipedrive.stats();
    assert_eq!(stats.webhook_attempts, 5);
    assert_eq!(stats.webhook_failures, 1);
    assert_eq!(stats.webhook_deliveries, 4);
    let log = server.pipedrive.webhook_log();
    assert_eq!(log.len(), 5);
    assert_eq!(log[0].status, Some(500));
    assert!(!log[0].ok);

    // Paused webhooks drop events (like missed webhooks).
    server.pipedrive.set_webhooks_enabled(false);
    api.create(json!({"name": "Missed"})).await;
    server.pipedrive.set_webhooks_enabled(true);
    assert_eq!(server.pipedrive.stats().webhooks_dropped, 1);
    // A later change is delivered next: nothing for the missed one came before it.
    api.create(json!({"name": "Marker"})).await;
    let bodies = rx.wait_for(6).await;
    assert_eq!(bodies[5]["data"]["name"], json!("Marker"));
    deliveries_done(&server).await;
    assert_eq!(rx.bodies().len(), 6);

    // Unregistered: no more deliveries.
    let (s, _) = api.delete(&format!("/api/v1/webhooks/{webhook_id}")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.delete(&format!("/api/v1/webhooks/{webhook_id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let attempts = server.pipedrive.stats().webhook_attempts;
    api.create(json!({"name": "Unheard"})).await;
    // Deliveries are queued while the change is made: none was queued, none is attempted.
    let stats = server.pipedrive.stats();
    assert_eq!(stats.webhook_jobs_pending, 0);
    assert_eq!(stats.webhook_attempts, attempts);
    assert_eq!(rx.bodies().len(), 6);
}

#[tokio::test]
async fn retries_stop_after_the_configured_attempts() {
    let (rx, url) = Receiver::start(usize::MAX).await;
    let server = start(PipedriveConfig {
        webhook_url: Some(url),
        webhook_user: Some("u".into()),
        webhook_password: Some("p".into()),
        webhook_retry_delays_ms: vec![20, 20, 20],
        ..unlimited()
    })
    .await;
    let id = server.pipedrive.ui_create(json!({"name": "Grace Hopper"}));
    let bodies = rx.wait_for(4).await;
    let attempts: Vec<_> = bodies
        .iter()
        .map(|b| b["meta"]["attempt"].clone())
        .collect();
    assert_eq!(attempts, vec![json!(1), json!(2), json!(3), json!(4)]);
    assert!(
        bodies
            .iter()
            .all(|b| b["meta"]["entity_id"] == json!(id.to_string()))
    );
    assert_eq!(bodies[0]["meta"]["change_source"], json!("app"));
    // Given up (nothing pending): no attempt can follow.
    deliveries_done(&server).await;
    assert_eq!(
        rx.bodies().len(),
        4,
        "1 attempt + 3 retries, then the event is lost"
    );
    let stats = server.pipedrive.stats();
    assert_eq!(stats.webhook_gave_up, 1);
    assert_eq!(stats.webhook_failures, 4);
    let got = rx.got.lock().unwrap();
    assert_eq!(got[0].0["authorization"], basic("u", "p").as_str());
}

#[tokio::test]
async fn merge_emits_delete_with_merged_to_id_and_change_with_merged_from_id() {
    let (rx, url) = Receiver::start(0).await;
    let server = start(PipedriveConfig {
        webhook_url: Some(url),
        ..unlimited()
    })
    .await;
    let api = Api::new(&server);
    let keep = api
        .create(json!({"name": "Ada Lovelace", "emails": [{"value": "ada@example.com"}]}))
        .await;
    let gone = api
        .create(json!({"name": "A. Lovelace", "emails": [{"value": "ada@work.example.com"}], "org_id": 5}))
        .await;
    rx.wait_for(2).await;

    let (s, _, v) = api
        .call(
            "PUT",
            &format!("/api/v1/persons/{gone}/merge"),
            Some(json!({"merge_with_id": keep})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["id"], json!(keep), "merge_with_id survives");
    assert_eq!(v["data"]["merge_what_id"], json!(gone));
    assert_eq!(
        v["data"]["name"],
        json!("Ada Lovelace"),
        "survivor data wins"
    );
    assert_eq!(v["data"]["org_id"], json!(5), "empty fields are filled");
    assert_eq!(v["data"]["email"].as_array().unwrap().len(), 2);

    let bodies = rx.wait_for(4).await;
    let del = bodies
        .iter()
        .find(|b| b["meta"]["action"] == json!("delete"))
        .unwrap();
    assert_eq!(del["meta"]["entity_id"], json!(gone.to_string()));
    assert_eq!(del["meta"]["merged_to_id"], json!(keep.to_string()));
    assert_eq!(del["data"], Value::Null);
    let change = bodies[2..]
        .iter()
        .find(|b| b["meta"]["action"] == json!("change"))
        .unwrap();
    assert_eq!(change["meta"]["entity_id"], json!(keep.to_string()));
    assert_eq!(change["meta"]["merged_from_id"], json!(gone.to_string()));
    assert!(change["meta"].get("merged_to_id").is_none());
    assert_eq!(change["previous"].get("org_id"), Some(&Value::Null));

    let (s, _) = api.get(&format!("/api/v2/persons/{gone}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        server.pipedrive.person(gone).unwrap()["merged_into"],
        json!(keep)
    );

    // Errors.
    let (s, _, _) = api
        .call(
            "PUT",
            &format!("/api/v1/persons/{keep}/merge"),
            Some(json!({"merge_with_id": keep})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = api
        .call(
            "PUT",
            &format!("/api/v1/persons/{gone}/merge"),
            Some(json!({"merge_with_id": keep})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = api
        .call(
            "PUT",
            &format!("/api/v1/persons/{keep}/merge"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // A merge made in the web app is reported the same way, as change_source app.
    let third = server.pipedrive.ui_create(json!({"name": "Third"}));
    server.pipedrive.ui_merge(third, keep);
    let bodies = rx.wait_for(7).await;
    assert_eq!(bodies[5]["meta"]["merged_to_id"], json!(keep.to_string()));
    assert_eq!(
        bodies[6]["meta"]["merged_from_id"],
        json!(third.to_string())
    );
    assert_eq!(bodies[6]["meta"]["change_source"], json!("app"));
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let server = start(unlimited()).await;
    let http = Client::new();
    let base = server.base_url();
    let resp = http
        .post(format!("{base}/_sim/pipedrive/persons"))
        .json(&json!({"name": "Linus Torvalds", "emails": [{"value": "linus@example.com"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let id = v["data"]["id"].as_u64().unwrap();
    assert_eq!(
        v["data"]["owner_id"],
        json!(9002),
        "created by the web-app user"
    );

    let resp = http
        .patch(format!("{base}/_sim/pipedrive/persons/{id}"))
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "UI edits are validated too"
    );
    let resp = http
        .delete(format!("{base}/_sim/pipedrive/persons/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = http
        .get(format!("{base}/_sim/pipedrive/persons"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["data"][0]["is_deleted"],
        json!(true),
        "deleted ones are listed"
    );

    let resp = http
        .post(format!("{base}/_sim/pipedrive/outage"))
        .json(&json!({"down": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = http
        .get(format!("{base}/api/v2/persons"))
        .header("x-api-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let stats: Value = http
        .get(format!("{base}/_sim/pipedrive/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["requests"],
        json!(1),
        "control calls are not API requests"
    );
    for key in [
        "write_calls",
        "tokens_used",
        "tokens_by_endpoint",
        "rate_limited",
        "webhook_deliveries",
        "webhook_failures",
    ] {
        assert!(stats.get(key).is_some(), "{key}");
    }
    let log: Value = http
        .get(format!("{base}/_sim/pipedrive/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log[0]["status"], json!(503));
    assert_eq!(log[0]["operation_id"], json!("getPersons"));
}

/// Search lags writes on the simulator's clock: a new person is not found until the index
/// caught up, and an updated one is found by its earlier email meanwhile. The webhooks of
/// both writes are kept for the caller when captured.
#[tokio::test]
async fn search_lags_creates_and_updates_on_the_clock() {
    let now = Arc::new(Mutex::new(
        chrono::DateTime::parse_from_rfc3339("2026-01-05T09:00:00Z")
            .unwrap()
            .to_utc(),
    ));
    let clock = {
        let now = now.clone();
        crm_sim::SimClock::virtual_time(move || *now.lock().unwrap())
    };
    let server = start(PipedriveConfig {
        search_index_lag_ms: 2_000,
        clock,
        ..unlimited()
    })
    .await;
    server.pipedrive.capture_webhooks();
    let api = Api::new(&server);
    let find =
        |email: &str| format!("/api/v2/persons/search?term={email}&fields=email&exact_match=true");
    let id = api
        .create(json!({"name": "Ada", "emails": [{"value": "ada@example.com"}]}))
        .await;
    let (_, v) = api.get(&find("ada%40example.com")).await;
    assert_eq!(v["data"]["items"], json!([]), "not indexed yet: {v}");
    let advance = |ms: i64| *now.lock().unwrap() += chrono::Duration::milliseconds(ms);
    advance(2_000);
    let (_, v) = api.get(&find("ada%40example.com")).await;
    assert_eq!(v["data"]["items"][0]["item"]["id"], json!(id), "{v}");

    let (s, _) = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"emails": [{"value": "ada@new.example", "primary": true}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = api.get(&find("ada%40example.com")).await;
    assert_eq!(
        v["data"]["items"][0]["item"]["id"],
        json!(id),
        "old email meanwhile: {v}"
    );
    let (_, v) = api.get(&find("ada%40new.example")).await;
    assert_eq!(v["data"]["items"], json!([]), "{v}");
    advance(2_500);
    let (_, v) = api.get(&find("ada%40new.example")).await;
    assert_eq!(v["data"]["items"][0]["item"]["id"], json!(id), "{v}");
    let (_, v) = api.get(&find("ada%40example.com")).await;
    assert_eq!(v["data"]["items"], json!([]), "{v}");

    let person = server.pipedrive.person(id).unwrap();
    assert_eq!(
        person["add_time"],
        json!("2026-01-05T09:00:00Z"),
        "virtual time"
    );
    let hooks = server.pipedrive.take_webhooks();
    let actions: Vec<&str> = hooks
        .iter()
        .filter_map(|h| h["meta"]["action"].as_str())
        .collect();
    assert_eq!(actions, ["create", "change"], "{hooks:?}");
    assert!(server.pipedrive.take_webhooks().is_empty());
}

/// `GET /api/v1/persons/{id}/changelog`: one item per field a write changed, newest first,
/// with who made it (`change_source` `api` or `app`) and when (whole seconds), paged by an
/// opaque cursor; 20 tokens a page; 404 for a person that never was.
#[tokio::test]
async fn person_changelog_lists_field_changes_newest_first() {
    let server = start(unlimited()).await;
    let api = Api::new(&server);
    let (s, _, created) = api
        .call(
            "POST",
            "/api/v2/persons",
            Some(json!({"name": "Ann Lee", "emails": [{"value": "ann@x.io", "primary": true}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let id = created["data"]["id"].as_u64().unwrap();
    let (s, _, _) = api
        .call(
            "PATCH",
            &format!("/api/v2/persons/{id}"),
            Some(json!({"first_name": "Anna"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    server.pipedrive.ui_update(id, json!({"last_name": "Li"}));
    let before = server.pipedrive.stats();
    let (s, page) = api
        .get(&format!("/api/v1/persons/{id}/changelog?limit=2"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let items = page["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // Newest first: the user's last-name edit (and the name it made), then ours.
    let keys: Vec<&str> = items
        .iter()
        .map(|i| i["field_key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"last_name"), "{keys:?}");
    let last = items
        .iter()
        .find(|i| i["field_key"] == "last_name")
        .unwrap();
    assert_eq!(last["old_value"], "Lee");
    assert_eq!(last["new_value"], "Li");
    assert_eq!(last["change_source"], "app");
    assert_eq!(
        last["time"].as_str().unwrap().len(),
        19,
        "YYYY-MM-DD HH:MM:SS"
    );
    let cursor = page["additional_data"]["next_cursor"].as_str().unwrap();
    let (_, rest) = api
        .get(&format!(
            "/api/v1/persons/{id}/changelog?limit=10&cursor={cursor}"
        ))
        .await;
    let rest = rest["data"].as_array().unwrap();
    let first = rest
        .iter()
        .find(|i| i["field_key"] == "first_name")
        .unwrap();
    assert_eq!(first["new_value"], "Anna");
    assert_eq!(first["change_source"], "api");
    assert!(
        rest.iter().all(|i| i["field_key"] != "last_name"),
        "the second page goes on where the first stopped"
    );
    let after = server.pipedrive.stats();
    assert_eq!(after.tokens_used - before.tokens_used, 40, "20 a page");
    let (s, _) = api.get("/api/v1/persons/99999/changelog").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

//! Black-box tests: start the runner binary and drive it over HTTP.

mod common;

use common::{LocalProcess, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn contact_survives_a_restart() {
    let dir = temp_dir("restart");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("CRM_SIMULATOR", "off")]).await;
    let r = http
        .post(format!("{}/contacts", p.url))
        .json(&json!({"email": "Ada@Example.com", "first_name": "Ada", "pronouns": "she/her"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["email"], "ada@example.com");
    assert_eq!(created["sync"]["badge"], "local_only");

    let got: Value = http
        .get(format!("{}/contacts/{id}", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["first_name"], "Ada");
    p.stop();

    let p = LocalProcess::start(&dir, &[("CRM_SIMULATOR", "off")]).await;
    let r = http
        .get(format!("{}/contacts/{id}", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["pronouns"], "she/her");
    let list: Value = http
        .get(format!("{}/contacts", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    p.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn expect_error(r: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors() {
    let dir = temp_dir("badinput");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("CRM_SIMULATOR", "off")]).await;
    let url = |path: &str| format!("{}{path}", p.url);

    let malformed = http
        .post(url("/contacts"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    expect_error(malformed, StatusCode::BAD_REQUEST).await;
    let missing_email = http
        .post(url("/contacts"))
        .json(&json!({"first_name": "No"}))
        .send()
        .await
        .unwrap();
    let body = expect_error(missing_email, StatusCode::BAD_REQUEST).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("email"));
    let bad_email = http
        .post(url("/contacts"))
        .json(&json!({"email": "nope"}))
        .send()
        .await
        .unwrap();
    expect_error(bad_email, StatusCode::BAD_REQUEST).await;
    let unknown_field = http
        .post(url("/contacts"))
        .json(&json!({"email": "a@b.io", "shoe_size": 44}))
        .send()
        .await
        .unwrap();
    expect_error(unknown_field, StatusCode::BAD_REQUEST).await;
    let wrong_type = http
        .post(url("/contacts"))
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    expect_error(wrong_type, StatusCode::BAD_REQUEST).await;
    let empty = http.post(url("/contacts")).send().await.unwrap();
    expect_error(empty, StatusCode::BAD_REQUEST).await;
    // A body not declared JSON is not read as JSON.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = http
            .post(url("/contacts"))
            .body(r#"{"email":"typed@b.io"}"#);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let body = expect_error(
            req.send().await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        assert_eq!(
            body["error"]["code"], "unsupported_media_type",
            "{content_type:?}"
        );
    }
    let charset = http
        .post(url("/contacts"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"email":"typed@b.io"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        charset.status(),
        StatusCode::CREATED,
        "JSON with a charset is JSON"
    );
    let huge = "x".repeat(2 * 1024 * 1024);
    // The server answers 413 without reading the rest and closes that connection: use a
    // client of its own so the pooled connection of `http` is not the one closed.
    let too_big = common::http()
        .post(url("/contacts"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"email\":\"a@b.io\",\"first_name\":\"{huge}\"}}"
        ))
        .send()
        .await
        .unwrap();
    expect_error(too_big, StatusCode::PAYLOAD_TOO_LARGE).await;

    for r in [
        http.get(url("/contacts/does-not-exist"))
            .send()
            .await
            .unwrap(),
        http.put(url("/contacts/does-not-exist"))
            .json(&json!({"email": "a@b.io"}))
            .send()
            .await
            .unwrap(),
        http.delete(url("/contacts/does-not-exist"))
            .send()
            .await
            .unwrap(),
        http.get(url("/no/such/route")).send().await.unwrap(),
    ] {
        expect_error(r, StatusCode::NOT_FOUND).await;
    }
    let bad_limit = http.get(url("/contacts?limit=abc")).send().await.unwrap();
    expect_error(bad_limit, StatusCode::BAD_REQUEST).await;

    // Duplicate email → 409; stale version → 409.
    let first: Value = http
        .post(url("/contacts"))
        .json(&json!({"email": "dup@b.io"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dup = http
        .post(url("/contacts"))
        .json(&json!({"email": "DUP@b.io"}))
        .send()
        .await
        .unwrap();
    expect_error(dup, StatusCode::CONFLICT).await;
    let id = first["id"].as_str().unwrap();
    let stale = http
        .put(url(&format!("/contacts/{id}")))
        .json(&json!({"email": "dup@b.io", "version": 99}))
        .send()
        .await
        .unwrap();
    expect_error(stale, StatusCode::CONFLICT).await;
    let plain_put = http
        .put(url(&format!("/contacts/{id}")))
        .header("content-type", "text/plain")
        .body(r#"{"email": "dup@b.io"}"#)
        .send()
        .await
        .unwrap();
    expect_error(plain_put, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // The service is still healthy after all that.
    let status = http.get(url("/sync/status")).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    p.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn update_and_delete_round_trip() {
    let dir = temp_dir("crud");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("CRM_SIMULATOR", "off")]).await;
    let c: Value = http
        .post(format!("{}/contacts", p.url))
        .json(&json!({"email": "bo@b.io", "first_name": "Bo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = c["id"].as_str().unwrap();
    let r = http
        .put(format!("{}/contacts/{id}", p.url))
        .json(&json!({"email": "bo@b.io", "first_name": "Bob", "version": c["version"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["first_name"], "Bob");
    assert_eq!(
        u["version"].as_u64(),
        Some(c["version"].as_u64().unwrap() + 1)
    );
    let r = http
        .delete(format!("{}/contacts/{id}", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = http
        .get(format!("{}/contacts/{id}", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    p.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let dir = temp_dir("apikey");
    let http = reqwest::Client::new();
    let p = LocalProcess::start(&dir, &[("API_KEY", "k-123"), ("CRM_SIMULATOR", "off")]).await;
    let r = http
        .get(format!("{}/contacts", p.url))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED).await;
    let r = http
        .get(format!("{}/contacts", p.url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED).await;
    let r = http
        .get(format!("{}/contacts", p.url))
        .bearer_auth("k-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    p.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

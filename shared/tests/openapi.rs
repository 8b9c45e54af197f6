//! The OpenAPI document (`GET /openapi.json`) against the routes the service really answers.
//!
//! The routers are built from the same registrations as the document, but a route added with
//! plain axum would be served and missing from it. So these tests probe the routers from
//! outside: every path any source of the service spells (and every one the README's API table
//! lists), with every method; whatever is answered by something other than the "no such route"
//! or "method not allowed" fallbacks must be an operation of the document.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use shared::adapters::embedded::EmbeddedStore;
use shared::http::{AppState, HttpSettings};
use shared::sync::SyncService;
use shared::tenant::{TenantConfig, Tenants};
use tower::ServiceExt;

/// (HEAD is left out: axum answers it with GET's handler, and its answers carry no body to
/// tell the fallback by.)
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn state() -> AppState {
    let mut tenants = Tenants::new();
    let mut t = TenantConfig::new("acme");
    t.api_key = Some("key-acme".into());
    t.app_webhook_secret = Some("secret-acme".into());
    tenants.add(t, vec![]);
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let service = SyncService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(tenants),
    );
    AppState {
        service,
        queue: store,
        settings: Arc::new(HttpSettings::default()),
    }
}

/// The three routers: the local runner's (all routes), the `api` and `webhook-ingest` functions'.
fn routers() -> Vec<(&'static str, axum::Router)> {
    vec![
        ("local", shared::http::router(state())),
        ("api", shared::http::api_router(state())),
        ("webhook-ingest", shared::http::webhook_router(state())),
    ]
}

fn document() -> Value {
    serde_json::to_value(shared::http::openapi_document()).unwrap()
}

/// The document's operations as (METHOD, path template).
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// Whether `path` is an instance of the `template` (`{name}` matches one segment).
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "html" || e == "md")
        {
            out.push(path);
        }
    }
}

/// Every string that looks like one of our paths in the service's sources and the README:
/// quoted (`"/sync"`) or in backticks (`` `GET /contacts/{id}` ``), with `{...}` segments kept.
fn candidate_paths() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["shared/src/http", "functions", "infra/local/src"] {
        source_files(&root.join(dir), &mut files);
    }
    files.push(root.join("README.md"));
    let mut paths = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for piece in text.split(['"', '`', '\'', ' ', '(', ')', '?', '\n']) {
            let looks_like_route = piece.starts_with('/')
                && piece.len() > 1
                && !piece.starts_with("//")
                && piece
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-.{}".contains(c));
            if looks_like_route {
                paths.insert(piece.trim_end_matches('.').to_string());
            }
        }
    }
    paths.insert("/".into());
    paths
}

/// What the router answers to `method path`: the status and the error code, if any.
async fn probe(router: &axum::Router, method: &str, path: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", "Bearer key-acme")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn is_fallback(status: StatusCode, body: &Value) -> bool {
    (status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route")
        || (status == StatusCode::METHOD_NOT_ALLOWED
            && body["error"]["code"] == "method_not_allowed")
}

#[tokio::test]
async fn every_route_the_service_answers_is_in_the_document() {
    let doc = document();
    let ops = operations(&doc);
    let candidates = candidate_paths();
    // The probe must reach real routes, or it proves nothing.
    for known in [
        "/contacts",
        "/contacts/{id}",
        "/webhooks/hubspot",
        "/openapi.json",
    ] {
        assert!(
            candidates.contains(known),
            "{known} not found in the sources"
        );
    }
    let mut undocumented = Vec::new();
    let mut answered = 0;
    for (name, router) in routers() {
        for template in &candidates {
            let path = template
                .split('/')
                .map(|s| if s.starts_with('{') { "probe-id" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            for method in METHODS {
                let (status, body) = probe(&router, method, &path).await;
                if is_fallback(status, &body) {
                    continue;
                }
                answered += 1;
                // HEAD is answered by GET's handler (axum), as HTTP says.
                let as_method = if method == "HEAD" { "GET" } else { method };
                if !ops.iter().any(|(m, t)| m == as_method && matches(t, &path)) {
                    undocumented.push(format!("{name}: {method} {path} answered {status}"));
                }
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "routes served but missing from the OpenAPI document:\n{}",
        undocumented.join("\n")
    );
    assert!(
        answered >= ops.len(),
        "only {answered} answers to the probes"
    );
}

#[tokio::test]
async fn every_operation_of_the_document_is_served() {
    let doc = document();
    let router = shared::http::router(state());
    for (method, template) in operations(&doc) {
        let path = template.replace("{id}", "probe-id");
        let (status, body) = probe(&router, &method, &path).await;
        assert!(
            !is_fallback(status, &body),
            "{method} {template} is documented but not served"
        );
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_served_without_a_key() {
    let router = shared::http::router(state());
    let req = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .unwrap();
    let res = router.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(served, document());
    assert_eq!(served["openapi"], "3.1.0");
    // Every operation that is not public names its credentials, and every error answer it
    // documents has the one error shape.
    let public = ["/", "/health", "/openapi.json"];
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !public.contains(&path.as_str()) {
                assert!(
                    op["security"].as_array().is_some_and(|s| !s.is_empty()),
                    "{method} {path} declares no security"
                );
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path} does not document its 401"
                );
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

/// The SAM template's API Gateway routes are the document's operations but the webhooks, no
/// more, no fewer: a documented route the gateway does not pass on would answer 404 on AWS
/// only. The webhooks come in through `webhook-ingest`'s function URL, which passes every path
/// to the function.
#[test]
fn the_gateway_routes_exactly_the_documented_operations() {
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"))
            .unwrap();
    let mut routes = BTreeSet::new();
    for line in template.lines().filter(|l| l.contains("Type: HttpApi")) {
        let field = |name: &str| {
            let at = line
                .find(name)
                .unwrap_or_else(|| panic!("{name} in {line}"));
            let rest = line[at + name.len()..].trim_start();
            match rest.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap().to_string(),
                None => rest.split([',', ' ']).next().unwrap().to_string(),
            }
        };
        routes.insert((field("Method:"), field("Path:")));
    }
    let (webhooks, api): (BTreeSet<_>, BTreeSet<_>) = operations(&document())
        .into_iter()
        .partition(|(_, path)| path.starts_with("/webhooks/"));
    assert_eq!(routes, api);
    assert_eq!(webhooks.len(), 3, "{webhooks:?}");
    let ingest = template
        .split("\n  WebhookIngestFunction:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n  SyncWorkerFunction:").next())
        .expect("the webhook-ingest function in the template");
    assert!(
        ingest.contains("FunctionUrlConfig:") && ingest.contains("AuthType: NONE"),
        "webhook-ingest has no function URL: {ingest}"
    );
}

//! Every request the Pipedrive client sends validates against Pipedrive's official OpenAPI specs
//! (`openapi-v2.yaml` for `/api/v2`, `openapi-v1.yaml` for `/api/v1`), checked by
//! `infra/scripts/validate_pipedrive_requests.py` (openapi-core) on the simulator's request log.
//! The validator must run: when it cannot, these tests fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use crm_sim::{SimConfig, SimServer};
use serde_json::{Value, json};
use shared::crm::pipedrive::{PipedriveAuth, PipedriveClient, PipedriveClientConfig, TOKEN_COSTS};
use shared::ports::{CrmClient, CrmContext};
use shared::{ContactFields, CustomField, Field, FieldPatch, TenantId};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("shared/ has a parent")
        .to_path_buf()
}

/// The vendored official specs, `infra/specs/pipedrive` (see its README).
fn specs_dir() -> PathBuf {
    let dir = repo_root().join("infra/specs/pipedrive");
    assert!(
        dir.join("openapi-v2.yaml").is_file() && dir.join("openapi-v1.yaml").is_file(),
        "the official Pipedrive specs are missing at {}",
        dir.display()
    );
    dir
}

/// The Python with openapi-core: `CONTACT_SYNC_PYTHON`, else the venv `infra/scripts/venv.sh`
/// creates (once per test process: parallel tests must not build the venv twice at once).
/// Panics (fails the test) when neither works.
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_python).clone()
}

fn find_python() -> PathBuf {
    if let Ok(p) = std::env::var("CONTACT_SYNC_PYTHON")
        && !p.trim().is_empty()
    {
        return PathBuf::from(p);
    }
    let script = repo_root().join("infra/scripts/venv.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let py = Path::new(&venv).join("bin/python");
    assert!(py.is_file(), "no python in the venv {venv}");
    py
}

/// Runs the validator on `records`; returns its exit code and output.
fn validate(records: &[Value], name: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("pipedrive-spec-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("requests.json");
    std::fs::write(&file, serde_json::to_vec_pretty(records).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("infra/scripts/validate_pipedrive_requests.py"))
        .arg(&file)
        .arg("--specs")
        .arg(specs_dir())
        .output()
        .expect("run the validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.code().unwrap_or(-1), text)
}

async fn sim(mut config: SimConfig) -> SimServer {
    // The requests are what is checked here, not the search index's lag.
    config.pipedrive.search_index_lag_ms = 0;
    crm_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn ctx(pronouns: Option<String>) -> CrmContext {
    let c = CrmContext::new(TenantId::new("t"));
    match pronouns {
        Some(key) => c.with_field(CustomField::Pronouns, key),
        None => c,
    }
}

/// Drives the client through every operation it has and returns the request log as JSON.
async fn exercise_every_operation() -> Vec<Value> {
    let mut cfg = SimConfig::default();
    cfg.pipedrive.oauth_tokens = vec!["sim-oauth".into()];
    let s = sim(cfg).await;
    let mut pcfg = PipedriveClientConfig::new(
        s.base_url(),
        PipedriveAuth::ApiToken("sim-pipedrive-token".into()),
    );
    pcfg.page_limit = 2; // several pages: cursors are sent too
    let c = PipedriveClient::new(pcfg, reqwest::Client::new());

    c.own_user().await.unwrap();
    let url = "http://127.0.0.1:9/webhooks/pipedrive";
    c.ensure_webhook(url, Some("user"), Some("pw"))
        .await
        .unwrap();
    c.ensure_webhook(url, Some("user"), Some("pw2"))
        .await
        .unwrap();
    assert_eq!(
        c.find_field(&ctx(None), CustomField::Pronouns)
            .await
            .unwrap(),
        None
    );
    let key = c
        .ensure_field(&ctx(None), CustomField::Pronouns)
        .await
        .unwrap();
    let ctx = ctx(Some(key));
    let full = |i: usize| ContactFields {
        email: Some(format!("p{i}@example.com")),
        first_name: Some(format!("P{i}")),
        last_name: Some("Doe".into()),
        phone: Some(format!("+1 555 01{i:02}")),
        job_title: Some("Engineer".into()),
        pronouns: Some("she/her".into()),
    };
    let a = c.create(&ctx, &full(0)).await.unwrap();
    let nameless = ContactFields {
        email: Some("nameless@example.com".into()),
        ..Default::default()
    };
    c.create(&ctx, &nameless).await.unwrap();
    c.get(&ctx, &a.id).await.unwrap().unwrap();
    c.find_by_email(&ctx, "P0@example.com")
        .await
        .unwrap()
        .unwrap();
    let mut patch = FieldPatch::default();
    patch.insert(Field::FirstName, Some("Ann".into()));
    patch.insert(Field::Email, Some("ann@example.com".into()));
    patch.insert(Field::Phone, None);
    patch.insert(Field::JobTitle, None);
    patch.insert(Field::Pronouns, None);
    PipedriveClient::new(
        PipedriveClientConfig::new(
            s.base_url(),
            PipedriveAuth::ApiToken("sim-pipedrive-token".into()),
        ),
        reqwest::Client::new(),
    )
    .update(&ctx, &a.id, &patch)
    .await
    .unwrap();
    let mut clear_names = FieldPatch::default();
    clear_names.insert(Field::FirstName, None);
    clear_names.insert(Field::LastName, None);
    c.update(&ctx, &a.id, &clear_names).await.unwrap();
    let batch: Vec<_> = (1..6).map(full).collect();
    let emails: Vec<String> = batch.iter().filter_map(|f| f.email.clone()).collect();
    c.find_many_by_email(&ctx, &emails).await.unwrap();
    let mut live = vec![a.id.clone()];
    for r in c.create_many(&ctx, &batch).await.unwrap() {
        live.push(r.unwrap().id);
    }
    // Many ids read in one listing (`ids`); unknown ones are left out.
    let mut ids = live.clone();
    ids.extend((0..10).map(|i| format!("{}", 900_000 + i)));
    let read = c.get_many(&ctx, &ids).await.unwrap();
    let mut found: Vec<&String> = read.keys().collect();
    found.sort();
    live.sort();
    assert_eq!(found, live.iter().collect::<Vec<_>>());
    let mut cursor = None;
    for _ in 0..20 {
        let page = c.changed_since(&ctx, cursor.as_deref()).await.unwrap();
        cursor = page.next_cursor;
        if !page.has_more {
            break;
        }
    }
    c.changed_since(&ctx, cursor.as_deref()).await.unwrap();
    // The changelog a check of our writes reads (paged: more changes than one page holds).
    for i in 0..60 {
        s.pipedrive
            .ui_update(a.id.parse().unwrap(), json!({"last_name": format!("L{i}")}));
    }
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let (_, history) = c
        .get_with_history(&ctx, &a.id, &[Field::FirstName, Field::LastName], since)
        .await
        .unwrap();
    assert!(history.len() >= 60, "{}", history.len());
    c.archive(&ctx, &a.id).await.unwrap();

    // OAuth bearer, standard job title (an account with contact sync).
    let mut cfg = SimConfig::default();
    cfg.pipedrive.oauth_tokens = vec!["sim-oauth".into()];
    cfg.pipedrive.contact_sync_fields = true;
    let s2 = sim(cfg).await;
    let oauth = PipedriveClient::new(
        PipedriveClientConfig::new(s2.base_url(), PipedriveAuth::Bearer("sim-oauth".into())),
        reqwest::Client::new(),
    );
    let b = oauth.create(&ctx_plain(), &full(9)).await.unwrap();
    let mut patch = FieldPatch::default();
    patch.insert(Field::JobTitle, None);
    oauth.update(&ctx_plain(), &b.id, &patch).await.unwrap();

    let mut log: Vec<Value> = Vec::new();
    for r in s
        .pipedrive
        .request_log()
        .into_iter()
        .chain(s2.pipedrive.request_log())
    {
        assert!(
            r.status < 400,
            "the simulator refused {} {}: {}",
            r.method,
            r.path,
            r.status
        );
        log.push(serde_json::to_value(r).unwrap());
    }
    log
}

fn ctx_plain() -> CrmContext {
    ctx(None)
}

#[tokio::test]
async fn every_request_the_client_sends_validates_against_the_official_specs() {
    let log = exercise_every_operation().await;
    let used: std::collections::HashSet<&str> = log
        .iter()
        .filter_map(|r| r["operation_id"].as_str())
        .collect();
    for (op, _) in TOKEN_COSTS {
        assert!(used.contains(op), "the test does not exercise {op}");
    }
    assert!(
        log.iter()
            .any(|r| r["query"].as_str().is_some_and(|q| q.contains("cursor=")))
    );
    assert!(log.iter().any(|r| r["auth"] == "oauth bearer"));
    let (code, out) = validate(&log, "good");
    println!("{out}");
    assert_eq!(code, 0, "requests that do not validate:\n{out}");
    assert!(
        out.contains(&format!("{} passed, 0 failed", log.len())),
        "{out}"
    );
}

#[tokio::test]
async fn the_validator_rejects_requests_that_break_the_spec() {
    let log = exercise_every_operation().await;
    let patch = log
        .iter()
        .find(|r| r["method"] == "PATCH")
        .cloned()
        .expect("a PATCH was sent");
    let mut bad_patch = patch.clone();
    bad_patch["body"]["emails"] = json!("ann@example.com"); // an array in the spec
    let mut string_int = patch.clone();
    string_int["body"] = json!({"visible_to": "3"}); // v2 does not coerce strings to numbers
    let mut put = patch.clone();
    put["method"] = json!("PUT"); // v1's verb; v2 only has PATCH
    let list = log
        .iter()
        .find(|r| r["path"] == "/api/v2/persons" && r["method"] == "GET")
        .cloned()
        .unwrap();
    let mut bad_sort = list.clone();
    bad_sort["query"] = json!("sort_by=updated&limit=500");
    let mut unknown_param = list.clone();
    unknown_param["query"] = json!("limit=500&since=2026-01-01T00:00:00Z");
    let mut query_token = list.clone();
    query_token["auth"] = json!("api_token query");
    let mut bad_webhook = log
        .iter()
        .find(|r| r["path"] == "/api/v1/webhooks" && r["method"] == "POST")
        .cloned()
        .unwrap();
    bad_webhook["body"]["event_action"] = json!("updated"); // a v1 action name
    // Properties the schemas do not declare: at the top level, inside an array item, and a
    // v1 spelling (`email`) next to the v2 one.
    let mut undeclared_top = patch.clone();
    undeclared_top["body"]["nickname"] = json!("Ann");
    let mut undeclared_nested = patch.clone();
    undeclared_nested["body"]["emails"] =
        json!([{"value": "a@example.com", "primary": true, "kind": "work"}]);
    let create = log
        .iter()
        .find(|r| r["path"] == "/api/v2/persons" && r["method"] == "POST")
        .cloned()
        .expect("a create was sent");
    let mut v1_spelling = create.clone();
    v1_spelling["body"]["email"] = json!("a@example.com");
    let bad = vec![
        undeclared_top,
        undeclared_nested,
        v1_spelling,
        bad_patch,
        string_int,
        put,
        bad_sort,
        unknown_param,
        query_token,
        bad_webhook,
    ];
    let (code, out) = validate(&bad, "bad");
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("0 passed, {} failed", bad.len())),
        "{out}"
    );
    for pointer in ["/nickname", "/emails/0/kind", "/email"] {
        assert!(
            out.lines()
                .any(|l| l.contains("body properties not in the spec") && l.ends_with(pointer)),
            "{pointer} is not reported as undeclared:\n{out}"
        );
    }
    // A good request among bad ones still passes, and the run still fails.
    let mut mixed = bad.clone();
    mixed.push(patch);
    let (code, out) = validate(&mixed, "mixed");
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("1 passed, {} failed", bad.len())),
        "{out}"
    );
}

/// The token costs the client counts are the specs' `x-token-cost`.
#[test]
fn token_costs_match_the_specs() {
    let dir = specs_dir();
    let specs: Vec<String> = ["openapi-v2.yaml", "openapi-v1.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect();
    for (op, cost) in TOKEN_COSTS {
        let needle = format!("operationId: {op}");
        let found = specs.iter().find_map(|text| {
            let lines: Vec<&str> = text.lines().collect();
            let at = lines.iter().position(|l| l.trim() == needle)?;
            let indent = lines[at].len() - lines[at].trim_start().len();
            // The operation's keys share the indentation of operationId.
            let block = |range: &mut dyn Iterator<Item = usize>| {
                range
                    .map(|i| lines[i])
                    .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
                    .find_map(|l| {
                        l.trim()
                            .strip_prefix("x-token-cost:")
                            .map(|v| v.trim().to_string())
                    })
            };
            block(&mut (0..at).rev()).or_else(|| block(&mut (at + 1..lines.len())))
        });
        assert_eq!(
            found.as_deref(),
            Some(cost.to_string().as_str()),
            "x-token-cost of {op}"
        );
    }
}

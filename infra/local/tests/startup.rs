//! Black-box: what the runner does with its settings and where its log goes.
//!
//! - A setting the runner cannot use stops the start-up with an error naming it.
//! - The settings it can use with the simulator (the HubSpot app secret and portal) are honoured.
//! - Its log is plain text without escape codes when stdout is not a terminal, one JSON object
//!   per line with `LOG_FORMAT=json`, and holds no secret in either.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{LocalProcess, eventually, free_port, runner_command, temp_dir};
use serde_json::{Value, json};

/// Runs the runner with `env` and expects it to refuse to start; returns what it printed.
fn refused(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut child = runner_command(dir, free_port(), env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start contact-sync-local");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the runner started with {env:?} instead of refusing the settings");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !status.success(),
        "exit status {status} for {env:?}: {text}"
    );
    text
}

/// Environment variables of one case.
type Env<'a> = &'a [(&'a str, &'a str)];

#[test]
fn settings_the_runner_cannot_use_stop_the_start_up() {
    let dir = temp_dir("startup-refused");
    let cases: &[(Env, &[&str])] = &[
        // The simulator stands in for HubSpot: it cannot talk to another API base.
        (
            &[("HUBSPOT_API_BASE", "https://api.hubapi.com")],
            &["HUBSPOT_API_BASE", "simulator stands in for HubSpot"],
        ),
        (
            &[
                ("PIPEDRIVE_CLIENT_ID", "id"),
                ("PIPEDRIVE_CLIENT_SECRET", "s"),
            ],
            &["PIPEDRIVE_CLIENT_ID, PIPEDRIVE_CLIENT_SECRET", "Pipedrive"],
        ),
        // No simulator and no token: HubSpot is not synced, so its settings would do nothing.
        (
            &[
                ("CRM_SIMULATOR", "off"),
                ("HUBSPOT_CLIENT_SECRET", "s"),
                ("HUBSPOT_PORTAL_ID", "1"),
            ],
            &["HUBSPOT_CLIENT_SECRET, HUBSPOT_PORTAL_ID", "not synced"],
        ),
        (
            &[("CRM_SIMULATOR", "off"), ("SIM_PORT", "4000")],
            &["SIM_PORT", "no CRM simulator runs"],
        ),
        // A misspelt name.
        (
            &[("HUBSPOT_ACCES_TOKEN", "t")],
            &["unknown setting", "HUBSPOT_ACCES_TOKEN"],
        ),
        (&[("LOG_FORMAT", "yaml")], &["LOG_FORMAT"]),
        (&[("PORT", "http")], &["PORT=http"]),
    ];
    for (env, expected) in cases {
        let text = refused(&dir, env);
        for needle in *expected {
            assert!(
                text.contains(needle),
                "{env:?}: the error does not say {needle:?}:\n{text}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// hex(SHA-256(secret + body)): HubSpot's v1 webhook signature.
fn v1_signature(secret: &str, body: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{secret}{body}").as_bytes()))
}

#[tokio::test]
async fn the_hubspot_app_secret_and_portal_given_are_the_simulated_ones() {
    let dir = temp_dir("startup-honoured");
    let http = common::http();
    let secret = "user-given-client-secret";
    let p = LocalProcess::start(
        &dir,
        &[
            ("HUBSPOT_CLIENT_SECRET", secret),
            ("HUBSPOT_PORTAL_ID", "4242"),
            ("POLL_INTERVAL_SECS", "3600"),
        ],
    )
    .await;
    let created: Value = http
        .post(format!("{}/contacts", p.url))
        .json(&json!({"email": "given@example.com", "first_name": "Given"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let hs_id = eventually(10, "the contact linked in HubSpot", || {
        let (http, url) = (http.clone(), format!("{}/contacts/{id}", p.url));
        async move {
            let c: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            c["sync"]["crms"]["hubspot"]["external_id"]
                .as_str()
                .map(str::to_owned)
        }
    })
    .await;

    // A HubSpot UI edit: the simulator signs its webhook with the given secret, for the given
    // portal, and the runner accepts it (the poll is an hour away).
    let r = http
        .patch(format!("{}/_sim/hubspot/contacts/{hs_id}", p.sim))
        .json(&json!({"properties": {"lastname": "Honoured"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    eventually(10, "the HubSpot edit in the app", || {
        let (http, url) = (http.clone(), format!("{}/contacts/{id}", p.url));
        async move {
            let c: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (c["last_name"] == "Honoured").then_some(())
        }
    })
    .await;

    // The same webhook signed with the given secret passes; signed with the simulator's default
    // secret, or for the simulator's default portal, it does not.
    let event = |portal: u64| {
        json!([{"eventId": 77, "subscriptionId": 1, "portalId": portal, "appId": 1,
                "occurredAt": 1767225600000u64, "subscriptionType": "contact.propertyChange",
                "attemptNumber": 0, "objectId": hs_id.parse::<u64>().unwrap(),
                "propertyName": "lastname", "propertyValue": "Honoured",
                "changeSource": "CRM_UI", "sourceId": "userId:1"}])
        .to_string()
    };
    let send = |body: String, key: &str| {
        let sig = v1_signature(key, &body);
        let req = http
            .post(format!("{}/webhooks/hubspot", p.url))
            .header("content-type", "application/json")
            .header("x-hubspot-signature", sig)
            .header("x-hubspot-signature-version", "v1")
            .body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(event(4242), secret).await, 200);
    assert_eq!(send(event(4242), "sim-hubspot-secret").await, 401);
    assert_eq!(
        send(event(62515), secret).await,
        401,
        "the default portal: no tenant's secret verifies it"
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Secrets of the log tests, each distinct: none may appear in a log line or a response body.
const SECRETS: [(&str, &str); 4] = [
    ("API_KEY", "api-key-9f3c1d"),
    ("APP_WEBHOOK_SECRET", "app-hook-secret-51be"),
    ("HUBSPOT_CLIENT_SECRET", "hubspot-client-secret-c0de"),
    ("PIPEDRIVE_WEBHOOK_PASSWORD", "pipedrive-hook-password-e9"),
];

/// How the runner reaches the CRMs in a log test.
#[derive(Clone, Copy, PartialEq)]
enum Credentials {
    /// A HubSpot private-app token and a Pipedrive API token.
    Static,
    /// HubSpot OAuth (a refresh token; access tokens issued by the simulator, refreshed when it
    /// expires them) and a Pipedrive OAuth access token.
    OAuth,
}

impl Credentials {
    fn secrets(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Credentials::Static => &[
                ("HUBSPOT_ACCESS_TOKEN", "pat-na1-hubspot-token-7a2e"),
                ("PIPEDRIVE_API_TOKEN", "pipedrive-api-token-44d1"),
            ],
            Credentials::OAuth => &[
                ("HUBSPOT_REFRESH_TOKEN", "hubspot-refresh-token-3b9f"),
                ("PIPEDRIVE_ACCESS_TOKEN", "pipedrive-oauth-token-8c21"),
            ],
        }
    }
}

/// Sends `req` and keeps its status and body.
async fn call(req: reqwest::RequestBuilder, responses: &mut String) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    responses.push_str(&text);
    responses.push('\n');
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A runner process, killed if the test fails before stopping it.
struct Stopped(Option<std::process::Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the runner against a separate simulator with real-looking credentials (so the clients
/// use them as they would with the real CRMs), drives a sync both ways, a CRM outage and its
/// recovery, (with OAuth) access tokens expired under it, and requests refused for wrong
/// secrets; then checks that no secret is in the log or in any response.
async fn drive_and_read_log(name: &str, creds: Credentials, extra: &[(&str, &str)]) -> String {
    let dir = temp_dir(name);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let secrets: Vec<(&str, &str)> = SECRETS.iter().chain(creds.secrets()).copied().collect();
    let secret = |k: &str| secrets.iter().find(|(n, _)| *n == k).unwrap().1;
    let mut cfg = crm_sim::SimConfig::default();
    cfg.hubspot.client_secret = secret("HUBSPOT_CLIENT_SECRET").into();
    cfg.hubspot.webhook_url = Some(format!("{url}/webhooks/hubspot"));
    let client_id = "hubspot-client-id-0421";
    match creds {
        Credentials::Static => {
            cfg.hubspot.access_tokens = vec![secret("HUBSPOT_ACCESS_TOKEN").into()];
            cfg.pipedrive.api_tokens = vec![secret("PIPEDRIVE_API_TOKEN").into()];
        }
        Credentials::OAuth => {
            cfg.hubspot.access_tokens = Vec::new();
            cfg.hubspot.client_id = client_id.into();
            cfg.hubspot.refresh_tokens = vec![secret("HUBSPOT_REFRESH_TOKEN").into()];
            cfg.pipedrive.api_tokens = Vec::new();
            cfg.pipedrive.oauth_tokens = vec![secret("PIPEDRIVE_ACCESS_TOKEN").into()];
        }
    }
    let sim = crm_sim::start(cfg.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sim_url = sim.base_url();
    let portal = cfg.hubspot.portal_id.to_string();
    let app_id = cfg.hubspot.app_id.to_string();
    let mut env: Vec<(&str, &str)> = secrets.clone();
    env.extend([
        ("HUBSPOT_API_BASE", sim_url.as_str()),
        ("HUBSPOT_PORTAL_ID", portal.as_str()),
        ("HUBSPOT_APP_ID", app_id.as_str()),
        ("PIPEDRIVE_API_BASE", sim_url.as_str()),
        ("PIPEDRIVE_WEBHOOK_USER", "hook-user"),
        ("POLL_INTERVAL_SECS", "1"),
        // Everything our code logs, at every level.
        (
            "RUST_LOG",
            "info,shared=trace,contact_sync_local=trace,crm_sim=trace",
        ),
    ]);
    if creds == Credentials::OAuth {
        env.push(("HUBSPOT_CLIENT_ID", client_id));
    }
    env.extend_from_slice(extra);
    let log_path = dir.join("run.log");
    let mut cmd = runner_command(&dir.join("data"), port, &env);
    cmd.stdout(std::fs::File::create(&log_path).unwrap());
    let mut child = Stopped(Some(cmd.spawn().expect("start contact-sync-local")));

    let client = reqwest::Client::new();
    let mut responses = String::new();
    eventually(30, "the runner's /health", || {
        let r = client.get(format!("{url}/health")).send();
        async move { r.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    let auth = format!("Bearer {}", secret("API_KEY"));
    let contact_is = |pred: fn(&Value) -> bool| {
        let r = client
            .get(format!("{url}/contacts"))
            .header("authorization", &auth)
            .send();
        async move {
            let page: Value = r.await.ok()?.json().await.ok()?;
            page["items"].as_array()?.iter().find(|c| pred(c)).cloned()
        }
    };
    let (status, created) = call(
        client
            .post(format!("{url}/contacts"))
            .header("authorization", &auth)
            .json(
                &json!({"email": "log@example.com", "first_name": "Log", "pronouns": "they/them"}),
            ),
        &mut responses,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let contact = eventually(20, "the contact synced to both CRMs", || {
        contact_is(|c| c["sync"]["badge"] == "synced")
    })
    .await;
    let id = created["id"].as_str().unwrap();
    let hs_id = contact["sync"]["crms"]["hubspot"]["external_id"]
        .as_str()
        .unwrap()
        .to_string();
    if creds == Credentials::OAuth {
        // Every access token issued so far expires: the next call gets a 401 and refreshes.
        client
            .post(format!("{sim_url}/_sim/hubspot/oauth/expire"))
            .send()
            .await
            .unwrap();
    }
    client
        .patch(format!("{sim_url}/_sim/hubspot/contacts/{hs_id}"))
        .json(&json!({"properties": {"lastname": "Logged"}}))
        .send()
        .await
        .unwrap();
    eventually(20, "the HubSpot edit in the app", || {
        contact_is(|c| c["last_name"] == "Logged")
    })
    .await;
    // HubSpot goes down while the contact is edited: the failure is shown, then recovered.
    let outage = |down: bool| {
        client
            .post(format!("{sim_url}/_sim/hubspot/outage"))
            .json(&json!({"down": down}))
            .send()
    };
    outage(true).await.unwrap();
    let (status, _) = call(
        client
            .put(format!("{url}/contacts/{id}"))
            .header("authorization", &auth)
            .json(&json!({"email": "log@example.com", "first_name": "Outage"})),
        &mut responses,
    )
    .await;
    assert_eq!(status, 200);
    eventually(30, "the outage shown on the contact", || {
        contact_is(|c| c["sync"]["badge"] == "error")
    })
    .await;
    outage(false).await.unwrap();
    call(
        client
            .post(format!("{url}/sync"))
            .header("authorization", &auth),
        &mut responses,
    )
    .await;
    eventually(30, "the contact synced again", || {
        contact_is(|c| c["first_name"] == "Outage" && c["sync"]["badge"] == "synced")
    })
    .await;
    for path in [
        "/contacts",
        "/sync/status",
        "/conflicts",
        "/setup/pronouns-status",
    ] {
        let (status, _) = call(
            client
                .get(format!("{url}{path}"))
                .header("authorization", &auth),
            &mut responses,
        )
        .await;
        assert_eq!(status, 200, "{path}");
    }
    // Refused requests that carry (wrong) secrets.
    let (status, _) = call(
        client
            .get(format!("{url}/contacts"))
            .header("authorization", "Bearer wrong-key-0000"),
        &mut responses,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        client
            .post(format!("{url}/webhooks/pipedrive"))
            .basic_auth("hook-user", Some("wrong-password-1111"))
            .body("{}"),
        &mut responses,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        client
            .post(format!("{url}/webhooks/app"))
            .header("x-contact-sync-tenant", "default")
            .header("x-webhook-signature", "wrong-signature-2222")
            .header("content-type", "application/json")
            .body(r#"{"events": []}"#),
        &mut responses,
    )
    .await;
    assert_eq!(status, 401);
    if creds == Credentials::OAuth {
        let stats = common::get_json(&client, format!("{sim_url}/_sim/hubspot/stats")).await;
        assert!(
            stats["refreshes"].as_u64() >= Some(2),
            "the access token was not refreshed after it expired: {stats}"
        );
    }

    // Stopped gracefully (SIGTERM), so the log is complete.
    let mut runner = child.0.take().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &runner.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || runner.wait()).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    // The data folder it created, and the store in it, are its user's only.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let data = dir.join("data");
        assert_eq!(mode(&data), 0o700, "the data folder's mode");
        for entry in std::fs::read_dir(&data).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}'s mode", path.display());
        }
    }
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
    for (name, value) in secrets.iter().chain(&[
        ("a wrong API key", "wrong-key-0000"),
        ("a wrong password", "wrong-password-1111"),
        ("a wrong signature", "wrong-signature-2222"),
        // Every access token the simulated HubSpot issues starts so.
        ("an issued OAuth access token", "sim-oauth-"),
    ]) {
        assert!(!log.contains(value), "the log holds {name}:\n{log}");
        assert!(
            !responses.contains(value),
            "a response holds {name}:\n{responses}"
        );
    }
    log
}

#[tokio::test]
async fn a_log_to_a_file_is_plain_text_without_secrets() {
    let log = drive_and_read_log("log-text", Credentials::Static, &[]).await;
    assert!(
        log.contains("contact-sync-local is up"),
        "no start-up line:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log that is not a terminal:\n{log}"
    );
    assert!(log.lines().count() > 3, "{log}");
}

#[tokio::test]
async fn log_format_json_writes_one_object_per_line_without_secrets() {
    let log = drive_and_read_log("log-json", Credentials::Static, &[("LOG_FORMAT", "json")]).await;
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(v.is_object(), "{line}");
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages.iter().any(|m| m == "contact-sync-local is up"),
        "{log}"
    );
}

#[tokio::test]
async fn oauth_refreshes_and_crm_failures_leave_no_secret_in_the_log_or_a_response() {
    let log = drive_and_read_log("log-oauth", Credentials::OAuth, &[]).await;
    assert!(log.contains("contact-sync-local is up"), "{log}");
}

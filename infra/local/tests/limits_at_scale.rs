//! Black-box: the runner with eight workers (`SYNC_WORKERS=8`) syncing hundreds of new contacts
//! and a Sync Now backfill at once, against simulators with the real accounts' limits (HubSpot
//! 100 per 10 s and 5 searches per second, Pipedrive's OAuth app 80 per 2 s and 10 searches per
//! 2 s). The workers share their limits through the store, so the simulators answer no request
//! with a 429; every contact ends with one record per CRM. Our own daily Pipedrive budget,
//! kept in the store, holds across a restart; a portal in another time zone pauses until its
//! own midnight; and one record HubSpot refuses fails alone in a batch of 100.

mod common;

use std::time::{Duration, Instant};

use common::{LocalProcess, eventually, get_json, temp_dir};
use serde_json::{Value, json};

/// Contacts of the scale run (`SCALE_CONTACTS` to change it: 1,000 took 223 s in a debug
/// build, bound by Pipedrive's 10 searches per 2 s; the suite runs fewer).
fn contacts() -> usize {
    std::env::var("SCALE_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Creates `n` app contacts, sixteen requests at a time.
async fn create_contacts(http: &reqwest::Client, url: &str, prefix: &str, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let http = http.clone();
        let url = url.to_string();
        let email = format!("{prefix}-{i}@example.com");
        pending.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/contacts"))
                .json(&json!({"email": email, "first_name": format!("Scale {i}")}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }));
        if pending.len() == 16 {
            for p in pending.drain(..) {
                p.await.unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap();
    }
}

/// Live records per email in a simulated CRM.
async fn emails(http: &reqwest::Client, p: &LocalProcess, provider: &str) -> Vec<String> {
    let (url, list) = match provider {
        "hubspot" => (format!("{}/_sim/hubspot/contacts", p.sim), "results"),
        _ => (format!("{}/_sim/pipedrive/persons", p.sim), "data"),
    };
    get_json(http, url).await[list]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["archived"] != true && r["is_deleted"] != true)
        .map(|r| {
            let e = if provider == "hubspot" {
                &r["properties"]["email"]
            } else {
                &r["emails"][0]["value"]
            };
            e.as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[tokio::test]
async fn eight_workers_sync_hundreds_of_contacts_with_no_request_over_the_limits() {
    let n = contacts();
    let dir = temp_dir("scale");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("SYNC_WORKERS", "8")]).await;
    let started = Instant::now();
    create_contacts(&http, &p.url, "scale", n).await;
    let created = started.elapsed();
    start_sync_now(&http, &p).await;
    eventually(600, "every contact synced to both CRMs", || async {
        let status = get_json(&http, format!("{}/sync/status", p.url)).await;
        let done = status["crms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["synced_contacts"] == n);
        (done && status["queue_depth"] == 0).then_some(())
    })
    .await;
    let (hs, pd) = p.settled().await;
    let took = started.elapsed();
    println!(
        "{n} contacts: created in {created:?}, synced to both CRMs in {took:?}; \
         HubSpot {} requests ({} searches), Pipedrive {} requests, {} tokens",
        hs["requests"], hs["search_calls"], pd["requests"], pd["tokens_used"]
    );
    assert_eq!(
        hs["rate_limited"], 0,
        "HubSpot saw no request over its limits: {hs}"
    );
    assert_eq!(
        pd["rate_limited"], 0,
        "Pipedrive saw no request over its limits: {pd}"
    );
    for provider in ["hubspot", "pipedrive"] {
        let mut all = emails(&http, &p, provider).await;
        let total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(
            (total, all.len()),
            (n, n),
            "one {provider} record per contact"
        );
    }
    let status = get_json(&http, format!("{}/sync/status", p.url)).await;
    assert_eq!(status["dlq_depth"], 0, "{status}");
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The simulated Pipedrive's stats once its request count has stood still for a second (jobs
/// deferred past a spent budget stay queued, so the queue never empties).
async fn pipedrive_at_rest(http: &reqwest::Client, p: &LocalProcess) -> Value {
    let mut last = get_json(http, format!("{}/_sim/pipedrive/stats", p.sim)).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = get_json(http, format!("{}/_sim/pipedrive/stats", p.sim)).await;
        if now["requests"] == last["requests"] {
            return now;
        }
        last = now;
    }
}

/// Presses Sync Now.
async fn start_sync_now(http: &reqwest::Client, p: &LocalProcess) {
    let r = http.post(format!("{}/sync", p.url)).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Presses Sync Now and waits until it is done.
async fn sync_now(http: &reqwest::Client, p: &LocalProcess) {
    start_sync_now(http, p).await;
    eventually(60, "Sync Now done", || async {
        let status = get_json(http, format!("{}/sync/status", p.url)).await;
        (status["sync_now"]["phase"] == "done").then_some(())
    })
    .await;
}

/// One CRM's part of `GET /sync/status`.
fn crm<'a>(status: &'a Value, provider: &str) -> &'a Value {
    status["crms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == provider)
        .unwrap()
}

fn pipedrive_paused(status: &Value) -> bool {
    crm(status, "pipedrive")["paused_until"].is_string()
}

/// Sends a simulator control request (`method` `/_sim/{path}`), which must succeed.
async fn control(p: &LocalProcess, method: reqwest::Method, path: &str, body: Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}/_sim/{path}", p.sim))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

/// `PIPEDRIVE_DAILY_TOKEN_BUDGET` counts every worker's spend in the store: once it is spent,
/// a restarted runner (a fresh simulator, the same data folder) creates nothing more in
/// Pipedrive today, not even for a Sync Now, and the contacts wait as pending instead of
/// failing.
#[tokio::test]
async fn our_daily_pipedrive_budget_holds_across_a_restart() {
    let dir = temp_dir("budget");
    let http = common::http();
    let env = [
        ("SYNC_WORKERS", "8"),
        ("PIPEDRIVE_DAILY_TOKEN_BUDGET", "300"),
    ];
    let p = LocalProcess::start(&dir, &env).await;
    create_contacts(&http, &p.url, "budget", 20).await;
    eventually(120, "the Pipedrive budget spent", || async {
        let status = get_json(&http, format!("{}/sync/status", p.url)).await;
        pipedrive_paused(&status).then_some(())
    })
    .await;
    let before = pipedrive_at_rest(&http, &p).await;
    let spent = before["tokens_used"].as_u64().unwrap();
    let created = before["calls_by_endpoint"]["POST /api/v2/persons"]
        .as_u64()
        .unwrap_or(0);
    assert!(spent <= 300, "at most the budget: {before}");
    assert!(
        (1..20).contains(&created),
        "some created before the budget ran out: {before}"
    );
    p.stop();

    // The simulators start afresh; the store (links, queue, limits) is the one from before.
    // Sync Now's backfill of Pipedrive waits for the budget's reset, and says so.
    let p = LocalProcess::start(&dir, &env).await;
    start_sync_now(&http, &p).await;
    let progress = eventually(60, "Sync Now waiting for the budget", || async {
        let status = get_json(&http, format!("{}/sync/status", p.url)).await;
        let progress = status["sync_now"].clone();
        (progress["running"] == false && progress["started_at"].is_string()).then_some(progress)
    })
    .await;
    assert_eq!(
        progress["phase"], "waiting for the daily budget of pipedrive",
        "{progress}"
    );
    let wait = &progress["waiting"][0];
    assert_eq!(wait["provider"], "pipedrive", "{progress}");
    assert!(wait["contacts"].as_u64().unwrap() >= 1, "{progress}");
    assert!(wait["resume_at"].is_string(), "{progress}");
    assert_eq!(progress["errors"], json!([]), "{progress}");
    let after = pipedrive_at_rest(&http, &p).await;
    assert!(
        spent + after["tokens_used"].as_u64().unwrap() <= 300,
        "the budget held across the restart: {spent} before, {after} after"
    );
    assert_eq!(
        after["calls_by_endpoint"]["POST /api/v2/persons"],
        Value::Null,
        "no Pipedrive create after the restart: {after}"
    );
    let status = get_json(&http, format!("{}/sync/status", p.url)).await;
    assert!(pipedrive_paused(&status), "{status}");
    assert_eq!(status["dlq_depth"], 0, "waiting, not failed: {status}");
    println!(
        "budget 300: {spent} tokens before the restart, {} after",
        after["tokens_used"]
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A HubSpot portal in Tokyo: when its daily limit is spent, HubSpot pauses until midnight in
/// Tokyo (15:00 UTC), not at midnight UTC, and the contact waits as pending.
#[tokio::test]
async fn a_spent_hubspot_day_pauses_until_the_portal_s_midnight() {
    let dir = temp_dir("portal-zone");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("SIM_HUBSPOT_TIME_ZONE", "Asia/Tokyo")]).await;
    p.settled().await;
    // Other apps of the portal spend the rest of today's requests.
    control(
        &p,
        reqwest::Method::PUT,
        "hubspot/config/rate-limit",
        json!({"daily_limit": 1}),
    )
    .await;
    create_contacts(&http, &p.url, "tokyo", 1).await;
    let paused = eventually(60, "HubSpot paused", || async {
        let status = get_json(&http, format!("{}/sync/status", p.url)).await;
        crm(&status, "hubspot")["paused_until"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    let paused: chrono::DateTime<chrono::Utc> = paused.parse().unwrap();
    // Tokyo keeps UTC+9 all year: its midnight is the next 15:00 UTC.
    let now = chrono::Utc::now();
    let mut tokyo_midnight = now.date_naive().and_hms_opt(15, 0, 0).unwrap().and_utc();
    if tokyo_midnight <= now {
        tokyo_midnight += chrono::Duration::days(1);
    }
    assert_eq!(paused, tokyo_midnight, "the portal's midnight, not UTC's");
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hundred contacts made while HubSpot is down (their jobs fail three times and wait in the
/// DLQ), then Sync Now: the backfill's batch of 100 holds one email HubSpot refuses. The other
/// 99 are created and linked; the refused one shows HubSpot's message on its badge.
#[tokio::test]
async fn one_refused_record_in_a_batch_of_a_hundred_fails_alone() {
    let dir = temp_dir("poison");
    let http = common::http();
    let p = LocalProcess::start(&dir, &[("SYNC_WORKERS", "8")]).await;
    let poison = "poison-42@example.com";
    let post = reqwest::Method::POST;
    control(
        &p,
        post.clone(),
        "hubspot/config/refuse-email",
        json!({"email": poison}),
    )
    .await;
    control(&p, post.clone(), "hubspot/outage", json!({"down": true})).await;
    create_contacts(&http, &p.url, "poison", 100).await;
    eventually(120, "every HubSpot job failed for good", || async {
        let status = get_json(&http, format!("{}/sync/status", p.url)).await;
        (status["dlq_depth"] == 100 && status["queue_depth"] == 0).then_some(())
    })
    .await;
    control(&p, post, "hubspot/outage", json!({"down": false})).await;
    let before = get_json(&http, format!("{}/_sim/hubspot/stats", p.sim)).await;
    sync_now(&http, &p).await;
    let (after, _) = p.settled().await;
    let hubspot = emails(&http, &p, "hubspot").await;
    assert_eq!(hubspot.len(), 99, "all but the refused one");
    assert!(!hubspot.contains(&poison.to_string()));
    let batch_calls =
        after["batch_calls"].as_u64().unwrap() - before["batch_calls"].as_u64().unwrap();
    assert!(
        batch_calls <= 20,
        "split in halves, not one by one: {batch_calls} batch calls"
    );
    let page = get_json(&http, format!("{}/contacts?limit=100", p.url)).await;
    let contacts = page["items"].as_array().unwrap();
    let badge = |email: &str| {
        contacts
            .iter()
            .find(|c| c["email"] == email)
            .map(|c| c["sync"]["crms"]["hubspot"].clone())
            .unwrap()
    };
    let bad = badge(poison);
    assert_eq!(bad["status"], "error", "{bad}");
    assert!(
        bad["last_error"]
            .as_str()
            .unwrap()
            .contains("Email address poison-42@example.com is invalid"),
        "HubSpot's message on the badge: {bad}"
    );
    let good = badge("poison-41@example.com");
    assert_eq!(good["status"], "synced", "{good}");
    println!(
        "99 of 100 linked in {batch_calls} batch calls; the refused one says {}",
        bad["last_error"]
    );
    p.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

//! Backfill: the first sync of N app contacts into both simulators at their real limits
//! (HubSpot 100 requests per 10 s and 5 searches per second; Pipedrive's OAuth 80 requests
//! per 2 s, as the local runner connects), through the release runner, black-box.
//!
//! The app has its contacts before any CRM is connected: a first run of the runner without
//! CRMs takes them in over `POST /contacts`; a second run on the same data connects both
//! simulated CRMs and presses Sync Now. The figures come from the simulators' own counters
//! (`/_sim/*/stats`), so the table can be checked against them.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Figure;
use crate::runner::{Runner, Scratch, until_every};

/// Pipedrive's OAuth burst limit (requests per 2 s), HubSpot's (per 10 s).
const PIPEDRIVE_PER_2S: f64 = 80.0;
const HUBSPOT_PER_10S: f64 = 100.0;
/// A company whose day holds the whole backfill (30,000 tokens a seat on the base plan:
/// 4 seats).
const DAILY_TOKENS: u64 = 120_000;

pub struct Backfill {
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

/// Takes `n` contacts into the app (no CRM connected yet), 32 requests in flight.
pub async fn seed(bin: &std::path::Path, dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let runner = Runner::start(bin, dir, &[("CRM_SIMULATOR", "off".into())]).await?;
    let (http, app) = (runner.http.clone(), runner.app.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        if tasks.len() >= 32
            && let Some(r) = tasks.join_next().await
        {
            r??;
        }
        let (http, url) = (http.clone(), format!("{app}/contacts"));
        tasks.spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(crate::runner::KEY)
                .json(&json!({"email": format!("backfill{i}@example.com"),
                        "first_name": "Back", "last_name": format!("Fill{i}"),
                        "phone": format!("+1555{i:07}")}))
                .send()
                .await?;
            ensure!(
                res.status().is_success(),
                "POST /contacts: {}",
                res.status()
            );
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

pub async fn run(bin: &std::path::Path, n: usize, workers: usize) -> anyhow::Result<Backfill> {
    let scratch = Scratch::new("backfill");
    seed(bin, &scratch.0, n).await.context("seeding the app")?;

    let runner = Runner::start(
        bin,
        &scratch.0,
        &[
            ("SYNC_WORKERS", workers.to_string()),
            ("PIPEDRIVE_DAILY_TOKEN_BUDGET", DAILY_TOKENS.to_string()),
        ],
    )
    .await?;
    runner
        .sim_send(
            Method::PUT,
            "/_sim/pipedrive/config/rate-limit",
            &json!({"daily_token_budget": DAILY_TOKENS}),
        )
        .await?;
    // Connecting reads fields and registers webhooks: not part of the backfill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    runner
        .sim_send(Method::DELETE, "/_sim/hubspot/stats", &Value::Null)
        .await?;
    runner
        .sim_send(Method::POST, "/_sim/pipedrive/stats/reset", &json!({}))
        .await?;

    let started = Instant::now();
    runner.post("/sync", &json!({})).await?;
    let limit = Duration::from_secs_f64(n as f64 / 10.0 + 120.0);
    until_every(
        "the backfill",
        limit,
        Duration::from_millis(100),
        || async {
            let s = runner.get("/sync/status").await?;
            let done = s["sync_now"]["running"] == false
                && s["crms"]
                    .as_array()
                    .is_some_and(|c| c.iter().all(|c| c["synced_contacts"] == n));
            Ok(done)
        },
    )
    .await?;
    let wall = started.elapsed().as_secs_f64();

    let hs = runner.sim_get("/_sim/hubspot/stats").await?;
    let pd = runner.sim_get("/_sim/pipedrive/stats").await?;
    let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0) as f64;
    let (hs_requests, pd_requests) = (count(&hs, "requests"), count(&pd, "requests"));
    let pd_tokens = count(&pd, "tokens_used");
    let rate_limited = count(&hs, "rate_limited") + count(&pd, "rate_limited");
    let status = runner.get("/sync/status").await?;
    ensure!(
        status["sync_now"]["errors"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "the backfill reported errors: {}",
        status["sync_now"]["errors"]
    );

    // Checked against the simulators' own records: each app contact in each CRM exactly once.
    let emails = |records: &[Value], email: &dyn Fn(&Value) -> Option<String>| {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for r in records {
            if let Some(e) = email(r) {
                *seen.entry(e.to_ascii_lowercase()).or_default() += 1;
            }
        }
        seen
    };
    let hs_records = runner.sim_get("/_sim/hubspot/contacts").await?;
    let pd_records = runner.sim_get("/_sim/pipedrive/persons").await?;
    let empty = Vec::new();
    let hs_emails = emails(hs_records["results"].as_array().unwrap_or(&empty), &|c| {
        c["properties"]["email"].as_str().map(str::to_owned)
    });
    let pd_emails = emails(pd_records["data"].as_array().unwrap_or(&empty), &|p| {
        p["emails"].as_array().and_then(|es| {
            es.iter()
                .find(|e| e["primary"] == true)
                .or(es.first())
                .and_then(|e| e["value"].as_str().map(str::to_owned))
        })
    });
    for (crm, seen) in [("HubSpot", &hs_emails), ("Pipedrive", &pd_emails)] {
        let missing = (0..n)
            .filter(|i| !seen.contains_key(&format!("backfill{i}@example.com")))
            .count();
        let twice: Vec<_> = seen.iter().filter(|(_, k)| **k > 1).collect();
        ensure!(
            missing == 0 && twice.is_empty() && seen.len() == n,
            "{crm} after the backfill: {} records, {missing} contacts missing, twice: {twice:?}",
            seen.len()
        );
    }

    // The least either CRM allows: Pipedrive creates one person a request (and lists its
    // persons at least once); HubSpot upserts 100 a request.
    let pipedrive_bound = (n as f64 + 1.0) / (PIPEDRIVE_PER_2S / 2.0);
    let hubspot_bound = (n as f64 / 100.0).ceil() / (HUBSPOT_PER_10S / 10.0);
    let bound = pipedrive_bound.max(hubspot_bound);
    let figures = vec![
        Figure::lower(
            format!("backfill {n}: wall time (bound: Pipedrive 80/2 s)"),
            wall,
            "s",
            bound,
        ),
        Figure::lower(
            format!("backfill {n}: HubSpot requests per 100 contacts"),
            hs_requests / (n as f64 / 100.0),
            "req",
            1.05,
        ),
        Figure::lower(
            format!("backfill {n}: Pipedrive tokens per contact"),
            pd_tokens / n as f64,
            "tok",
            5.1,
        ),
        Figure::lower(
            format!("backfill {n}: 429s received (both CRMs)"),
            rate_limited,
            "",
            0.0,
        ),
    ];
    let notes = vec![format!(
        "backfill {n}: HubSpot {hs_requests} requests ({}), Pipedrive {pd_requests} requests, \
         {pd_tokens} tokens ({}); {workers} workers",
        compact(&hs["by_endpoint"]),
        compact(&pd["calls_by_endpoint"]),
    )];
    Ok(Backfill { figures, notes })
}

/// `{"GET /a": 3, ...}` as `GET /a 3, ...`.
fn compact(v: &Value) -> String {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

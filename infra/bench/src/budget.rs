//! A first sync larger than a day's Pipedrive budget: N app contacts, Sync Now, the simulated
//! company's default 30,000 tokens a day (and our client's budget alike). HubSpot takes them
//! all; Pipedrive stops when the day is spent, and Sync Now's status says how many contacts
//! wait, when the backfill resumes (by itself, at the reset) and when the last should be in.
//! The resume itself needs the day to pass; the service's tests cover it on a moved clock.

use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::{Value, json};

use crate::Figure;
use crate::runner::{Runner, Scratch, until_every};

pub async fn run(bin: &std::path::Path, n: usize) -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let scratch = Scratch::new("budget");
    crate::backfill::seed(bin, &scratch.0, n).await?;
    let runner = Runner::start(bin, &scratch.0, &[]).await?;
    let started = Instant::now();
    runner.post("/sync", &json!({})).await?;
    let limit = Duration::from_secs_f64(n as f64 / 10.0 + 120.0);
    let settled = |s: &Value| {
        let p = &s["sync_now"];
        p["running"] == false
            && (p["phase"] == "done" || !p["waiting"].as_array().is_none_or(Vec::is_empty))
    };
    until_every(
        "the backfill to wait for the budget",
        limit,
        Duration::from_millis(200),
        || async { Ok(settled(&runner.get("/sync/status").await?)) },
    )
    .await?;
    let status = runner.get("/sync/status").await?;
    let took = started.elapsed().as_secs_f64();
    let progress = &status["sync_now"];
    let pd = runner.sim_get("/_sim/pipedrive/stats").await?;
    let created = pd["calls_by_endpoint"]["POST /api/v2/persons"]
        .as_u64()
        .unwrap_or(0);
    let listed = pd["calls_by_endpoint"]["GET /api/v2/persons"]
        .as_u64()
        .unwrap_or(0);
    let tokens = pd["tokens_used"].as_u64().unwrap_or(0);
    let wait = &progress["waiting"][0];
    ensure!(
        wait["provider"] == "pipedrive",
        "expected Pipedrive to wait for its budget: {progress}"
    );
    let waiting = wait["contacts"].as_u64().unwrap_or(0);
    ensure!(
        created + waiting == n as u64,
        "{created} created and {waiting} waiting of {n}"
    );
    let figures = vec![
        Figure::lower(
            format!("first sync {n} over a day's budget: Pipedrive tokens per contact"),
            tokens as f64 / created.max(1) as f64,
            "tok",
            5.1,
        ),
        Figure::lower(
            format!("first sync {n} over a day's budget: 429s received"),
            pd["rate_limited"].as_f64().unwrap_or(0.0),
            "",
            0.0,
        ),
    ];
    let notes = vec![format!(
        "first sync of {n} at Pipedrive's 30,000 tokens a day: {created} created in {took:.0} s \
         ({tokens} tokens, the whole company's day, {listed} listing pages incl. the index), \
         then paused; status: {waiting} wait for Pipedrive, resuming at {} by itself, all in \
         by {} (at {} tokens a contact); HubSpot: {} synced",
        wait["resume_at"].as_str().unwrap_or("?"),
        wait["done_by"].as_str().unwrap_or("unknown"),
        wait["cost_per_contact"],
        status["crms"][0]["synced_contacts"],
    )];
    Ok((figures, notes))
}

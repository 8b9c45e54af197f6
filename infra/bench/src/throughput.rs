//! Worker throughput when the CRMs are not the bottleneck: the release runner with 4 sync
//! workers, both simulators' limits off and our clients' paces raised out of the way; N app
//! edits of linked contacts sent at once (32 in flight), timed from the first until everything
//! they set off has settled. Where the time goes: the runner's CPU time per change (from
//! `/proc`), and the CRM requests and webhooks each change made.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use crate::runner::{KEY, Runner, Scratch, send};

/// The runner's user + system CPU time, in ms (Linux `/proc/<pid>/stat`, in clock ticks of
/// 10 ms).
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

pub async fn run(bin: &std::path::Path, n: usize) -> anyhow::Result<Vec<String>> {
    let scratch = Scratch::new("throughput");
    let runner = Runner::start(
        bin,
        &scratch.0,
        &[
            ("SYNC_WORKERS", "4".into()),
            ("HUBSPOT_BURST_LIMIT", "1000000".into()),
            ("PIPEDRIVE_BURST_LIMIT", "1000000".into()),
            ("PIPEDRIVE_DAILY_TOKEN_BUDGET", "0".into()),
        ],
    )
    .await?;
    let off = json!({"burst_limit": null, "daily_limit": null, "search_per_second": null});
    runner
        .sim_send(Method::PUT, "/_sim/hubspot/config/rate-limit", &off)
        .await?;
    let off = json!({"burst_limit": null, "oauth_burst_limit": null,
                     "search_burst_limit": null, "daily_token_budget": null});
    runner
        .sim_send(Method::PUT, "/_sim/pipedrive/config/rate-limit", &off)
        .await?;
    let mut ids = Vec::new();
    for i in 0..n {
        let c = runner
            .post(
                "/contacts",
                &json!({"email": format!("tp{i}@example.com"), "first_name": "Through",
                        "last_name": "Put"}),
            )
            .await?;
        ids.push(c["id"].as_str().context("no id")?.to_string());
    }
    runner.settled(Duration::from_secs(300)).await?;
    let count = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let hs0 = runner.sim_get("/_sim/hubspot/stats").await?;
    let pd0 = runner.sim_get("/_sim/pipedrive/stats").await?;
    let cpu0 = cpu_ms(runner.pid());

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        if tasks.len() >= 32
            && let Some(r) = tasks.join_next().await
        {
            r??;
        }
        let (http, url) = (runner.http.clone(), format!("{}/contacts/{id}", runner.app));
        tasks.spawn(async move {
            let body = json!({"email": format!("tp{i}@example.com"), "first_name": "Through",
                              "last_name": format!("Edit{i}")});
            send(&http, Method::PUT, &url, Some(KEY), &body).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    runner.settled(Duration::from_secs(300)).await?;
    // The settle check waited 6 × 50 ms of quiet after the last request.
    let wall = started.elapsed().as_secs_f64() - 0.3;
    let cpu = cpu0
        .zip(cpu_ms(runner.pid()))
        .map(|(a, b)| (b - a) / n as f64);
    let hs = runner.sim_get("/_sim/hubspot/stats").await?;
    let pd = runner.sim_get("/_sim/pipedrive/stats").await?;
    let last = runner.get(&format!("/contacts/{}", ids[n - 1])).await?;
    ensure!(
        last["last_name"] == format!("Edit{}", n - 1),
        "the last edit is not in the app: {last}"
    );
    let per = |a: &Value, b: &Value, k: &str| (count(b, k) - count(a, k)) / n as f64;
    Ok(vec![format!(
        "worker throughput, 4 workers, CRM limits off: {n} app edits in {wall:.2} s = {:.0} \
         changes/s into both CRMs; per change the runner used {} of CPU (API, ingest of the \
         echoes, workers, SQLite; the simulators run in its process too) and made {:.1} HubSpot \
         and {:.1} Pipedrive requests, and received {:.1} webhooks",
        n as f64 / wall,
        cpu.map_or("unknown".to_string(), |c| format!("{c:.1} ms")),
        per(&hs0, &hs, "requests"),
        per(&pd0, &pd, "requests"),
        per(&hs0, &hs, "webhook_events_delivered") + per(&pd0, &pd, "webhook_deliveries"),
    )])
}

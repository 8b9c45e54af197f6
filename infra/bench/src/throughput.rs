//! Worker throughput when the CRMs are not the bottleneck: the release runner with 4 sync
//! workers, both simulators' limits off and our clients' paces raised out of the way; N app
//! edits of linked contacts sent at once (32 in flight), timed from the first until everything
//! they set off has settled. Where the time goes: the runner's CPU time per change (from
//! `/proc`), the CRM requests and webhooks each change made, and from a second run with the
//! runner's timing events on (`shared::timing`), the jobs' wall time split into CRM calls,
//! holding the store, planning and the rest.

use std::collections::BTreeMap;
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

/// Microseconds the timing events in the runner's log report after byte `from`, by kind:
/// `crm`, `store`, `plan` (within jobs) and `job`.
fn timings(log: &std::path::Path, from: u64) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let text = std::fs::read(log)?;
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains(shared::timing::TARGET)) {
        for kind in ["crm", "store", "plan", "job"] {
            let Some(at) = line.find(&format!("{kind}_us=")) else {
                continue;
            };
            if kind != "job" && !line.contains("job=true") {
                continue;
            }
            let digits: String = line[at + kind.len() + 4..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            *sums.entry(kind).or_default() += digits.parse::<u64>().unwrap_or(0);
        }
    }
    Ok(sums)
}

pub async fn run(bin: &std::path::Path, n: usize) -> anyhow::Result<Vec<String>> {
    let mut notes = vec![once(bin, n, false).await?];
    notes.push(once(bin, n, true).await?);
    Ok(notes)
}

/// One run; with `timed`, the runner's timing events on and the note about where the jobs'
/// time went.
async fn once(bin: &std::path::Path, n: usize, timed: bool) -> anyhow::Result<String> {
    let scratch = Scratch::new(if timed {
        "throughput-timed"
    } else {
        "throughput"
    });
    // The log beside the data folder (the runner makes that one itself, its owner's only).
    let logs = Scratch::new(if timed {
        "throughput-timed-log"
    } else {
        "throughput-log"
    });
    std::fs::create_dir_all(&logs.0)?;
    let log = logs.0.join("runner.log");
    let mut env = vec![
        ("SYNC_WORKERS", "4".to_string()),
        ("HUBSPOT_BURST_LIMIT", "1000000".into()),
        ("PIPEDRIVE_BURST_LIMIT", "1000000".into()),
        ("PIPEDRIVE_DAILY_TOKEN_BUDGET", "0".into()),
    ];
    if timed {
        env.push((
            "RUST_LOG",
            format!("error,{}=trace", shared::timing::TARGET),
        ));
    }
    let runner =
        Runner::start_logging(bin, &scratch.0, &env, timed.then_some(log.as_path())).await?;
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
    let log_from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);

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
    if timed {
        let t = timings(&log, log_from)?;
        let ms = |k: &str| t.get(k).copied().unwrap_or(0) as f64 / 1000.0 / n as f64;
        let (job, crm, store, plan) = (ms("job"), ms("crm"), ms("store"), ms("plan"));
        ensure!(job > 0.0, "no timing events in the runner's log");
        let pct = |x: f64| 100.0 * x / job;
        return Ok(format!(
            "worker time, from a second run with the runner's timing events on ({:.0} \
             changes/s while logging them): per change, its jobs (the app edit's, and the \
             echoes' and checks' it set off) ran {job:.2} ms of wall time across the 4 \
             workers: CRM calls {crm:.2} ms ({:.0}%: the round trip, the simulators' own work \
             included), holding the store {store:.2} ms ({:.0}%), planning {plan:.3} ms \
             ({:.1}%), the rest {:.2} ms ({:.0}%: waiting for the store's lock and the \
             runtime, JSON, mapping)",
            n as f64 / wall,
            pct(crm),
            pct(store),
            pct(plan),
            job - crm - store - plan,
            pct(job - crm - store - plan),
        ));
    }
    Ok(format!(
        "worker throughput, 4 workers, CRM limits off: {n} app edits in {wall:.2} s = {:.0} \
         changes/s into both CRMs; per change the runner used {} of CPU (API, ingest of the \
         echoes, workers, SQLite; the simulators run in its process too) and made {:.1} HubSpot \
         and {:.1} Pipedrive requests, and received {:.1} webhooks",
        n as f64 / wall,
        cpu.map_or("unknown".to_string(), |c| format!("{c:.1} ms")),
        per(&hs0, &hs, "requests"),
        per(&pd0, &pd, "requests"),
        per(&hs0, &hs, "webhook_events_delivered") + per(&pd0, &pd, "webhook_deliveries"),
    ))
}

//! Sync latency of the release local runner with its simulators, black-box over HTTP: app →
//! HubSpot, app → Pipedrive, HubSpot UI edit → app, Pipedrive UI edit → app; p50 / p95 / max
//! per direction, with the given number of sync workers. The simulated HubSpot batches webhook
//! events for 100 ms, as a real delivery window does, and its time counts.
//!
//! Each contact's round (create, HubSpot edit, Pipedrive edit) costs HubSpot about seven
//! requests (each sync reads, writes, and checks its write). Paced, one round a second keeps
//! the run under HubSpot's 100 requests per 10 s: the figures are the service's own latency.
//! Unpaced, the bench itself goes over the CRMs' limits and the pacer holds requests back
//! until their windows have room: those waits are the CRMs' limits, reported beside.

use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Figure;
use crate::runner::{Runner, Scratch, until};

/// The goals: p95 under 250 ms, max under 1 s, in every direction.
const P95_GOAL_MS: f64 = 250.0;
const MAX_GOAL_MS: f64 = 1_000.0;
const WAIT: Duration = Duration::from_secs(30);

/// `(p50, p95, max)` in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| ms(samples[((samples.len() as f64 - 1.0) * p).round() as usize]);
    (
        pct(0.5),
        pct(0.95),
        samples.last().copied().map(ms).unwrap_or_default(),
    )
}

/// The contact's link to `crm` once synced: its record id.
fn synced_id(contact: &Value, crm: &str) -> Option<String> {
    let link = &contact["sync"]["crms"][crm];
    (link["status"] == "synced").then(|| link["external_id"].as_str().unwrap_or_default().into())
}

/// The app's contact `id` has `last_name` `want`.
async fn app_shows(runner: &Runner, id: &str, want: &str) -> anyhow::Result<bool> {
    Ok(runner.get(&format!("/contacts/{id}")).await?["last_name"] == want)
}

/// One run: `n` contacts, `workers` sync workers, a round at most every `pace` (none: as fast
/// as they settle). The samples per direction, and the CRMs' request counts.
pub async fn run(
    bin: &std::path::Path,
    n: usize,
    workers: usize,
    pace: Option<Duration>,
) -> anyhow::Result<Run> {
    let scratch = Scratch::new(&format!("latency-{workers}"));
    let runner = Runner::start(bin, &scratch.0, &[("SYNC_WORKERS", workers.to_string())]).await?;
    let runner = &runner;
    runner.post("/setup/pronouns-fields", &json!({})).await?;

    let mut samples: [Vec<Duration>; 4] = Default::default();
    let started = Instant::now();
    for i in 0..n {
        if let Some(pace) = pace {
            let due = started + pace * i as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let t0 = Instant::now();
        let created = runner
            .post(
                "/contacts",
                &json!({"email": format!("latency{i}@example.com"), "first_name": "Bench",
                        "pronouns": "they/them"}),
            )
            .await?;
        let id = created["id"].as_str().context("no id")?.to_string();
        let (mut hs, mut pd) = (None, None);
        while hs.is_none() || pd.is_none() {
            anyhow::ensure!(t0.elapsed() < WAIT, "contact {i} never synced");
            let c = runner.get(&format!("/contacts/{id}")).await?;
            if hs.is_none() {
                hs = synced_id(&c, "hubspot").map(|x| (t0.elapsed(), x));
            }
            if pd.is_none() {
                pd = synced_id(&c, "pipedrive").map(|x| (t0.elapsed(), x));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ((hs_t, hs_id), (pd_t, pd_id)) = (hs.unwrap_or_default(), pd.unwrap_or_default());
        samples[0].push(hs_t);
        samples[1].push(pd_t);

        // A user edits the contact in HubSpot; the webhook brings it back.
        let want = format!("H{i}");
        let t1 = Instant::now();
        runner
            .sim_send(
                Method::PATCH,
                &format!("/_sim/hubspot/contacts/{hs_id}"),
                &json!({"properties": {"lastname": want}}),
            )
            .await?;
        until("the HubSpot edit", WAIT, || app_shows(runner, &id, &want)).await?;
        samples[2].push(t1.elapsed());

        // Let the HubSpot edit settle in Pipedrive too: shown there, and our worker done with
        // it. A user's edit of the person while our write to it is in flight, or landed but
        // not yet recorded as ours, is a race Pipedrive has no conditional write to settle: the
        // worker then waits a second for our write to be recorded (`Busy`) rather than guess
        // which came last. That is the service being careful, not its latency.
        until("the HubSpot edit in Pipedrive", WAIT, || async {
            let p = runner
                .sim_get(&format!("/_sim/pipedrive/persons/{pd_id}"))
                .await?;
            Ok(p["data"]["last_name"] == want.as_str())
        })
        .await?;
        runner.settled(WAIT).await?;

        // A user edits the person in Pipedrive.
        let want = format!("P{i}");
        let t2 = Instant::now();
        runner
            .sim_send(
                Method::PATCH,
                &format!("/_sim/pipedrive/persons/{pd_id}"),
                &json!({"last_name": want}),
            )
            .await?;
        until("the Pipedrive edit", WAIT, || app_shows(runner, &id, &want)).await?;
        samples[3].push(t2.elapsed());
    }

    let elapsed = started.elapsed().as_secs_f64();
    let hs = runner.sim_get("/_sim/hubspot/stats").await?;
    let pd = runner.sim_get("/_sim/pipedrive/stats").await?;
    Ok(Run {
        workers,
        n,
        paced: pace.is_some(),
        samples,
        hubspot_per_10s: hs["requests"].as_f64().unwrap_or(0.0) / elapsed * 10.0,
        pipedrive_per_2s: pd["requests"].as_f64().unwrap_or(0.0) / elapsed * 2.0,
        searches_per_2s: pd["calls_by_endpoint"]["GET /api/v2/persons/search"]
            .as_f64()
            .unwrap_or(0.0)
            / elapsed
            * 2.0,
    })
}

const DIRECTIONS: [&str; 4] = [
    "app → HubSpot",
    "app → Pipedrive",
    "HubSpot edit → app",
    "Pipedrive edit → app",
];

pub struct Run {
    workers: usize,
    n: usize,
    paced: bool,
    samples: [Vec<Duration>; 4],
    /// The run's average request rates, against HubSpot's 100 per 10 s and Pipedrive's
    /// 80 per 2 s.
    hubspot_per_10s: f64,
    pipedrive_per_2s: f64,
    /// Pipedrive's searches (a create looks for the email first), against 10 per 2 s.
    searches_per_2s: f64,
}

impl Run {
    /// Paced runs as figures against the goals; an unpaced one as notes, with the CRM
    /// request rates that explain its waits.
    pub fn report(self) -> (Vec<Figure>, Vec<String>) {
        let (workers, n) = (self.workers, self.n);
        let mut figures = Vec::new();
        let mut notes = Vec::new();
        let mut unpaced = Vec::new();
        for (name, s) in DIRECTIONS.into_iter().zip(self.samples) {
            let (p50, p95, max) = percentiles(s);
            if self.paced {
                let label = format!("latency {name}, {workers} worker(s)");
                figures.push(Figure::lower(
                    format!("{label}: p95"),
                    p95,
                    "ms",
                    P95_GOAL_MS,
                ));
                figures.push(Figure::lower(
                    format!("{label}: max"),
                    max,
                    "ms",
                    MAX_GOAL_MS,
                ));
                notes.push(format!(
                    "latency {name}, {workers} worker(s), {n} contacts, paced: p50 {p50:.1} ms, \
                     p95 {p95:.1} ms, max {max:.1} ms"
                ));
            } else {
                unpaced.push(format!(
                    "{name} p50 {p50:.0} / p95 {p95:.0} / max {max:.0} ms"
                ));
            }
        }
        if !self.paced {
            notes.push(format!(
                "latency unpaced, {workers} worker(s), {n} contacts: {}. The bench's own load: \
                 HubSpot {:.0} requests per 10 s (limit 100), Pipedrive {:.0} per 2 s (limit \
                 80) and {:.1} searches per 2 s (limit 10) on average, more in bursts: the \
                 waits are the pacer keeping to those limits (no 429s)",
                unpaced.join("; "),
                self.hubspot_per_10s,
                self.pipedrive_per_2s,
                self.searches_per_2s
            ));
        }
        (figures, notes)
    }
}

//! Sync latency of the local runner with its in-process simulators, measured black-box over
//! HTTP: app → HubSpot, app → Pipedrive, HubSpot UI edit → app, Pipedrive UI edit → app.
//! Prints p50 / p95 / max per direction. Not a test: no thresholds, just figures.
//!
//! `cargo build --release -p contact-sync-local && target/release/latency-bench [contacts]`

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

const KEY: &str = "local-dev-key";

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Runner(Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn until<F, Fut>(what: &str, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if f().await? {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("timed out waiting for {what}")
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<28} n={:<4} p50={:>7.1} ms  p95={:>7.1} ms  max={:>7.1} ms",
        samples.len(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.95).as_secs_f64() * 1000.0,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(30);
    let runner_bin = std::env::current_exe()?.with_file_name("contact-sync-local");
    anyhow::ensure!(
        runner_bin.exists(),
        "build contact-sync-local first ({})",
        runner_bin.display()
    );
    let (port, sim_port) = (free_port()?, free_port()?);
    let data = std::env::temp_dir().join(format!("contact-sync-bench-{}", std::process::id()));
    let _runner = Runner(
        Command::new(&runner_bin)
            .env("PORT", port.to_string())
            .env("SIM_PORT", sim_port.to_string())
            .env("CONTACT_SYNC_DATA_DIR", &data)
            .env("POLL_INTERVAL_SECS", "3600")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("starting contact-sync-local")?,
    );
    let app = format!("http://127.0.0.1:{port}");
    let sim = format!("http://127.0.0.1:{sim_port}");
    let http = reqwest::Client::new();
    until("the runner", || {
        let r = http.get(format!("{app}/health")).send();
        async move { Ok(r.await.is_ok_and(|r| r.status().is_success())) }
    })
    .await?;
    http.post(format!("{app}/setup/pronouns-fields"))
        .bearer_auth(KEY)
        .send()
        .await?;

    let (mut to_hubspot, mut to_pipedrive, mut from_hubspot, mut from_pipedrive) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let email = format!("bench{i}@example.com");
        let t0 = Instant::now();
        let created: Value = http
            .post(format!("{app}/contacts"))
            .bearer_auth(KEY)
            .json(&json!({"email": email, "first_name": "Bench", "pronouns": "they/them"}))
            .send()
            .await?
            .json()
            .await?;
        let id = created["id"].as_str().context("no id")?.to_string();
        // Linked in both CRMs = in both CRMs.
        let (mut hs, mut pd) = (None, None);
        while hs.is_none() || pd.is_none() {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "contact {i} never synced"
            );
            let c: Value = http
                .get(format!("{app}/contacts/{id}"))
                .bearer_auth(KEY)
                .send()
                .await?
                .json()
                .await?;
            if hs.is_none() && c["sync"]["crms"]["hubspot"]["status"] == "synced" {
                hs = Some((
                    t0.elapsed(),
                    c["sync"]["crms"]["hubspot"]["external_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ));
            }
            if pd.is_none() && c["sync"]["crms"]["pipedrive"]["status"] == "synced" {
                pd = Some((
                    t0.elapsed(),
                    c["sync"]["crms"]["pipedrive"]["external_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ((hs_t, hs_id), (pd_t, pd_id)) = (hs.unwrap_or_default(), pd.unwrap_or_default());
        to_hubspot.push(hs_t);
        to_pipedrive.push(pd_t);

        // A user edits the contact in HubSpot; the webhook brings it back.
        let t1 = Instant::now();
        http.patch(format!("{sim}/_sim/hubspot/contacts/{hs_id}"))
            .json(&json!({"properties": {"lastname": format!("H{i}")}}))
            .send()
            .await?;
        until("the HubSpot edit", || {
            let r = http
                .get(format!("{app}/contacts/{id}"))
                .bearer_auth(KEY)
                .send();
            let want = format!("H{i}");
            async move { Ok(r.await?.json::<Value>().await?["last_name"] == want.as_str()) }
        })
        .await?;
        from_hubspot.push(t1.elapsed());

        // Let the HubSpot edit settle in Pipedrive too (a user editing the same field in
        // Pipedrive while our write of it is in flight would race with it: Pipedrive has no
        // conditional writes).
        until("the HubSpot edit in Pipedrive", || {
            let r = http
                .get(format!("{sim}/_sim/pipedrive/persons/{pd_id}"))
                .send();
            let want = format!("H{i}");
            async move { Ok(r.await?.json::<Value>().await?["data"]["last_name"] == want.as_str()) }
        })
        .await?;

        // A user edits the person in Pipedrive.
        let t2 = Instant::now();
        http.patch(format!("{sim}/_sim/pipedrive/persons/{pd_id}"))
            .json(&json!({"last_name": format!("P{i}")}))
            .send()
            .await?;
        until("the Pipedrive edit", || {
            let r = http
                .get(format!("{app}/contacts/{id}"))
                .bearer_auth(KEY)
                .send();
            let want = format!("P{i}");
            async move { Ok(r.await?.json::<Value>().await?["last_name"] == want.as_str()) }
        })
        .await?;
        from_pipedrive.push(t2.elapsed());
    }
    println!(
        "contact-sync latency, local runner + simulators, {n} contacts (HubSpot webhook batch window 100 ms)"
    );
    report("app -> HubSpot (synced)", to_hubspot);
    report("app -> Pipedrive (synced)", to_pipedrive);
    report("HubSpot edit -> app", from_hubspot);
    report("Pipedrive edit -> app", from_pipedrive);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

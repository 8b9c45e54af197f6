//! The local runner (`contact-sync-local`) as a user starts it, driven black-box over HTTP:
//! built once (release), started as a child process with its in-process simulators.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// The runner's default API key (README).
pub const KEY: &str = "local-dev-key";

/// Builds the release runner (a no-op when it is fresh) and returns its path: beside this
/// binary, in the same target directory.
pub fn build() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "contact-sync-local"])
        .status()
        .context("running cargo build for contact-sync-local")?;
    ensure!(status.success(), "building contact-sync-local failed");
    let bin = std::env::current_exe()?.with_file_name("contact-sync-local");
    ensure!(bin.exists(), "no runner at {}", bin.display());
    Ok(bin)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `contact-sync-local`; killed when dropped.
pub struct Runner {
    child: Child,
    pub app: String,
    pub sim: String,
    pub http: reqwest::Client,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Runner {
    /// Starts the runner on `data` with `env` (on top of free ports, a poll schedule that
    /// stays out of the way and error-only logs) and waits for `/health`.
    pub async fn start(bin: &Path, data: &Path, env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_logging(bin, data, env, None).await
    }

    /// [`Runner::start`], its log (`RUST_LOG` from `env`) written to `log`.
    pub async fn start_logging(
        bin: &Path,
        data: &Path,
        env: &[(&str, String)],
        log: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let (port, sim_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(bin);
        if !env.iter().any(|(k, v)| *k == "CRM_SIMULATOR" && v == "off") {
            cmd.env("SIM_PORT", sim_port.to_string());
        }
        cmd.env("PORT", port.to_string())
            .env("CONTACT_SYNC_DATA_DIR", data)
            .env("POLL_INTERVAL_SECS", "3600")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(log) = log {
            cmd.stdout(std::fs::File::create(log)?);
        } else if let Ok(log) = std::env::var("BENCH_RUNNER_LOG") {
            cmd.env("RUST_LOG", "info").stdout(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(log)?,
            );
        }
        let mut runner = Self {
            child: cmd.spawn().context("starting contact-sync-local")?,
            app: format!("http://127.0.0.1:{port}"),
            sim: format!("http://127.0.0.1:{sim_port}"),
            http: reqwest::Client::new(),
        };
        let health = format!("{}/health", runner.app);
        let started = Instant::now();
        loop {
            if let Some(exit) = runner.child.try_wait()? {
                bail!("contact-sync-local stopped at start-up ({exit})");
            }
            let r = runner.http.get(&health).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return Ok(runner);
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "contact-sync-local did not answer /health within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Nothing queued, no webhook on its way, and no CRM request for 300 ms (six looks, 50 ms
    /// apart): everything the last changes set off has happened. Fails after `limit`.
    pub async fn settled(&self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut quiet = 0;
        let mut last = None;
        while quiet < 6 {
            ensure!(
                started.elapsed() < limit,
                "the service did not settle within {limit:?}"
            );
            let status = self.get("/sync/status").await?;
            let hs = self.sim_get("/_sim/hubspot/stats").await?;
            let pd = self.sim_get("/_sim/pipedrive/stats").await?;
            let idle = status["queue_depth"] == 0
                && hs["webhook_events_pending"] == 0
                && pd["webhook_jobs_pending"] == 0;
            let now = (hs["requests"].clone(), pd["requests"].clone());
            quiet = if idle && last.as_ref() == Some(&now) {
                quiet + 1
            } else {
                0
            };
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The runner's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET` of the app API with the key, as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.app);
        send(
            &self.http,
            reqwest::Method::GET,
            &url,
            Some(KEY),
            &Value::Null,
        )
        .await
    }

    /// `POST` to the app API with the key; the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.app);
        send(&self.http, reqwest::Method::POST, &url, Some(KEY), body).await
    }

    /// A simulator endpoint (`/_sim/...`), as JSON.
    pub async fn sim_get(&self, path: &str) -> anyhow::Result<Value> {
        self.sim_send(reqwest::Method::GET, path, &Value::Null)
            .await
    }

    /// Sends `body` to a simulator endpoint with `method`.
    pub async fn sim_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.sim);
        send(&self.http, method, &url, None, body).await
    }
}

/// `method` `url` with a JSON `body` (and the API key as a bearer token when given); the JSON
/// answer (null when it has none). Anything but a 2xx is an error.
pub async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> anyhow::Result<Value> {
    let mut req = http.request(method.clone(), url).json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await?;
    ensure!(
        res.status().is_success(),
        "{method} {url}: {}",
        res.status()
    );
    Ok(res.json().await.unwrap_or(Value::Null))
}

/// Polls `f` every 2 ms until it holds; the time it took.
pub async fn until<F, Fut>(what: &str, limit: Duration, f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    until_every(what, limit, Duration::from_millis(2), f).await
}

/// Polls `f` every `every` until it holds; the time it took. (A check that costs the service
/// real work, e.g. `/sync/status` over thousands of links, is polled less often, so the bench
/// does not slow what it measures.)
pub async fn until_every<F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await? {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(every).await;
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

/// A scratch data directory for one run, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("contact-sync-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! Starts the real `contact-sync-local` binary and talks to it over HTTP.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalProcess {
    pub url: String,
    /// Root URL of the in-process CRM simulator.
    pub sim: String,
    child: Child,
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The local tenant's default API key (`API_KEY` unset).
pub const API_KEY: &str = "local-dev-key";

/// An HTTP client that sends the local tenant's API key on every request.
pub fn http() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {API_KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("contact-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The runner binary with its port, data folder and `env`, its log level `warn` unless `env`
/// sets `RUST_LOG`.
pub fn runner_command(data_dir: &Path, port: u16, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contact-sync-local"));
    cmd.env("PORT", port.to_string())
        .env("CONTACT_SYNC_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl LocalProcess {
    /// Starts the runner on a free port with `data_dir` and extra environment variables.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_logging(data_dir, env, None).await
    }

    /// Like [`start`](Self::start), writing the runner's stdout (its log) to `log` when given.
    ///
    /// A port picked free can be taken by another test's process before the runner binds it;
    /// a runner that exits before it is ready is started again on fresh ports (three tries).
    pub async fn start_logging(data_dir: &Path, env: &[(&str, &str)], log: Option<&Path>) -> Self {
        for attempt in 1..=3 {
            let port = free_port();
            let sim_port = loop {
                let p = free_port();
                if p != port {
                    break p;
                }
            };
            let mut cmd = runner_command(data_dir, port, env);
            // The simulator's port, unless no simulator runs (a setting it would refuse).
            if !env.contains(&("CRM_SIMULATOR", "off")) {
                cmd.env("SIM_PORT", sim_port.to_string());
            }
            match log {
                Some(path) => cmd.stdout(std::fs::File::create(path).expect("create the log file")),
                None => cmd.stdout(Stdio::null()),
            };
            let child = cmd.spawn().expect("start contact-sync-local");
            let mut p = LocalProcess {
                url: format!("http://127.0.0.1:{port}"),
                sim: format!("http://127.0.0.1:{sim_port}"),
                child,
            };
            match p.wait_ready().await {
                Ok(()) => return p,
                Err(status) => eprintln!(
                    "contact-sync-local exited before it was ready ({status}), try {attempt} of 3"
                ),
            }
        }
        panic!("contact-sync-local did not start in three tries");
    }

    /// Waits for `/health`; `Err` with the exit status when the process ended first.
    async fn wait_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/health", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "contact-sync-local did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until nothing is going on, and returns the simulators' stats then (HubSpot,
    /// Pipedrive): no sync job queued or in flight, no webhook waiting for delivery in either
    /// simulator, and no request or delivery happened while that was checked. Nothing starts by
    /// itself afterwards except the poll schedule. An observable condition, not a quiet period.
    pub async fn settled(&self) -> (serde_json::Value, serde_json::Value) {
        let http = http();
        let get = |url: String| {
            let http = http.clone();
            async move {
                http.get(url)
                    .send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };
        let activity = |hs: &serde_json::Value, pd: &serde_json::Value| {
            [
                hs["requests"].clone(),
                hs["webhook_deliveries"].clone(),
                hs["webhook_failures"].clone(),
                pd["requests"].clone(),
                pd["webhook_attempts"].clone(),
            ]
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let hs = get(format!("{}/_sim/hubspot/stats", self.sim)).await;
            let pd = get(format!("{}/_sim/pipedrive/stats", self.sim)).await;
            let idle = hs["webhook_events_pending"] == 0 && pd["webhook_jobs_pending"] == 0;
            let depth = get(format!("{}/sync/status", self.url)).await["queue_depth"].clone();
            let hs2 = get(format!("{}/_sim/hubspot/stats", self.sim)).await;
            let pd2 = get(format!("{}/_sim/pipedrive/stats", self.sim)).await;
            if idle && depth == 0 && activity(&hs, &pd) == activity(&hs2, &pd2) {
                return (hs2, pd2);
            }
            assert!(Instant::now() < deadline, "the runner did not settle");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the process the way a user would (SIGTERM, graceful).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET url` as JSON.
pub async fn get_json(http: &reqwest::Client, url: String) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// `POST /contacts` with `body`; the new contact's id.
pub async fn create_contact(http: &reqwest::Client, url: &str, body: serde_json::Value) -> String {
    let created: serde_json::Value = http
        .post(format!("{url}/contacts"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"].as_str().expect("a contact id").to_string()
}

/// Waits up to `secs` until contact `id`'s link with `crm` (`hubspot`, `pipedrive`) has
/// `status`; the contact as then read.
pub async fn crm_status_becomes(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    crm: &str,
    status: &str,
    secs: u64,
) -> serde_json::Value {
    let what = format!("the {crm} link of {id} to become {status}");
    eventually(secs, &what, || {
        let (http, url) = (http.clone(), format!("{url}/contacts/{id}"));
        async move {
            let c: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (c["sync"]["crms"][crm]["status"] == status).then_some(c)
        }
    })
    .await
}

/// Switches the CRM simulator's webhook deliveries (`crm`: `hubspot`, `pipedrive`) on or off.
pub async fn sim_webhooks(http: &reqwest::Client, sim: &str, crm: &str, enabled: bool) {
    let r = http
        .post(format!("{sim}/_sim/{crm}/webhooks"))
        .json(&serde_json::json!({ "enabled": enabled }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

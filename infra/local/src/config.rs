//! Configuration of the local runner, from environment variables.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// Settings read from the environment (documented in README.md).
#[derive(Clone)]
pub struct LocalConfig {
    /// `HOST` (default 127.0.0.1).
    pub host: String,
    /// `PORT` (default 3000; 0 picks a free port).
    pub port: u16,
    /// `CONTACT_SYNC_DATA_DIR` (default `.contact-sync`).
    pub data_dir: PathBuf,
    /// `TENANT_ID` (default `default`).
    pub tenant_id: String,
    /// `API_KEY`: when set, every app API call needs `Authorization: Bearer <API_KEY>`.
    pub api_key: Option<String>,
    /// `POLL_INTERVAL_SECS` (default 300): the reconcile/poll schedule.
    pub poll_interval: Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl LocalConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let port = match var("PORT") {
            Some(p) => p.parse().with_context(|| format!("PORT={p} is not a port number"))?,
            None => 3000,
        };
        let poll = match var("POLL_INTERVAL_SECS") {
            Some(p) => p
                .parse()
                .with_context(|| format!("POLL_INTERVAL_SECS={p} is not a number"))?,
            None => 300,
        };
        if poll == 0 {
            bail!("POLL_INTERVAL_SECS must be at least 1");
        }
        Ok(Self {
            host: var("HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port,
            data_dir: var("CONTACT_SYNC_DATA_DIR")
                .unwrap_or_else(|| ".contact-sync".into())
                .into(),
            tenant_id: var("TENANT_ID").unwrap_or_else(|| "default".into()),
            api_key: var("API_KEY"),
            poll_interval: Duration::from_secs(poll),
        })
    }
}

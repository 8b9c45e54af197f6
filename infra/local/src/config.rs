//! Configuration of the local runner, from environment variables.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use shared::settings::{self, HubSpotSettings, PipedriveSettings};

/// The local tenant's API key when `API_KEY` is not set.
pub const DEFAULT_API_KEY: &str = "local-dev-key";

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
    /// `API_KEY` (default `local-dev-key`): every app API call needs
    /// `Authorization: Bearer <API_KEY>`.
    pub api_key: String,
    /// `APP_WEBHOOK_SECRET`: HMAC secret of `POST /webhooks/app` (unset: that route answers 401).
    pub app_webhook_secret: Option<String>,
    /// `POLL_INTERVAL_SECS` (default 300): the reconcile/poll schedule.
    pub poll_interval: Duration,
    /// `PUBLIC_BASE_URL`: the URL the CRMs call (webhook signatures cover it); default
    /// `http://HOST:PORT`.
    pub public_base_url: Option<String>,
    /// `CRM_SIMULATOR` = `auto` (default: start the simulator in-process for every CRM without
    /// settings) or `off`.
    pub simulator: bool,
    /// `SIM_PORT`: port of the in-process simulator (default PORT+1, or a free port when PORT=0).
    pub sim_port: Option<u16>,
    /// `SIM_HUBSPOT_BURST_LIMIT`: the simulated HubSpot account's requests per 10 s (default 100).
    pub sim_hubspot_burst_limit: Option<u32>,
    pub hubspot: Option<HubSpotSettings>,
    /// `PIPEDRIVE_WEBHOOK_USER` / `PIPEDRIVE_WEBHOOK_PASSWORD`: the HTTP Basic credentials
    /// Pipedrive sends with every webhook (also used with the simulator; defaults there).
    pub pipedrive_webhook_user: Option<String>,
    pub pipedrive_webhook_password: Option<String>,
    pub pipedrive: Option<PipedriveSettings>,
}

fn var(name: &str) -> Option<String> {
    settings::var(name)
}

fn parse<T: std::str::FromStr>(name: &'static str) -> anyhow::Result<Option<T>> {
    Ok(settings::parse(name)?)
}

impl LocalConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let port = match var("PORT") {
            Some(p) => p
                .parse()
                .with_context(|| format!("PORT={p} is not a port number"))?,
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
            api_key: var("API_KEY").unwrap_or_else(|| DEFAULT_API_KEY.into()),
            app_webhook_secret: var("APP_WEBHOOK_SECRET"),
            poll_interval: Duration::from_secs(poll),
            public_base_url: var("PUBLIC_BASE_URL"),
            simulator: match var("CRM_SIMULATOR").as_deref() {
                None | Some("auto") => true,
                Some("off") => false,
                Some(other) => bail!("CRM_SIMULATOR={other}: use auto or off"),
            },
            sim_port: parse("SIM_PORT")?,
            sim_hubspot_burst_limit: parse("SIM_HUBSPOT_BURST_LIMIT")?,
            hubspot: HubSpotSettings::from_env()?,
            pipedrive_webhook_user: var("PIPEDRIVE_WEBHOOK_USER"),
            pipedrive_webhook_password: var("PIPEDRIVE_WEBHOOK_PASSWORD"),
            pipedrive: PipedriveSettings::from_env()?,
        })
    }
}

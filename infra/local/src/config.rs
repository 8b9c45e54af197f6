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
}

/// `HUBSPOT_*` settings; present when `HUBSPOT_ACCESS_TOKEN` or `HUBSPOT_REFRESH_TOKEN` is set.
#[derive(Clone)]
pub struct HubSpotSettings {
    /// `HUBSPOT_API_BASE` (default https://api.hubapi.com).
    pub api_base: String,
    /// `HUBSPOT_ACCESS_TOKEN`: private-app token.
    pub access_token: Option<String>,
    /// `HUBSPOT_CLIENT_ID` + `HUBSPOT_REFRESH_TOKEN`: OAuth instead of a static token.
    pub client_id: Option<String>,
    pub refresh_token: Option<String>,
    /// `HUBSPOT_CLIENT_SECRET`: verifies webhook signatures (and refreshes OAuth tokens).
    pub client_secret: Option<String>,
    /// `HUBSPOT_APP_ID`: recognises our own writes in webhooks.
    pub app_id: Option<u64>,
    /// `HUBSPOT_PORTAL_ID`: maps webhooks to the local tenant.
    pub portal_id: u64,
    /// `HUBSPOT_BURST_LIMIT`: requests per 10 s (default 100; 190 on Professional).
    pub burst_limit: u32,
}

fn parse<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match var(name) {
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name}={v} is not valid")),
        None => Ok(None),
    }
}

impl HubSpotSettings {
    fn from_env() -> anyhow::Result<Option<Self>> {
        let access_token = var("HUBSPOT_ACCESS_TOKEN");
        let refresh_token = var("HUBSPOT_REFRESH_TOKEN");
        if access_token.is_none() && refresh_token.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            api_base: var("HUBSPOT_API_BASE")
                .unwrap_or_else(|| shared::crm::hubspot::DEFAULT_API_BASE.into()),
            access_token,
            client_id: var("HUBSPOT_CLIENT_ID"),
            refresh_token,
            client_secret: var("HUBSPOT_CLIENT_SECRET"),
            app_id: parse("HUBSPOT_APP_ID")?,
            portal_id: parse("HUBSPOT_PORTAL_ID")?.ok_or_else(|| {
                anyhow::anyhow!("HUBSPOT_PORTAL_ID is required with HubSpot settings")
            })?,
            burst_limit: parse("HUBSPOT_BURST_LIMIT")?.unwrap_or(100),
        }))
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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
            api_key: var("API_KEY"),
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
        })
    }
}

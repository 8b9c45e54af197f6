//! Configuration of the local runner, from environment variables.
//!
//! A setting the user gave is never silently ignored: when the in-process simulator stands in
//! for a CRM, that CRM's identity and pacing settings describe the simulated account; a setting
//! the simulator cannot honour (an API base, OAuth client details), a CRM setting while that CRM
//! is not synced, a simulator setting while no simulator runs, and a misspelt `HUBSPOT_*`,
//! `PIPEDRIVE_*` or `SIM_*` name all stop the start-up with an error that names them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use shared::crm::hubspot::settings::{ENV_VARS as HUBSPOT_VARS, HubSpotSettings};
use shared::crm::pipedrive::settings::{ENV_VARS as PIPEDRIVE_VARS, PipedriveSettings};
use shared::settings;

/// The local tenant's API key when `API_KEY` is not set.
pub const DEFAULT_API_KEY: &str = "local-dev-key";
/// Workers draining the queue at once, by default.
pub const DEFAULT_SYNC_WORKERS: usize = 4;

/// The simulator's own settings.
const SIM_VARS: [&str; 3] = [
    "SIM_PORT",
    "SIM_HUBSPOT_BURST_LIMIT",
    "SIM_HUBSPOT_TIME_ZONE",
];

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
    /// `SYNC_WORKERS` (default 4): workers draining the queue at once, as several sync-worker
    /// Lambdas do.
    pub sync_workers: usize,
    /// `JOB_DEADLINE_SECS` (default 30, the sync-worker Lambda's timeout): the time a worker's
    /// batch of jobs has; a wait past it re-queues the job with that delay.
    pub job_deadline: Duration,
    /// `CHECK_GRACE_SECS` (default 60): how long after a write of ours its check waits for the
    /// write's echo (Pipedrive's webhook of it) before reading the record's changelog.
    pub check_grace: Duration,
    /// `WEBHOOK_GRACE_SECS` (default 300): how long a CRM's webhook may take before a poll that
    /// finds its change counts it as missed (the health check's "webhooks look broken").
    pub webhook_grace: Duration,
    /// `OUTCOMES_WEBHOOK_URL`: where sync outcomes are POSTed (a JSON array); unset: the log.
    pub outcomes_webhook_url: Option<String>,
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
    /// `SIM_HUBSPOT_TIME_ZONE`: the simulated HubSpot portal's time zone, where its daily limit
    /// resets (default `US/Eastern`).
    pub sim_hubspot_time_zone: Option<String>,
    pub hubspot: Option<HubSpotSettings>,
    pub pipedrive: Option<PipedriveSettings>,
    /// What the CRM settings say about the simulated accounts, for the CRMs the simulator
    /// serves.
    pub simulated: SimulatedAccounts,
}

/// CRM settings that the simulator honours when it stands in for that CRM.
#[derive(Clone, Default)]
pub struct SimulatedAccounts {
    /// `HUBSPOT_CLIENT_SECRET`: the simulated app's secret, which signs its webhooks.
    pub hubspot_client_secret: Option<String>,
    /// `HUBSPOT_APP_ID`: the simulated app's id (our own writes carry it).
    pub hubspot_app_id: Option<u64>,
    /// `HUBSPOT_PORTAL_ID`: the simulated portal.
    pub hubspot_portal_id: Option<u64>,
    /// `HUBSPOT_BURST_LIMIT`: our client's pace (requests per 10 s).
    pub hubspot_burst_limit: Option<u32>,
    /// `PIPEDRIVE_COMPANY_ID`: the simulated company.
    pub pipedrive_company_id: Option<u64>,
    /// `PIPEDRIVE_WEBHOOK_USER` / `PIPEDRIVE_WEBHOOK_PASSWORD`: the HTTP Basic credentials the
    /// simulated Pipedrive sends with every webhook (defaults there).
    pub pipedrive_webhook_user: Option<String>,
    pub pipedrive_webhook_password: Option<String>,
    /// `PIPEDRIVE_BURST_LIMIT`: our client's pace (requests per 2 s).
    pub pipedrive_burst_limit: Option<u32>,
    /// `PIPEDRIVE_DAILY_TOKEN_BUDGET`: tokens our client spends at most per day (0: no budget).
    pub pipedrive_daily_token_budget: Option<u64>,
}

/// The `HUBSPOT_*` settings the simulated HubSpot honours.
const SIMULATED_HUBSPOT_VARS: [&str; 4] = [
    "HUBSPOT_CLIENT_SECRET",
    "HUBSPOT_APP_ID",
    "HUBSPOT_PORTAL_ID",
    "HUBSPOT_BURST_LIMIT",
];
/// The `PIPEDRIVE_*` settings the simulated Pipedrive honours.
const SIMULATED_PIPEDRIVE_VARS: [&str; 5] = [
    "PIPEDRIVE_COMPANY_ID",
    "PIPEDRIVE_WEBHOOK_USER",
    "PIPEDRIVE_WEBHOOK_PASSWORD",
    "PIPEDRIVE_BURST_LIMIT",
    "PIPEDRIVE_DAILY_TOKEN_BUDGET",
];

fn var(name: &str) -> Option<String> {
    settings::var(name)
}

fn parse<T: std::str::FromStr>(name: &'static str) -> anyhow::Result<Option<T>> {
    Ok(settings::parse(name)?)
}

/// The names in `names` that are set (non-empty).
fn set<'a>(names: impl IntoIterator<Item = &'a &'static str>) -> Vec<&'static str> {
    names
        .into_iter()
        .copied()
        .filter(|n| var(n).is_some())
        .collect()
}

impl LocalConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        refuse_unknown_names(std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            (!v.is_empty()).then_some(k)
        }))?;
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
        let sync_workers = match var("SYNC_WORKERS") {
            Some(w) => w
                .parse()
                .with_context(|| format!("SYNC_WORKERS={w} is not a number"))?,
            None => DEFAULT_SYNC_WORKERS,
        };
        if !(1..=64).contains(&sync_workers) {
            bail!("SYNC_WORKERS must be between 1 and 64");
        }
        let job_deadline = match var("JOB_DEADLINE_SECS") {
            Some(s) => s
                .parse()
                .with_context(|| format!("JOB_DEADLINE_SECS={s} is not a number"))?,
            None => 30,
        };
        if job_deadline < 5 {
            bail!("JOB_DEADLINE_SECS must be at least 5");
        }
        let check_grace = match var("CHECK_GRACE_SECS") {
            Some(s) => s
                .parse()
                .with_context(|| format!("CHECK_GRACE_SECS={s} is not a number"))?,
            None => shared::sync::CHECK_GRACE_SECS as u64,
        };
        let webhook_grace = match var("WEBHOOK_GRACE_SECS") {
            Some(s) => s
                .parse()
                .with_context(|| format!("WEBHOOK_GRACE_SECS={s} is not a number"))?,
            None => shared::sync::WEBHOOK_GRACE_SECS,
        };
        let simulator = match var("CRM_SIMULATOR").as_deref() {
            None | Some("auto") => true,
            Some("off") => false,
            Some(other) => bail!("CRM_SIMULATOR={other}: use auto or off"),
        };
        let hubspot = HubSpotSettings::from_env()?;
        let pipedrive = PipedriveSettings::from_env()?;
        check_unused(simulator, hubspot.is_some(), pipedrive.is_some())?;
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
            sync_workers,
            job_deadline: Duration::from_secs(job_deadline),
            check_grace: Duration::from_secs(check_grace),
            webhook_grace: Duration::from_secs(webhook_grace),
            outcomes_webhook_url: var("OUTCOMES_WEBHOOK_URL"),
            public_base_url: var("PUBLIC_BASE_URL"),
            simulator,
            sim_port: parse("SIM_PORT")?,
            sim_hubspot_burst_limit: parse("SIM_HUBSPOT_BURST_LIMIT")?,
            sim_hubspot_time_zone: var("SIM_HUBSPOT_TIME_ZONE"),
            simulated: SimulatedAccounts {
                hubspot_client_secret: var("HUBSPOT_CLIENT_SECRET"),
                hubspot_app_id: parse("HUBSPOT_APP_ID")?,
                hubspot_portal_id: parse("HUBSPOT_PORTAL_ID")?,
                hubspot_burst_limit: parse("HUBSPOT_BURST_LIMIT")?,
                pipedrive_company_id: parse("PIPEDRIVE_COMPANY_ID")?,
                pipedrive_webhook_user: var("PIPEDRIVE_WEBHOOK_USER"),
                pipedrive_webhook_password: var("PIPEDRIVE_WEBHOOK_PASSWORD"),
                pipedrive_burst_limit: parse("PIPEDRIVE_BURST_LIMIT")?,
                pipedrive_daily_token_budget: parse("PIPEDRIVE_DAILY_TOKEN_BUDGET")?,
            },
            hubspot,
            pipedrive,
        })
    }
}

/// A `HUBSPOT_*`, `PIPEDRIVE_*` or `SIM_*` name that no code reads is a typo: refuse it.
fn refuse_unknown_names(set_names: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let known =
        |n: &str| HUBSPOT_VARS.contains(&n) || PIPEDRIVE_VARS.contains(&n) || SIM_VARS.contains(&n);
    let mut unknown: Vec<String> = set_names
        .filter(|n| {
            (n.starts_with("HUBSPOT_") || n.starts_with("PIPEDRIVE_") || n.starts_with("SIM_"))
                && !known(n)
        })
        .collect();
    unknown.sort();
    if !unknown.is_empty() {
        bail!(
            "unknown setting(s) {}: not read by contact-sync-local (see the README's configuration table)",
            unknown.join(", ")
        );
    }
    Ok(())
}

/// Refuses settings that would have no effect with this combination of CRMs and simulator.
fn check_unused(simulator: bool, hubspot: bool, pipedrive: bool) -> anyhow::Result<()> {
    let crms = [
        (
            "HubSpot",
            hubspot,
            &HUBSPOT_VARS[..],
            &SIMULATED_HUBSPOT_VARS[..],
            "HUBSPOT_ACCESS_TOKEN or HUBSPOT_REFRESH_TOKEN",
        ),
        (
            "Pipedrive",
            pipedrive,
            &PIPEDRIVE_VARS[..],
            &SIMULATED_PIPEDRIVE_VARS[..],
            "PIPEDRIVE_API_TOKEN, PIPEDRIVE_ACCESS_TOKEN or PIPEDRIVE_REFRESH_TOKEN",
        ),
    ];
    for (name, configured, vars, honoured, credentials) in crms {
        if configured {
            continue;
        }
        let given = set(vars);
        if !simulator && !given.is_empty() {
            bail!(
                "{} set, but {name} is not synced: CRM_SIMULATOR=off and no {credentials}. \
                 Set the credentials, or unset these",
                given.join(", ")
            );
        }
        let refused: Vec<_> = given
            .into_iter()
            .filter(|n| !honoured.contains(n))
            .collect();
        if !refused.is_empty() {
            bail!(
                "{} set, but without {credentials} the in-process simulator stands in for {name} \
                 and cannot use {}. Set the credentials to use that {name} account, or unset them",
                refused.join(", "),
                if refused.len() == 1 { "it" } else { "them" }
            );
        }
    }
    for name in ["SIM_HUBSPOT_BURST_LIMIT", "SIM_HUBSPOT_TIME_ZONE"] {
        if hubspot && var(name).is_some() {
            bail!(
                "{name} set, but HubSpot has credentials: the simulator does not serve it. Unset it"
            );
        }
    }
    let sim_runs = simulator && !(hubspot && pipedrive);
    let sim_given = set(&SIM_VARS);
    if !sim_runs && !sim_given.is_empty() {
        bail!(
            "{} set, but no CRM simulator runs ({}). Unset them",
            sim_given.join(", "),
            if simulator {
                "both CRMs have credentials"
            } else {
                "CRM_SIMULATOR=off"
            }
        );
    }
    Ok(())
}

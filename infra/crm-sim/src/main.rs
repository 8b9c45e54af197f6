//! `crm-sim`: serves the HubSpot and Pipedrive simulators on one port until Ctrl-C.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use crm_sim::{SimConfig, hubspot::HubSpotConfig, pipedrive::PipedriveConfig};
use tracing_subscriber::EnvFilter;

/// Stateful HubSpot and Pipedrive API simulators for contact-sync tests and local runs.
///
/// One server answers HubSpot's paths (`/crm/v3/...`, `/oauth/...`), Pipedrive's
/// (`/api/v1/...`, `/api/v2/...`) and the simulators' control endpoints (`/_sim/hubspot/...`,
/// `/_sim/pipedrive/...`). Use the server's root URL as the base URL of both APIs.
/// Logging is configured with `RUST_LOG` (default `info`).
#[derive(Debug, Parser)]
#[command(name = "crm-sim", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "CRM_SIM_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "CRM_SIM_PORT", default_value_t = 4010)]
    port: u16,

    /// Where HubSpot webhook batches are POSTed (none: events are dropped).
    #[arg(long, env = "CRM_SIM_HUBSPOT_WEBHOOK_URL")]
    hubspot_webhook_url: Option<String>,

    /// HubSpot OAuth client secret; also signs webhooks (v1 and v3 signatures).
    /// [default: sim-hubspot-secret]
    #[arg(long, env = "CRM_SIM_HUBSPOT_CLIENT_SECRET", hide_env_values = true)]
    hubspot_client_secret: Option<String>,

    /// HubSpot OAuth client id. [default: sim-hubspot-client-id]
    #[arg(long, env = "CRM_SIM_HUBSPOT_CLIENT_ID")]
    hubspot_client_id: Option<String>,

    /// Static HubSpot private-app token accepted as `Authorization: Bearer` (repeatable;
    /// replaces the default). [default: sim-hubspot-token]
    #[arg(
        long = "hubspot-access-token",
        env = "CRM_SIM_HUBSPOT_ACCESS_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    hubspot_access_tokens: Vec<String>,

    /// HubSpot refresh token accepted by `/oauth/v1/token` and `/oauth/v3/token` (repeatable;
    /// replaces the default). [default: sim-hubspot-refresh-token]
    #[arg(
        long = "hubspot-refresh-token",
        env = "CRM_SIM_HUBSPOT_REFRESH_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    hubspot_refresh_tokens: Vec<String>,

    /// Lifetime of issued HubSpot OAuth access tokens, in seconds.
    #[arg(long, env = "CRM_SIM_HUBSPOT_TOKEN_TTL_SECS", default_value_t = 1800)]
    hubspot_token_ttl_secs: u64,

    /// HubSpot app id (webhook `appId`, `sourceId` of the app's own writes).
    #[arg(long, env = "CRM_SIM_HUBSPOT_APP_ID", default_value_t = 1_234_567)]
    hubspot_app_id: u64,

    /// HubSpot portal (account) id (webhook `portalId`).
    #[arg(long, env = "CRM_SIM_HUBSPOT_PORTAL_ID", default_value_t = 62515)]
    hubspot_portal_id: u64,

    /// HubSpot requests per rolling 10-second window per app (0 = unlimited).
    #[arg(long, env = "CRM_SIM_HUBSPOT_BURST_LIMIT", default_value_t = 100)]
    hubspot_burst_limit: u32,

    /// HubSpot requests per day for private-app tokens (0 = unlimited).
    #[arg(long, env = "CRM_SIM_HUBSPOT_DAILY_LIMIT", default_value_t = 250_000)]
    hubspot_daily_limit: u32,

    /// HubSpot search requests per second (0 = unlimited).
    #[arg(long, env = "CRM_SIM_HUBSPOT_SEARCH_PER_SECOND", default_value_t = 5)]
    hubspot_search_per_second: u32,

    /// Typical lag of HubSpot's search index behind creates and updates, in ms (each write
    /// shows after 0.25 to 1.75 times this; 0 = indexed at once).
    #[arg(long, env = "CRM_SIM_HUBSPOT_SEARCH_LAG_MS", default_value_t = 1_000)]
    hubspot_search_lag_ms: u64,

    /// Typical lag of Pipedrive's search index behind creates and updates, in ms (each write
    /// shows after 0.25 to 1.75 times this; 0 = indexed at once).
    #[arg(long, env = "CRM_SIM_PIPEDRIVE_SEARCH_LAG_MS", default_value_t = 1_000)]
    pipedrive_search_lag_ms: u64,

    /// The HubSpot portal's time zone (IANA name): its daily limit resets at midnight there.
    #[arg(long, env = "CRM_SIM_HUBSPOT_TIME_ZONE", default_value = "US/Eastern")]
    hubspot_time_zone: String,

    /// Where Pipedrive webhooks are POSTed (registered at start as an all-events webhook).
    #[arg(long, env = "CRM_SIM_PIPEDRIVE_WEBHOOK_URL")]
    pipedrive_webhook_url: Option<String>,

    /// HTTP Basic auth user sent with Pipedrive webhooks.
    #[arg(long, env = "CRM_SIM_PIPEDRIVE_WEBHOOK_USER")]
    pipedrive_webhook_user: Option<String>,

    /// HTTP Basic auth password sent with Pipedrive webhooks.
    #[arg(
        long,
        env = "CRM_SIM_PIPEDRIVE_WEBHOOK_PASSWORD",
        hide_env_values = true
    )]
    pipedrive_webhook_password: Option<String>,

    /// Pipedrive API token accepted in `x-api-token` (repeatable; replaces the default).
    /// [default: sim-pipedrive-token]
    #[arg(
        long = "pipedrive-api-token",
        env = "CRM_SIM_PIPEDRIVE_API_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pipedrive_api_tokens: Vec<String>,
}

fn limit(n: u32) -> Option<u32> {
    (n > 0).then_some(n)
}

impl Cli {
    fn config(self) -> SimConfig {
        let mut hubspot = HubSpotConfig {
            webhook_url: self.hubspot_webhook_url,
            access_token_ttl_secs: self.hubspot_token_ttl_secs,
            app_id: self.hubspot_app_id,
            portal_id: self.hubspot_portal_id,
            burst_limit: limit(self.hubspot_burst_limit),
            daily_limit: limit(self.hubspot_daily_limit),
            search_per_second: self.hubspot_search_per_second,
            search_index_lag_ms: self.hubspot_search_lag_ms,
            portal_time_zone: self.hubspot_time_zone.clone(),
            ..HubSpotConfig::default()
        };
        if let Some(secret) = self.hubspot_client_secret {
            hubspot.client_secret = secret;
        }
        if let Some(id) = self.hubspot_client_id {
            hubspot.client_id = id;
        }
        if !self.hubspot_access_tokens.is_empty() {
            hubspot.access_tokens = self.hubspot_access_tokens;
        }
        if !self.hubspot_refresh_tokens.is_empty() {
            hubspot.refresh_tokens = self.hubspot_refresh_tokens;
        }
        let mut pipedrive = PipedriveConfig {
            webhook_url: self.pipedrive_webhook_url,
            webhook_user: self.pipedrive_webhook_user,
            webhook_password: self.pipedrive_webhook_password,
            search_index_lag_ms: self.pipedrive_search_lag_ms,
            ..PipedriveConfig::default()
        };
        if !self.pipedrive_api_tokens.is_empty() {
            pipedrive.api_tokens = self.pipedrive_api_tokens;
        }
        SimConfig { hubspot, pipedrive }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Plain text without colour codes unless stdout is a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let cli = Cli::parse();
    let addr = SocketAddr::new(cli.host, cli.port);
    let server = crm_sim::start(cli.config(), addr).await?;
    tracing::info!(
        base_url = %server.base_url(),
        "crm-sim serving HubSpot (/crm/v3, /oauth) and Pipedrive (/api/v1, /api/v2); control under /_sim"
    );
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_maps_onto_the_configs() {
        let cli = Cli::try_parse_from([
            "crm-sim",
            "--port",
            "0",
            "--hubspot-webhook-url",
            "http://127.0.0.1:9000/hs",
            "--hubspot-client-secret",
            "s3",
            "--hubspot-access-token",
            "a,b",
            "--hubspot-burst-limit",
            "0",
            "--pipedrive-api-token",
            "pd",
            "--pipedrive-webhook-user",
            "u",
        ])
        .unwrap();
        assert_eq!(cli.port, 0);
        let config = cli.config();
        assert_eq!(
            config.hubspot.webhook_url.as_deref(),
            Some("http://127.0.0.1:9000/hs")
        );
        assert_eq!(config.hubspot.client_secret, "s3");
        assert_eq!(config.hubspot.access_tokens, vec!["a", "b"]);
        assert_eq!(config.hubspot.burst_limit, None);
        assert_eq!(config.hubspot.daily_limit, Some(250_000));
        assert_eq!(config.pipedrive.api_tokens, vec!["pd"]);
        assert_eq!(config.pipedrive.webhook_user.as_deref(), Some("u"));
    }

    #[test]
    fn defaults() {
        let config = Cli::try_parse_from(["crm-sim"]).unwrap();
        assert_eq!(config.port, 4010);
        assert_eq!(config.host.to_string(), "127.0.0.1");
        let config = config.config();
        assert_eq!(config.hubspot.access_tokens, vec!["sim-hubspot-token"]);
        assert_eq!(config.hubspot.client_secret, "sim-hubspot-secret");
    }
}

//! Settings read from the environment, shared by the Lambda functions and the local runner.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::crm::hubspot::{DEFAULT_API_BASE, HubSpotAuth, HubSpotClient, HubSpotClientConfig};
use crate::crm::pipedrive::{
    self, JOB_TITLE_FIELD, PipedriveAuth, PipedriveClient, PipedriveClientConfig,
};
use crate::domain::{Provider, TenantId};
use crate::ports::{CrmClient, CrmContext};
use crate::service::SyncService;
use crate::tenant::{HubSpotTenant, PipedriveTenant, TenantConfig};

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name}={value} is not valid")]
    Invalid { name: &'static str, value: String },
    #[error(
        "{names} set, but {crm} has no credentials, so they would be ignored: set its token or unset them"
    )]
    Ignored { names: String, crm: &'static str },
}

/// Every `HUBSPOT_*` variable [`HubSpotSettings::from_env`] reads.
pub const HUBSPOT_VARS: [&str; 8] = [
    "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_REFRESH_TOKEN",
    "HUBSPOT_CLIENT_ID",
    "HUBSPOT_CLIENT_SECRET",
    "HUBSPOT_API_BASE",
    "HUBSPOT_APP_ID",
    "HUBSPOT_PORTAL_ID",
    "HUBSPOT_BURST_LIMIT",
];

/// Every `PIPEDRIVE_*` variable [`PipedriveSettings::from_env`] reads.
pub const PIPEDRIVE_VARS: [&str; 12] = [
    "PIPEDRIVE_API_TOKEN",
    "PIPEDRIVE_ACCESS_TOKEN",
    "PIPEDRIVE_REFRESH_TOKEN",
    "PIPEDRIVE_CLIENT_ID",
    "PIPEDRIVE_CLIENT_SECRET",
    "PIPEDRIVE_OAUTH_TOKEN_URL",
    "PIPEDRIVE_API_BASE",
    "PIPEDRIVE_COMPANY_ID",
    "PIPEDRIVE_WEBHOOK_USER",
    "PIPEDRIVE_WEBHOOK_PASSWORD",
    "PIPEDRIVE_BURST_LIMIT",
    "PIPEDRIVE_DAILY_TOKEN_BUDGET",
];

/// Refuses the settings of a CRM that has no credentials (they would be silently ignored).
/// `defaults` are names a deployment template always sets (an API base) and that say nothing.
pub fn refuse_without_credentials(
    crm: &'static str,
    vars: &[&'static str],
    defaults: &[&str],
) -> Result<(), SettingsError> {
    let given: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|n| !defaults.contains(n) && var(n).is_some())
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(SettingsError::Ignored {
        names: given.join(", "),
        crm,
    })
}

/// A non-empty environment variable.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn parse<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, SettingsError> {
    match var(name) {
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| SettingsError::Invalid { name, value: v }),
        None => Ok(None),
    }
}

/// `HUBSPOT_*` settings; present when `HUBSPOT_ACCESS_TOKEN` or `HUBSPOT_REFRESH_TOKEN` is set.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
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
    /// `HUBSPOT_PORTAL_ID`: maps webhooks to the tenant.
    pub portal_id: u64,
    /// `HUBSPOT_BURST_LIMIT`: requests per 10 s (default 100; 190 on Professional).
    pub burst_limit: u32,
}

impl HubSpotSettings {
    pub fn from_env() -> Result<Option<Self>, SettingsError> {
        let access_token = var("HUBSPOT_ACCESS_TOKEN");
        let refresh_token = var("HUBSPOT_REFRESH_TOKEN");
        if access_token.is_none() && refresh_token.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            api_base: var("HUBSPOT_API_BASE").unwrap_or_else(|| DEFAULT_API_BASE.into()),
            access_token,
            client_id: var("HUBSPOT_CLIENT_ID"),
            refresh_token,
            client_secret: var("HUBSPOT_CLIENT_SECRET"),
            app_id: parse("HUBSPOT_APP_ID")?,
            portal_id: parse("HUBSPOT_PORTAL_ID")?
                .ok_or(SettingsError::Missing("HUBSPOT_PORTAL_ID"))?,
            burst_limit: parse("HUBSPOT_BURST_LIMIT")?.unwrap_or(100),
        }))
    }

    /// The client these settings describe.
    pub fn client(&self, http: &reqwest::Client) -> Result<Arc<HubSpotClient>, SettingsError> {
        let auth = match (&self.access_token, &self.refresh_token) {
            (Some(t), _) => HubSpotAuth::Token(t.clone()),
            (None, Some(r)) => HubSpotAuth::OAuth {
                client_id: self
                    .client_id
                    .clone()
                    .ok_or(SettingsError::Missing("HUBSPOT_CLIENT_ID"))?,
                client_secret: self
                    .client_secret
                    .clone()
                    .ok_or(SettingsError::Missing("HUBSPOT_CLIENT_SECRET"))?,
                refresh_token: r.clone(),
            },
            (None, None) => return Err(SettingsError::Missing("HUBSPOT_ACCESS_TOKEN")),
        };
        let mut cfg = HubSpotClientConfig::new(self.api_base.clone(), auth);
        cfg.burst_per_10s = self.burst_limit;
        Ok(Arc::new(HubSpotClient::new(cfg, http.clone())))
    }

    /// What the tenant registry keeps (webhook routing and verification).
    pub fn tenant(&self) -> HubSpotTenant {
        HubSpotTenant {
            portal_id: self.portal_id,
            app_id: self.app_id,
            access_token: None,
            refresh_token: None,
            client_id: None,
            client_secret: self.client_secret.clone(),
        }
    }
}

/// `PIPEDRIVE_*` settings; present when `PIPEDRIVE_API_TOKEN`, `PIPEDRIVE_ACCESS_TOKEN` or
/// `PIPEDRIVE_REFRESH_TOKEN` is set.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PipedriveSettings {
    /// `PIPEDRIVE_API_BASE`: the company domain root, e.g. `https://acme.pipedrive.com`
    /// (default https://api.pipedrive.com; with OAuth the token's `api_domain` wins).
    pub api_base: String,
    /// `PIPEDRIVE_API_TOKEN`: personal API token (`x-api-token` header).
    pub api_token: Option<String>,
    /// `PIPEDRIVE_ACCESS_TOKEN`: a static OAuth access token (Bearer).
    pub access_token: Option<String>,
    /// `PIPEDRIVE_CLIENT_ID` + `PIPEDRIVE_CLIENT_SECRET` + `PIPEDRIVE_REFRESH_TOKEN`: OAuth with
    /// refresh at `PIPEDRIVE_OAUTH_TOKEN_URL` (default https://oauth.pipedrive.com/oauth/token).
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub refresh_token: Option<String>,
    pub oauth_token_url: String,
    /// `PIPEDRIVE_COMPANY_ID`: maps webhooks to the tenant (default: from `/v1/users/me`).
    pub company_id: Option<u64>,
    /// `PIPEDRIVE_WEBHOOK_USER` / `PIPEDRIVE_WEBHOOK_PASSWORD`: HTTP Basic credentials Pipedrive
    /// sends with every webhook.
    pub webhook_user: Option<String>,
    pub webhook_password: Option<String>,
    /// `PIPEDRIVE_BURST_LIMIT`: requests per 2 s (default 20 with an API token, 80 with OAuth).
    pub burst_limit: Option<u32>,
    /// `PIPEDRIVE_DAILY_TOKEN_BUDGET`: tokens we spend at most per day (default 30000; 0 = only
    /// the server's limit counts).
    pub daily_token_budget: Option<u64>,
}

impl PipedriveSettings {
    pub fn from_env() -> Result<Option<Self>, SettingsError> {
        let api_token = var("PIPEDRIVE_API_TOKEN");
        let access_token = var("PIPEDRIVE_ACCESS_TOKEN");
        let refresh_token = var("PIPEDRIVE_REFRESH_TOKEN");
        if api_token.is_none() && access_token.is_none() && refresh_token.is_none() {
            return Ok(None);
        }
        let budget: u64 =
            parse("PIPEDRIVE_DAILY_TOKEN_BUDGET")?.unwrap_or(pipedrive::DEFAULT_DAILY_TOKEN_BUDGET);
        Ok(Some(Self {
            api_base: var("PIPEDRIVE_API_BASE")
                .unwrap_or_else(|| pipedrive::DEFAULT_API_BASE.into()),
            api_token,
            access_token,
            client_id: var("PIPEDRIVE_CLIENT_ID"),
            client_secret: var("PIPEDRIVE_CLIENT_SECRET"),
            refresh_token,
            oauth_token_url: var("PIPEDRIVE_OAUTH_TOKEN_URL")
                .unwrap_or_else(|| pipedrive::DEFAULT_OAUTH_TOKEN_URL.into()),
            company_id: parse("PIPEDRIVE_COMPANY_ID")?,
            webhook_user: var("PIPEDRIVE_WEBHOOK_USER"),
            webhook_password: var("PIPEDRIVE_WEBHOOK_PASSWORD"),
            burst_limit: parse("PIPEDRIVE_BURST_LIMIT")?,
            daily_token_budget: (budget > 0).then_some(budget),
        }))
    }

    /// The client these settings describe.
    pub fn client(&self, http: &reqwest::Client) -> Result<Arc<PipedriveClient>, SettingsError> {
        let auth = match (&self.api_token, &self.refresh_token, &self.access_token) {
            (Some(t), _, _) => PipedriveAuth::ApiToken(t.clone()),
            (None, Some(r), _) => PipedriveAuth::OAuth {
                client_id: self
                    .client_id
                    .clone()
                    .ok_or(SettingsError::Missing("PIPEDRIVE_CLIENT_ID"))?,
                client_secret: self
                    .client_secret
                    .clone()
                    .ok_or(SettingsError::Missing("PIPEDRIVE_CLIENT_SECRET"))?,
                refresh_token: r.clone(),
                token_url: self.oauth_token_url.clone(),
            },
            (None, None, Some(a)) => PipedriveAuth::Bearer(a.clone()),
            (None, None, None) => return Err(SettingsError::Missing("PIPEDRIVE_API_TOKEN")),
        };
        let mut cfg = PipedriveClientConfig::new(self.api_base.clone(), auth);
        if let Some(b) = self.burst_limit {
            cfg.burst_per_2s = b;
        }
        cfg.daily_token_budget = self.daily_token_budget;
        Ok(Arc::new(PipedriveClient::new(cfg, http.clone())))
    }

    /// The Pipedrive side of the tenant: its company (configured, else from `/v1/users/me`) and
    /// our API user, whose API writes come back as webhooks we drop.
    pub async fn tenant(&self, client: &PipedriveClient) -> Result<PipedriveTenant, SettingsError> {
        let me = match client.own_user().await {
            Ok(me) => Some(me),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the Pipedrive user (/v1/users/me); own writes are recognised by content only");
                None
            }
        };
        if let (Some(configured), Some(me)) = (self.company_id, &me)
            && configured != me.company_id
        {
            tracing::warn!(
                configured,
                actual = me.company_id,
                "PIPEDRIVE_COMPANY_ID differs from the company of the Pipedrive credentials"
            );
        }
        let company_id = self
            .company_id
            .or(me.as_ref().map(|m| m.company_id))
            .ok_or(SettingsError::Missing("PIPEDRIVE_COMPANY_ID"))?;
        Ok(PipedriveTenant {
            company_id,
            api_token: None,
            webhook_user: self.webhook_user.clone(),
            webhook_password: self.webhook_password.clone(),
            api_user_id: me.map(|m| m.id),
        })
    }
}

/// A tenant and its CRM clients, assembled from settings.
pub struct TenantSetup {
    pub config: TenantConfig,
    pub clients: Vec<Arc<dyn CrmClient>>,
    pub pipedrive: Option<Arc<PipedriveClient>>,
}

/// Builds a tenant's CRM clients and registry entry from its settings.
pub async fn tenant_setup(
    mut config: TenantConfig,
    hubspot: Option<&HubSpotSettings>,
    pipedrive: Option<&PipedriveSettings>,
    http: &reqwest::Client,
) -> Result<TenantSetup, SettingsError> {
    let mut clients: Vec<Arc<dyn CrmClient>> = Vec::new();
    if let Some(hs) = hubspot {
        clients.push(hs.client(http)?);
        config.hubspot = Some(hs.tenant());
    }
    let mut pd_client = None;
    if let Some(pd) = pipedrive {
        let client = pd.client(http)?;
        config.pipedrive = Some(pd.tenant(&client).await?);
        clients.push(client.clone());
        pd_client = Some(client);
    }
    Ok(TenantSetup {
        config,
        clients,
        pipedrive: pd_client,
    })
}

/// A registered tenant as the registry stores it: its settings and the resolved CRM identities
/// (portal, company, our Pipedrive user), so a cold start needs no CRM call to serve it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct TenantRecord {
    pub config: TenantConfig,
    pub hubspot: Option<HubSpotSettings>,
    pub pipedrive: Option<PipedriveSettings>,
}

impl TenantRecord {
    /// The tenant's clients, from the stored settings (no network).
    pub fn clients(
        &self,
        http: &reqwest::Client,
    ) -> Result<Vec<Arc<dyn CrmClient>>, SettingsError> {
        let mut clients: Vec<Arc<dyn CrmClient>> = Vec::new();
        if let Some(hs) = &self.hubspot {
            clients.push(hs.client(http)?);
        }
        if let Some(pd) = &self.pipedrive {
            clients.push(pd.client(http)?);
        }
        Ok(clients)
    }
}

/// Where job titles live in Pipedrive (the standard field, or our custom one): looked up afresh
/// and stored per tenant, like the pronouns key.
pub async fn prepare_pipedrive_job_title(
    service: &SyncService,
    tenant: &TenantId,
    client: &PipedriveClient,
) {
    match service.crm_context(tenant, Provider::Pipedrive).await {
        Ok(ctx) => match client
            .ensure_job_title_field(&CrmContext {
                job_title_key: None,
                ..ctx
            })
            .await
        {
            Ok(key) => {
                if let Err(e) = service
                    .state
                    .set_field_key(tenant, Provider::Pipedrive, JOB_TITLE_FIELD, Some(&key))
                    .await
                {
                    tracing::warn!(%tenant, error = %e, "could not store the Pipedrive job title field");
                }
            }
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "could not set up the Pipedrive job title field")
            }
        },
        Err(e) => tracing::warn!(%tenant, error = %e, "no Pipedrive context"),
    }
}

/// Registers (idempotently) the Pipedrive webhook that points at `public_base`.
pub async fn register_pipedrive_webhook(
    tenant: &TenantId,
    client: &PipedriveClient,
    settings: &PipedriveSettings,
    public_base: &str,
) {
    let (Some(user), Some(password)) = (
        settings.webhook_user.as_deref(),
        settings.webhook_password.as_deref(),
    ) else {
        tracing::warn!(%tenant, "PIPEDRIVE_WEBHOOK_USER/PIPEDRIVE_WEBHOOK_PASSWORD unset: no Pipedrive webhooks, changes arrive through the poll");
        return;
    };
    let url = format!("{}/webhooks/pipedrive", public_base.trim_end_matches('/'));
    match client
        .ensure_webhook(&url, Some(user), Some(password))
        .await
    {
        Ok(r) => {
            tracing::info!(%tenant, webhook_id = r.webhook_id, created = r.created, removed = r.removed, %url, "Pipedrive webhook ready")
        }
        Err(e) => {
            tracing::warn!(%tenant, error = %e, %url, "could not register the Pipedrive webhook; changes arrive through the poll")
        }
    }
}

/// The HTTP client every CRM client shares.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("contact-sync/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

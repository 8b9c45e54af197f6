//! A tenant's Pipedrive settings: read from `PIPEDRIVE_*` variables (or the registry), turned
//! into a client, the tenant's Pipedrive account (company and our API user, from
//! `/v1/users/me`) and its webhook registration.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    DEFAULT_API_BASE, DEFAULT_DAILY_TOKEN_BUDGET, DEFAULT_OAUTH_TOKEN_URL, PipedriveAuth,
    PipedriveClient, PipedriveClientConfig,
};
use crate::domain::{CrmAccount, Provider, TenantId, WebhookAuth};
use crate::settings::{SettingsError, parse, var};

/// Every `PIPEDRIVE_*` variable [`PipedriveSettings::from_env`] reads.
pub const ENV_VARS: [&str; 12] = [
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

/// `PIPEDRIVE_*` settings; present when `PIPEDRIVE_API_TOKEN`, `PIPEDRIVE_ACCESS_TOKEN` or
/// `PIPEDRIVE_REFRESH_TOKEN` is set.
#[derive(Clone, Serialize, Deserialize)]
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
            parse("PIPEDRIVE_DAILY_TOKEN_BUDGET")?.unwrap_or(DEFAULT_DAILY_TOKEN_BUDGET);
        Ok(Some(Self {
            api_base: var("PIPEDRIVE_API_BASE").unwrap_or_else(|| DEFAULT_API_BASE.into()),
            api_token,
            access_token,
            client_id: var("PIPEDRIVE_CLIENT_ID"),
            client_secret: var("PIPEDRIVE_CLIENT_SECRET"),
            refresh_token,
            oauth_token_url: var("PIPEDRIVE_OAUTH_TOKEN_URL")
                .unwrap_or_else(|| DEFAULT_OAUTH_TOKEN_URL.into()),
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

    /// The tenant's Pipedrive account: its company (configured, else from `/v1/users/me`), the
    /// Basic credentials of its webhooks, and our API user, whose API writes come back as
    /// webhooks we drop.
    pub async fn account(&self, client: &PipedriveClient) -> Result<CrmAccount, SettingsError> {
        let me = match client.own_user().await {
            Ok(me) => Some(me),
            Err(e) => {
                warn!(error = %e, "could not read the Pipedrive user (/v1/users/me); own writes are recognised by content only");
                None
            }
        };
        if let (Some(configured), Some(me)) = (self.company_id, &me)
            && configured != me.company_id
        {
            warn!(
                configured,
                actual = me.company_id,
                "PIPEDRIVE_COMPANY_ID differs from the company of the Pipedrive credentials"
            );
        }
        let company_id = self
            .company_id
            .or(me.as_ref().map(|m| m.company_id))
            .ok_or(SettingsError::Missing("PIPEDRIVE_COMPANY_ID"))?;
        Ok(CrmAccount {
            provider: Provider::Pipedrive,
            account_id: company_id.to_string(),
            our_writer: me.map(|m| m.id.to_string()),
            webhook_auth: match (&self.webhook_user, &self.webhook_password) {
                (Some(user), Some(password)) => Some(WebhookAuth::Basic {
                    user: user.clone(),
                    password: password.clone(),
                }),
                _ => None,
            },
        })
    }
}

/// Registers (idempotently) the Pipedrive webhook that points at `public_base`, with the
/// account's Basic credentials. Without credentials no webhook is registered: changes then
/// arrive through the poll.
pub async fn register_webhook(
    tenant: &TenantId,
    client: &PipedriveClient,
    account: &CrmAccount,
    public_base: &str,
) {
    let Some(WebhookAuth::Basic { user, password }) = &account.webhook_auth else {
        warn!(%tenant, "PIPEDRIVE_WEBHOOK_USER/PIPEDRIVE_WEBHOOK_PASSWORD unset: no Pipedrive webhooks, changes arrive through the poll");
        return;
    };
    let url = format!("{}/webhooks/pipedrive", public_base.trim_end_matches('/'));
    match client
        .ensure_webhook(&url, Some(user), Some(password))
        .await
    {
        Ok(r) => {
            info!(%tenant, webhook_id = r.webhook_id, created = r.created, removed = r.removed, %url, "Pipedrive webhook ready")
        }
        Err(e) => {
            warn!(%tenant, error = %e, %url, "could not register the Pipedrive webhook; changes arrive through the poll")
        }
    }
}

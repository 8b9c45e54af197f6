//! A tenant's HubSpot settings: read from `HUBSPOT_*` variables (or the registry), turned into
//! a client and the tenant's HubSpot account.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_API_BASE, HubSpotAuth, HubSpotClient, HubSpotClientConfig};
use crate::domain::{CrmAccount, Provider, WebhookAuth};
use crate::settings::{SettingsError, parse, var};

/// Every `HUBSPOT_*` variable [`HubSpotSettings::from_env`] reads.
pub const ENV_VARS: [&str; 8] = [
    "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_REFRESH_TOKEN",
    "HUBSPOT_CLIENT_ID",
    "HUBSPOT_CLIENT_SECRET",
    "HUBSPOT_API_BASE",
    "HUBSPOT_APP_ID",
    "HUBSPOT_PORTAL_ID",
    "HUBSPOT_BURST_LIMIT",
];

/// `HUBSPOT_*` settings; present when `HUBSPOT_ACCESS_TOKEN` or `HUBSPOT_REFRESH_TOKEN` is set.
#[derive(Clone, Serialize, Deserialize)]
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

    /// The tenant's HubSpot account: webhooks name the portal, are signed with the app's
    /// client secret, and carry our app id on our own writes. Known without a call to HubSpot.
    pub fn account(&self) -> CrmAccount {
        CrmAccount {
            provider: Provider::HubSpot,
            account_id: self.portal_id.to_string(),
            our_writer: self.app_id.map(|id| id.to_string()),
            webhook_auth: self
                .client_secret
                .clone()
                .map(|secret| WebhookAuth::Signature { secret }),
        }
    }
}

//! Tenants and their settings. One deployment serves many tenants; locally there is one.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{ConflictPolicy, Provider, TenantId};
use crate::ports::CrmClient;

/// HubSpot settings of one tenant.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct HubSpotTenant {
    pub portal_id: u64,
    pub app_id: Option<u64>,
    /// Private-app token (or the current OAuth access token).
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client secret: verifies webhook signatures and refreshes OAuth tokens.
    #[serde(default)]
    pub client_secret: Option<String>,
}

/// Pipedrive settings of one tenant.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct PipedriveTenant {
    pub company_id: u64,
    #[serde(default)]
    pub api_token: Option<String>,
    #[serde(default)]
    pub webhook_user: Option<String>,
    #[serde(default)]
    pub webhook_password: Option<String>,
    /// Our API user (`GET /v1/users/me`): webhooks it caused through the API are our echoes.
    #[serde(default)]
    pub api_user_id: Option<u64>,
}

/// Everything known about a tenant. Secrets are never logged (no Debug derive).
#[derive(Clone, Serialize, Deserialize)]
pub struct TenantConfig {
    pub id: TenantId,
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
    /// Bearer key for the app API.
    #[serde(default)]
    pub api_key: Option<String>,
    /// HMAC secret of the app webhook.
    #[serde(default)]
    pub app_webhook_secret: Option<String>,
    #[serde(default)]
    pub hubspot: Option<HubSpotTenant>,
    #[serde(default)]
    pub pipedrive: Option<PipedriveTenant>,
}

impl std::fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfig")
            .field("id", &self.id)
            .field("conflict_policy", &self.conflict_policy)
            .field("hubspot", &self.hubspot.as_ref().map(|h| h.portal_id))
            .field("pipedrive", &self.pipedrive.as_ref().map(|p| p.company_id))
            .finish_non_exhaustive()
    }
}

impl TenantConfig {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: TenantId::new(id),
            conflict_policy: ConflictPolicy::default(),
            api_key: None,
            app_webhook_secret: None,
            hubspot: None,
            pipedrive: None,
        }
    }
}

/// The tenants of a deployment and the CRM clients serving each.
#[derive(Clone, Default)]
pub struct Tenants {
    configs: HashMap<TenantId, TenantConfig>,
    clients: HashMap<TenantId, Vec<Arc<dyn CrmClient>>>,
}

impl Tenants {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tenant with the CRM clients that serve it (in sync order).
    pub fn add(&mut self, config: TenantConfig, clients: Vec<Arc<dyn CrmClient>>) {
        self.clients.insert(config.id.clone(), clients);
        self.configs.insert(config.id.clone(), config);
    }

    pub fn get(&self, id: &TenantId) -> Option<&TenantConfig> {
        self.configs.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &TenantConfig> {
        self.configs.values()
    }

    pub fn clients(&self, id: &TenantId) -> &[Arc<dyn CrmClient>] {
        self.clients.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn client(&self, id: &TenantId, provider: Provider) -> Option<&Arc<dyn CrmClient>> {
        self.clients(id).iter().find(|c| c.provider() == provider)
    }

    pub fn providers(&self, id: &TenantId) -> Vec<Provider> {
        self.clients(id).iter().map(|c| c.provider()).collect()
    }

    /// The tenant whose API key this is (compared in constant time).
    pub fn by_api_key(&self, key: &str) -> Option<&TenantConfig> {
        self.configs.values().find(|t| {
            t.api_key
                .as_deref()
                .is_some_and(|k| crate::signature::constant_time_eq(k.as_bytes(), key.as_bytes()))
        })
    }

    pub fn by_hubspot_portal(&self, portal_id: u64) -> Option<&TenantConfig> {
        self.configs
            .values()
            .find(|t| t.hubspot.as_ref().is_some_and(|h| h.portal_id == portal_id))
    }

    pub fn by_pipedrive_company(&self, company_id: u64) -> Option<&TenantConfig> {
        self.configs.values().find(|t| {
            t.pipedrive
                .as_ref()
                .is_some_and(|p| p.company_id == company_id)
        })
    }
}

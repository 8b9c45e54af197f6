//! Tenants: who they are, their CRM accounts, and the registry that keeps them. One deployment
//! serves many tenants; locally there is one.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crm::CrmSettings;
use crate::domain::{ConflictPolicy, CrmAccount, Provider, TenantId};
use crate::error::StoreError;
use crate::ports::CrmClient;

/// Everything known about a tenant. Secrets are never logged (the Debug output leaves them out).
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
    /// Its CRM accounts, one per provider.
    #[serde(default)]
    pub accounts: Vec<CrmAccount>,
}

impl std::fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfig")
            .field("id", &self.id)
            .field("conflict_policy", &self.conflict_policy)
            .field("accounts", &self.accounts)
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
            accounts: Vec::new(),
        }
    }

    /// The tenant's account with `provider`.
    pub fn account(&self, provider: Provider) -> Option<&CrmAccount> {
        self.accounts.iter().find(|a| a.provider == provider)
    }
}

/// A registered tenant as the registry stores it: its configuration with the resolved CRM
/// accounts, and the settings its CRM clients are built from, so a cold start needs no CRM call
/// to serve it.
#[derive(Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub config: TenantConfig,
    #[serde(default)]
    pub crms: Vec<CrmSettings>,
}

/// The registry of tenants one deployment serves (written by the onboarding command).
#[async_trait]
pub trait TenantRegistry: Send + Sync {
    async fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError>;
    async fn registered_tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
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

    /// The tenant that owns this CRM account (a webhook's portal or company).
    pub fn by_account(&self, provider: Provider, account_id: &str) -> Option<&TenantConfig> {
        self.configs.values().find(|t| {
            t.account(provider)
                .is_some_and(|a| a.account_id == account_id)
        })
    }
}

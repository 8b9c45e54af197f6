//! Tenants: who they are, their CRM accounts, the registry that keeps them, and the directory
//! that serves them ([`Tenants`]: loaded when first needed, cached for a short time). One
//! deployment serves many tenants; locally there is one.

mod directory;
mod sealed;

pub use directory::{DEFAULT_TTL, TenantSource, Tenants};
pub use sealed::{SEALED, SealedRegistry, SecretStore};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crm::CrmSettings;
use crate::domain::{ConflictPolicy, CrmAccount, Provider, TenantId, WebhookAuth};
use crate::error::StoreError;

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
    /// Its field rules, as the sync state holds them (`PUT /settings/fields`), loaded where a
    /// sync plans; never part of the registry record.
    #[serde(skip)]
    pub field_rules: crate::domain::FieldRules,
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
            field_rules: Default::default(),
        }
    }

    /// The tenant's account with `provider`.
    pub fn account(&self, provider: Provider) -> Option<&CrmAccount> {
        self.accounts.iter().find(|a| a.provider == provider)
    }

    /// Every key the tenant can be found by (its API key, its CRM accounts, its webhook
    /// logins), as registry index entries.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if let Some(k) = &self.api_key {
            keys.push(TenantKey::ApiKey(k).index());
        }
        for a in &self.accounts {
            keys.push(TenantKey::Account(a.provider, &a.account_id).index());
            if let Some(WebhookAuth::Basic { user, password }) = &a.webhook_auth {
                keys.push(login_index(
                    a.provider,
                    format!("{user}:{password}").as_bytes(),
                ));
            }
        }
        keys
    }
}

/// What a request names its tenant by.
#[derive(Debug, Clone, Copy)]
pub enum TenantKey<'a> {
    /// The app API's bearer key.
    ApiKey(&'a str),
    /// A CRM account (a webhook's HubSpot portal or Pipedrive company).
    Account(Provider, &'a str),
    /// The decoded `user:password` of a CRM's webhook Basic auth.
    WebhookLogin(Provider, &'a [u8]),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn login_index(provider: Provider, login: &[u8]) -> String {
    format!("login#{provider}#{}", sha256_hex(login))
}

impl TenantKey<'_> {
    /// The registry's index entry for this key. Secrets are stored hashed, never as they are.
    pub fn index(&self) -> String {
        match self {
            TenantKey::ApiKey(k) => format!("api#{}", sha256_hex(k.as_bytes())),
            TenantKey::Account(p, id) => format!("account#{p}#{id}"),
            TenantKey::WebhookLogin(p, login) => login_index(*p, login),
        }
    }

    /// Whether `tenant` is the one this key names (secrets compared in constant time).
    pub fn matches(&self, tenant: &TenantConfig) -> bool {
        use crate::signature::constant_time_eq;
        match self {
            TenantKey::ApiKey(k) => tenant
                .api_key
                .as_deref()
                .is_some_and(|own| constant_time_eq(own.as_bytes(), k.as_bytes())),
            TenantKey::Account(p, id) => tenant.account(*p).is_some_and(|a| a.account_id == *id),
            TenantKey::WebhookLogin(p, login) => {
                tenant.account(*p).is_some_and(|a| match &a.webhook_auth {
                    Some(WebhookAuth::Basic { user, password }) => {
                        constant_time_eq(format!("{user}:{password}").as_bytes(), login)
                    }
                    _ => false,
                })
            }
        }
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
    /// Registers (or replaces) a tenant, with an index entry for each of its keys.
    async fn put_tenant(&self, record: &TenantRecord) -> Result<(), StoreError> {
        self.put_record(record, &record.config.keys()).await
    }
    /// Stores `record` as given, with these index entries ([`TenantKey::index`]): they are
    /// derived from the whole record, which may differ from the one stored (credentials sealed).
    async fn put_record(&self, record: &TenantRecord, index: &[String]) -> Result<(), StoreError>;
    /// Every registered tenant (the schedule polls them all).
    async fn registered_tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// One registered tenant.
    async fn registered_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError>;
    /// The tenant an index entry ([`TenantKey::index`]) points to.
    async fn tenant_by_index(&self, index: &str) -> Result<Option<TenantId>, StoreError>;
}

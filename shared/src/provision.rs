//! The one path that composes a tenant from its settings — CRM clients, CRM accounts (the
//! identities webhooks are matched by), custom fields, webhook registrations — used alike by
//! the local runner, the operator commands and the Lambda deployment.
//!
//! `connect` resolves accounts by asking the CRMs (Pipedrive's `/v1/users/me`); `from_record`
//! serves a registered tenant from what the registry stored, without a CRM call. `prepare`
//! gets a served tenant's custom fields ready; `register_webhooks` registers the webhooks that
//! code can register (Pipedrive's; HubSpot's are configured in the HubSpot app).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::crm::CrmSettings;
use crate::crm::hubspot::HubSpotClient;
use crate::crm::hubspot::settings::{self as hubspot, HubSpotSettings};
use crate::crm::pipedrive::settings::{self as pipedrive_settings, PipedriveSettings};
use crate::crm::pipedrive::{self, PipedriveClient};
use crate::domain::{CrmAccount, TenantId};
use crate::error::StoreError;
use crate::error::SyncError;
use crate::ports::{CrmClient, SharedLimits};
use crate::settings::{self, SettingsError};
use crate::sync::SyncService;
use crate::tenant::{TenantConfig, TenantRecord, TenantRegistry, TenantSource, Tenants};

/// The CRM settings of the environment (`HUBSPOT_*`, `PIPEDRIVE_*`): every CRM with
/// credentials, in sync order. A CRM's other settings without its credentials are refused,
/// apart from its API base, which deployment templates always set.
pub fn crms_from_env() -> Result<Vec<CrmSettings>, SettingsError> {
    let mut crms = Vec::new();
    match HubSpotSettings::from_env()? {
        Some(s) => crms.push(CrmSettings::HubSpot(s)),
        None => settings::refuse_without_credentials(
            "HubSpot",
            &hubspot::ENV_VARS,
            &["HUBSPOT_API_BASE"],
        )?,
    }
    match PipedriveSettings::from_env()? {
        Some(s) => crms.push(CrmSettings::Pipedrive(s)),
        None => settings::refuse_without_credentials(
            "Pipedrive",
            &pipedrive_settings::ENV_VARS,
            &["PIPEDRIVE_API_BASE"],
        )?,
    }
    Ok(crms)
}

/// The HTTP client every CRM client shares.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("contact-sync/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// What a tenant's CRM clients are built with: the HTTP client every client shares, and the
/// store of the limits every worker of a tenant shares (none: each process paces alone, as the
/// operator commands do).
#[derive(Clone)]
pub struct ClientKit {
    pub http: reqwest::Client,
    pub limits: Option<Arc<dyn SharedLimits>>,
}

impl ClientKit {
    /// Clients paced by this process alone.
    pub fn local(http: reqwest::Client) -> Self {
        Self { http, limits: None }
    }

    /// Clients paced by the limits `limits` keeps for every worker.
    pub fn shared(http: reqwest::Client, limits: Arc<dyn SharedLimits>) -> Self {
        Self {
            http,
            limits: Some(limits),
        }
    }
}

/// A connected CRM: the concrete client, for the steps only some CRMs have.
#[derive(Clone)]
enum Connection {
    HubSpot(Arc<HubSpotClient>),
    Pipedrive(Arc<PipedriveClient>),
}

impl Connection {
    /// The provisioning registry: how each CRM's settings become a client (no network), paced
    /// by the tenant's shared limits when the kit has them.
    fn open(
        settings: &CrmSettings,
        kit: &ClientKit,
        tenant: &TenantId,
    ) -> Result<Self, SettingsError> {
        let http = &kit.http;
        let connection = match settings {
            CrmSettings::HubSpot(s) => Connection::HubSpot(s.client(http)?),
            CrmSettings::Pipedrive(s) => Connection::Pipedrive(s.client(http)?),
        };
        if let Some(limits) = &kit.limits {
            match &connection {
                Connection::HubSpot(c) => c.share_limits(limits.clone(), tenant.clone()),
                Connection::Pipedrive(c) => c.share_limits(limits.clone(), tenant.clone()),
            }
        }
        Ok(connection)
    }

    /// The CRM account the settings stand for, asking the CRM where it must.
    async fn account(&self, settings: &CrmSettings) -> Result<CrmAccount, SettingsError> {
        match (self, settings) {
            (Connection::HubSpot(_), CrmSettings::HubSpot(s)) => Ok(s.account()),
            (Connection::Pipedrive(c), CrmSettings::Pipedrive(s)) => s.account(c).await,
            _ => unreachable!("a connection is opened from its own settings"),
        }
    }

    fn client(&self) -> Arc<dyn CrmClient> {
        match self {
            Connection::HubSpot(c) => c.clone(),
            Connection::Pipedrive(c) => c.clone(),
        }
    }
}

/// A tenant composed from its settings, ready to be served.
#[derive(Clone)]
pub struct Provisioned {
    pub config: TenantConfig,
    crms: Vec<(CrmSettings, Connection)>,
}

/// Composes a tenant: opens a client per CRM and resolves its accounts. `base` carries the
/// tenant's id, keys and policy; its accounts are replaced by the resolved ones.
pub async fn connect(
    base: TenantConfig,
    crms: Vec<CrmSettings>,
    kit: &ClientKit,
) -> Result<Provisioned, SettingsError> {
    let mut config = base;
    config.accounts.clear();
    let mut opened = Vec::with_capacity(crms.len());
    for settings in crms {
        let connection = Connection::open(&settings, kit, &config.id)?;
        config.accounts.push(connection.account(&settings).await?);
        opened.push((settings, connection));
    }
    Ok(Provisioned {
        config,
        crms: opened,
    })
}

/// A registered tenant from what the registry stored: no CRM call.
pub fn from_record(record: &TenantRecord, kit: &ClientKit) -> Result<Provisioned, SettingsError> {
    let crms = record
        .crms
        .iter()
        .map(|s| Ok((s.clone(), Connection::open(s, kit, &record.config.id)?)))
        .collect::<Result<_, SettingsError>>()?;
    Ok(Provisioned {
        config: record.config.clone(),
        crms,
    })
}

/// How much [`Provisioned::prepare`] asks the CRMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preparation {
    /// Look every field up afresh (an account may have gained a standard field since), and
    /// learn which pronouns fields exist: when a tenant is onboarded or the local runner starts.
    Fresh,
    /// Only fields with no stored key yet: a Lambda cold start.
    Missing,
}

impl Provisioned {
    /// The tenant's CRM clients, in sync order.
    pub fn clients(&self) -> Vec<Arc<dyn CrmClient>> {
        self.crms.iter().map(|(_, c)| c.client()).collect()
    }

    /// Serves the tenant from `tenants`.
    pub fn add_to(&self, tenants: &mut Tenants) {
        tenants.add(self.config.clone(), self.clients());
    }

    /// What the registry keeps of the tenant.
    pub fn record(&self) -> TenantRecord {
        TenantRecord {
            config: self.config.clone(),
            crms: self.crms.iter().map(|(s, _)| s.clone()).collect(),
        }
    }

    /// Gets the tenant's custom fields ready in every CRM (the service must serve it): the
    /// fields set up without asking, and with [`Preparation::Fresh`] the pronouns fields
    /// already there. Failures are logged: a client finds a field itself when it needs it.
    pub async fn prepare(&self, service: &SyncService, how: Preparation) -> Result<(), SyncError> {
        let tenant = &self.config.id;
        service
            .prepare_fields(tenant, how == Preparation::Fresh)
            .await?;
        if how == Preparation::Fresh {
            for (provider, found) in service.refresh_pronouns_fields(tenant).await? {
                if let Err(e) = found {
                    tracing::warn!(%tenant, %provider, error = %e, "could not check the pronouns field");
                }
            }
        }
        Ok(())
    }

    /// Registers the tenant's webhooks for `public_base` where code can (Pipedrive; HubSpot's
    /// webhook subscriptions are configured in the HubSpot app). Failures are logged: changes
    /// then arrive through the poll.
    pub async fn register_webhooks(&self, public_base: &str) {
        for (_, connection) in &self.crms {
            if let Connection::Pipedrive(client) = connection
                && let Some(account) = self.config.account(crate::domain::Provider::Pipedrive)
            {
                pipedrive::settings::register_webhook(
                    &self.config.id,
                    client,
                    account,
                    public_base,
                )
                .await;
            }
        }
    }
}

/// Registered tenants, read from the registry when first needed (see [`Tenants`]): their
/// clients are opened from the stored settings, with no CRM call.
pub struct RegistrySource {
    registry: Arc<dyn TenantRegistry>,
    kit: ClientKit,
}

impl RegistrySource {
    pub fn new(registry: Arc<dyn TenantRegistry>, kit: ClientKit) -> Self {
        Self { registry, kit }
    }
}

#[async_trait]
impl TenantSource for RegistrySource {
    async fn record(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        self.registry.registered_tenant(id).await
    }

    async fn find(&self, index: &str) -> Result<Option<TenantId>, StoreError> {
        self.registry.tenant_by_index(index).await
    }

    async fn records(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.registry.registered_tenants().await
    }

    fn open(&self, record: &TenantRecord) -> Result<Vec<Arc<dyn CrmClient>>, StoreError> {
        from_record(record, &self.kit)
            .map(|p| p.clients())
            .map_err(|e| StoreError::Backend(format!("tenant {}: {e}", record.config.id)))
    }
}

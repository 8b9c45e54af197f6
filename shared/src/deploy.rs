//! The deployed wiring: DynamoDB + SQS + CRM clients from the environment, built once per
//! Lambda cold start; registered tenants are read when first needed.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::adapters::aws::dynamo::{DynamoStore, TableNames};
use crate::adapters::aws::secrets::SecretsManager;
use crate::adapters::aws::sqs::SqsQueue;
use crate::error::StoreError;
use crate::http::{AppState, HttpSettings};
use crate::provision::{self, ClientKit, Preparation, RegistrySource};
use crate::settings::{SettingsError, var};
use crate::sync::SyncService;
use crate::tenant::{DEFAULT_TTL, SealedRegistry, TenantConfig, TenantRegistry, Tenants};

/// Where tenants' credentials are kept in Secrets Manager when `TENANT_SECRET_PREFIX` is unset.
pub const DEFAULT_TENANT_SECRET_PREFIX: &str = "contact-sync/tenants/";

#[derive(Debug, Error)]
pub enum DeployError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything a function needs.
#[derive(Clone)]
pub struct Deployment {
    pub service: SyncService,
    pub queue: Arc<SqsQueue>,
    pub store: Arc<DynamoStore>,
    /// Registered tenants: records in the SyncState table, credentials in Secrets Manager.
    pub registry: Arc<dyn TenantRegistry>,
    pub settings: Arc<HttpSettings>,
}

impl Deployment {
    /// Publishes sync outcomes to the EventBridge bus `EVENT_BUS_NAME`, when set (the functions
    /// that sync call this; the others never link the EventBridge client).
    pub async fn with_event_bus(mut self) -> Self {
        if let Some(bus) = var("EVENT_BUS_NAME") {
            let aws = aws_config::load_from_env().await;
            let sink = crate::adapters::aws::events::EventBridgeSink::new(
                aws_sdk_eventbridge::Client::new(&aws),
                bus,
            );
            self.service = self.service.clone().with_outcomes(Arc::new(sink));
        }
        self
    }

    /// Reads `CONTACTS_TABLE`, `LINKS_TABLE`, `STATE_TABLE`, `SYNC_QUEUE_URL`, `SYNC_DLQ_URL`,
    /// the tenant (`TENANT_ID`, `API_KEY`, `APP_WEBHOOK_SECRET`), the CRM settings, and
    /// `TENANT_SECRET_PREFIX` (registered tenants' secrets in Secrets Manager).
    pub async fn from_env() -> Result<Self, DeployError> {
        // Every function's metrics go to CloudWatch as EMF lines on stdout.
        crate::metrics::enable();
        let aws = aws_config::load_from_env().await;
        let store = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&aws),
            TableNames::from_env()?,
        ));
        let queue = Arc::new(SqsQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            var("SYNC_QUEUE_URL").ok_or(SettingsError::Missing("SYNC_QUEUE_URL"))?,
            var("SYNC_DLQ_URL").ok_or(SettingsError::Missing("SYNC_DLQ_URL"))?,
        ));
        // Every worker of a tenant paces by the limits kept in the SyncState table.
        let kit = ClientKit::shared(crate::provision::http_client(), store.clone());
        let mut provisioned = Vec::new();
        // The one tenant configured in the environment (a single-tenant deployment)...
        if let Some(api_key) = var("API_KEY") {
            let mut tenant =
                TenantConfig::new(var("TENANT_ID").unwrap_or_else(|| "default".into()));
            tenant.api_key = Some(api_key);
            tenant.app_webhook_secret = var("APP_WEBHOOK_SECRET");
            provisioned.push(provision::connect(tenant, provision::crms_from_env()?, &kit).await?);
        }
        let mut tenants = Tenants::new();
        for p in &provisioned {
            p.add_to(&mut tenants);
        }
        // ...and those registered with `contact-sync-ops onboard-tenant`, each read when a
        // request or job first names it (none at the cold start), and again after the TTL.
        let ttl = match var("TENANT_CACHE_TTL_SECS") {
            Some(v) => Duration::from_secs(v.parse().map_err(|_| SettingsError::Invalid {
                name: "TENANT_CACHE_TTL_SECS",
                value: v.clone(),
            })?),
            None => DEFAULT_TTL,
        };
        let registry: Arc<dyn TenantRegistry> = Arc::new(SealedRegistry::new(
            store.clone(),
            Arc::new(SecretsManager::new(
                aws_sdk_secretsmanager::Client::new(&aws),
                var("TENANT_SECRET_PREFIX").unwrap_or_else(|| DEFAULT_TENANT_SECRET_PREFIX.into()),
            )),
        ));
        let tenants =
            tenants.with_source(Arc::new(RegistrySource::new(registry.clone(), kit)), ttl);
        let mut service = SyncService::new(
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::new(tenants),
        );
        if let Some(v) = var("CHECK_GRACE_SECS") {
            let secs = v.parse().map_err(|_| SettingsError::Invalid {
                name: "CHECK_GRACE_SECS",
                value: v.clone(),
            })?;
            service = service.with_check_grace(Duration::from_secs(secs));
        }
        if let Some(v) = var("WEBHOOK_GRACE_SECS") {
            let secs = v.parse().map_err(|_| SettingsError::Invalid {
                name: "WEBHOOK_GRACE_SECS",
                value: v.clone(),
            })?;
            service = service.with_webhook_grace(Duration::from_secs(secs));
        }
        // Fields a cold start finds unprepared (registered tenants were prepared when
        // onboarded; an environment tenant is prepared on its first cold start).
        for p in &provisioned {
            if let Err(e) = p.prepare(&service, Preparation::Missing).await {
                tracing::warn!(tenant = %p.config.id, error = %e, "could not prepare the CRM fields");
            }
        }
        Ok(Self {
            service,
            queue,
            store,
            registry,
            settings: Arc::new(HttpSettings {
                public_base_url: var("PUBLIC_BASE_URL"),
            }),
        })
    }

    pub fn app_state(&self) -> AppState {
        AppState {
            service: self.service.clone(),
            queue: self.queue.clone(),
            settings: self.settings.clone(),
        }
    }
}

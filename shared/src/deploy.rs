//! The deployed wiring: DynamoDB + SQS + CRM clients from the environment, built once per
//! Lambda cold start.

use std::sync::Arc;

use thiserror::Error;

use crate::adapters::aws::dynamo::{DynamoStore, TableNames};
use crate::adapters::aws::sqs::SqsQueue;
use crate::error::StoreError;
use crate::http::{AppState, HttpSettings};
use crate::ports::TenantRegistry;
use crate::service::SyncService;
use crate::settings::{
    HUBSPOT_VARS, HubSpotSettings, PIPEDRIVE_VARS, PipedriveSettings, SettingsError,
    refuse_without_credentials, tenant_setup, var,
};
use crate::tenant::{TenantConfig, Tenants};

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
    pub settings: Arc<HttpSettings>,
}

impl Deployment {
    /// Reads `CONTACTS_TABLE`, `LINKS_TABLE`, `STATE_TABLE`, `SYNC_QUEUE_URL`, `SYNC_DLQ_URL`,
    /// the tenant (`TENANT_ID`, `API_KEY`, `APP_WEBHOOK_SECRET`) and the CRM settings.
    pub async fn from_env() -> Result<Self, DeployError> {
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
        let http = crate::settings::http_client();
        let mut tenants = Tenants::new();
        // The tenants registered with `contact-sync-ops onboard-tenant`...
        for record in store.registered_tenants().await? {
            let clients = record.clients(&http)?;
            tenants.add(record.config, clients);
        }
        // ...and the one configured in the environment (a single-tenant deployment).
        if let Some(api_key) = var("API_KEY") {
            let mut tenant =
                TenantConfig::new(var("TENANT_ID").unwrap_or_else(|| "default".into()));
            tenant.api_key = Some(api_key);
            tenant.app_webhook_secret = var("APP_WEBHOOK_SECRET");
            let hubspot = HubSpotSettings::from_env()?;
            if hubspot.is_none() {
                refuse_without_credentials("HubSpot", &HUBSPOT_VARS, &["HUBSPOT_API_BASE"])?;
            }
            let pipedrive = PipedriveSettings::from_env()?;
            if pipedrive.is_none() {
                refuse_without_credentials("Pipedrive", &PIPEDRIVE_VARS, &["PIPEDRIVE_API_BASE"])?;
            }
            let setup = tenant_setup(tenant, hubspot.as_ref(), pipedrive.as_ref(), &http).await?;
            tenants.add(setup.config, setup.clients);
        }
        let service = SyncService::new(
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::new(tenants),
        );
        Ok(Self {
            service,
            queue,
            store,
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

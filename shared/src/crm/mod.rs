//! CRM adapters of the [`CrmClient`](crate::ports::CrmClient) port, one folder per CRM, and the
//! settings each is built from.

pub mod hubspot;
pub mod memory;
pub mod pacer;
pub mod pipedrive;
pub mod transport;

use serde::{Deserialize, Serialize};

use crate::domain::Provider;

/// The settings of one CRM connection of a tenant (stored in the tenant registry).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum CrmSettings {
    #[serde(rename = "hubspot")]
    HubSpot(hubspot::settings::HubSpotSettings),
    Pipedrive(pipedrive::settings::PipedriveSettings),
}

impl CrmSettings {
    pub fn provider(&self) -> Provider {
        match self {
            CrmSettings::HubSpot(_) => Provider::HubSpot,
            CrmSettings::Pipedrive(_) => Provider::Pipedrive,
        }
    }
}

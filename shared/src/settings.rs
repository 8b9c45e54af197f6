//! Reading settings from the environment: the helpers every entry point uses, and the rule that
//! a CRM's settings without its credentials are refused rather than ignored. Each CRM's own
//! settings live beside its client (`crm/<name>/settings.rs`).

use thiserror::Error;

use crate::crm::CrmSettings;
use crate::crm::hubspot::settings::{self as hubspot, HubSpotSettings};
use crate::crm::pipedrive::settings::{self as pipedrive, PipedriveSettings};

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

/// Every CRM variable the settings read, per CRM: `(CRM, names)`.
pub const CRM_VARS: [(&str, &[&str]); 2] = [
    ("HubSpot", &hubspot::ENV_VARS),
    ("Pipedrive", &pipedrive::ENV_VARS),
];

/// Refuses the settings of a CRM that has no credentials (they would be silently ignored).
/// `defaults` are names a deployment template always sets (an API base) and that say nothing.
pub fn refuse_without_credentials(
    crm: &'static str,
    vars: &[&str],
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

/// The CRM settings of the environment (`HUBSPOT_*`, `PIPEDRIVE_*`): every CRM with
/// credentials, in sync order. A CRM's other settings without its credentials are refused,
/// apart from its API base, which deployment templates always set.
pub fn crms_from_env() -> Result<Vec<CrmSettings>, SettingsError> {
    let mut crms = Vec::new();
    match HubSpotSettings::from_env()? {
        Some(s) => crms.push(CrmSettings::HubSpot(s)),
        None => refuse_without_credentials("HubSpot", &hubspot::ENV_VARS, &["HUBSPOT_API_BASE"])?,
    }
    match PipedriveSettings::from_env()? {
        Some(s) => crms.push(CrmSettings::Pipedrive(s)),
        None => {
            refuse_without_credentials("Pipedrive", &pipedrive::ENV_VARS, &["PIPEDRIVE_API_BASE"])?
        }
    }
    Ok(crms)
}

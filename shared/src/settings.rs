//! Reading settings from the environment: the helpers every entry point uses, and the rule that
//! a CRM's settings without its credentials are refused rather than ignored. Each CRM's own
//! settings live beside its client (`crm/<name>/settings.rs`); `provision` reads them all.

use thiserror::Error;

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

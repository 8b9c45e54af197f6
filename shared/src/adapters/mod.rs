//! Adapters of the store and queue ports, and the sync state's layout written once over the
//! key-value port both stores implement.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod limits;
pub mod state;

use crate::domain::{ContactLink, Provider};

/// A link's key within its tenant: `provider#externalId` (the ContactLinks sort key).
pub fn link_sort_key(provider: Provider, external_id: &str) -> String {
    format!("{}#{}", provider.as_str(), external_id)
}

/// [`link_sort_key`] of a link.
pub fn link_key(link: &ContactLink) -> String {
    link_sort_key(link.provider, &link.external_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_sort_key_is_provider_hash_external_id() {
        assert_eq!(link_sort_key(Provider::Pipedrive, "42"), "pipedrive#42");
    }
}

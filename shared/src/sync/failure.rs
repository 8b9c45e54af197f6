//! A failed sync made visible: on the contact's link (or as an issue of the contact when it has
//! none yet) and in the CRM's stats; a spent quota pauses the CRM for the tenant. A wait for
//! another worker's create, or a job that ran out of time, is not a failure.

use tracing::{info, warn};

use super::SyncService;
use crate::domain::{LinkStatus, Provider, TenantId};
use crate::error::{CrmError, SyncError};

impl SyncService {
    /// Makes a failed sync visible: on the contact's link (or as an issue of the contact when it
    /// has none yet) and in the CRM's stats; a spent quota pauses the CRM for the tenant.
    pub(super) async fn record_failure(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        provider: Provider,
        err: &SyncError,
    ) {
        if matches!(err, SyncError::Busy { .. }) || err.is_out_of_time() {
            // Not a failure: another worker is creating the record, and owns its intent; or the
            // job ran out of time and runs again.
            info!(%tenant, contact_id, %provider, "{err}");
            return;
        }
        warn!(%tenant, contact_id, %provider, error = %err, "sync failed");
        let message = err.to_string();
        if let SyncError::Crm(CrmError::QuotaExhausted { until, .. }) = err {
            let _ = self
                .state
                .set_paused_until(tenant, provider, Some(*until))
                .await;
            self.quota_paused(tenant, provider, *until).await;
        }
        let _ = self
            .state
            .record_outcome(tenant, provider, Err(message.clone()), 0)
            .await;
        let status = if err.deferred_until().is_some() {
            LinkStatus::Pending
        } else {
            LinkStatus::Error
        };
        let link = self
            .links
            .link_for_contact(tenant, contact_id, provider)
            .await
            .unwrap_or_default();
        // An intent is left to its creator (a write would cost it its version): the failure
        // shows as an issue of the contact, as for a contact without a link.
        match link.filter(|l| l.status != LinkStatus::Deleted && !l.is_intent()) {
            Some(mut link) => {
                link.status = status;
                link.last_error = Some(message);
                let _ = self.links.put_link(&link).await;
            }
            None => {
                let _ = self
                    .state
                    .set_issue(tenant, contact_id, provider, Some(&message))
                    .await;
            }
        }
    }
}

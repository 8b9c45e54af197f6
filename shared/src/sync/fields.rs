//! Our custom fields in the CRMs: pronouns (set up at the tenant's request) and the fields a CRM
//! needs prepared without asking (Pipedrive's job title). Their keys are stored per tenant and
//! CRM, so every [`crate::ports::CrmContext`] carries them.

use tracing::{info, warn};

use super::SyncService;
use crate::domain::{CustomField, Provider, TenantId};
use crate::error::{CrmError, SyncError};

impl SyncService {
    /// Creates the pronouns field in every CRM of the tenant (idempotent) and stores its key.
    pub async fn setup_pronouns(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Provider, Result<String, CrmError>)>, SyncError> {
        self.tenant(tenant)?;
        let mut out = Vec::new();
        for client in self.tenants.clients(tenant).to_vec() {
            let provider = client.provider();
            if !client.custom_fields().contains(&CustomField::Pronouns) {
                continue;
            }
            let ctx = self.crm_context(tenant, client.as_ref()).await?;
            let result = client.ensure_field(&ctx, CustomField::Pronouns).await;
            if let Ok(key) = &result {
                self.state
                    .set_field_key(tenant, provider, CustomField::Pronouns, Some(key))
                    .await?;
                info!(%tenant, %provider, key, "pronouns field ready");
            }
            out.push((provider, result));
        }
        Ok(out)
    }

    /// Looks the pronouns field up in every CRM (without creating it) and stores what it finds.
    pub async fn refresh_pronouns_fields(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Provider, Result<Option<String>, CrmError>)>, SyncError> {
        self.tenant(tenant)?;
        let mut out = Vec::new();
        for client in self.tenants.clients(tenant).to_vec() {
            let provider = client.provider();
            if !client.custom_fields().contains(&CustomField::Pronouns) {
                continue;
            }
            let ctx = self.crm_context(tenant, client.as_ref()).await?;
            let found = client.find_field(&ctx, CustomField::Pronouns).await;
            if let Ok(key) = &found {
                self.state
                    .set_field_key(tenant, provider, CustomField::Pronouns, key.as_deref())
                    .await?;
            }
            out.push((provider, found));
        }
        Ok(out)
    }

    /// Prepares the custom fields a CRM needs without asking (see [`CustomField::automatic`]):
    /// found (afresh with `fresh`: the account may have gained a standard field; else only when
    /// no key is stored yet), created when missing, and stored. A failure is logged; the client
    /// then finds the field itself when it needs it.
    pub async fn prepare_fields(&self, tenant: &TenantId, fresh: bool) -> Result<(), SyncError> {
        self.tenant(tenant)?;
        for client in self.tenants.clients(tenant).to_vec() {
            let provider = client.provider();
            for &field in client.custom_fields().iter().filter(|f| f.automatic()) {
                let mut ctx = self.crm_context(tenant, client.as_ref()).await?;
                if ctx.field(field).is_some() && !fresh {
                    continue;
                }
                ctx.fields.remove(&field);
                match client.ensure_field(&ctx, field).await {
                    Ok(key) => {
                        self.state
                            .set_field_key(tenant, provider, field, Some(&key))
                            .await?
                    }
                    Err(e) => {
                        warn!(%tenant, %provider, field = field.as_str(), error = %e, "could not prepare the field")
                    }
                }
            }
        }
        Ok(())
    }
}

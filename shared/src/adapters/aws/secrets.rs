//! Tenants' credentials in AWS Secrets Manager: one secret per tenant, named
//! `<prefix><tenant>` (the template scopes the functions' read access to the prefix).

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;

use super::sdk_message;
use crate::domain::TenantId;
use crate::error::StoreError;
use crate::tenant::SecretStore;

pub struct SecretsManager {
    client: Client,
    prefix: String,
}

impl SecretsManager {
    /// `prefix`: e.g. `contact-sync/prod/tenants/`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }

    fn name(&self, tenant: &TenantId) -> String {
        format!("{}{}", self.prefix, tenant.as_str())
    }
}

fn backend<E: std::error::Error>(what: &str, tenant: &TenantId, e: &E) -> StoreError {
    // The message names the secret, never its value (the SDK's errors carry none).
    StoreError::Backend(format!(
        "{what} of tenant {tenant}'s secret: {}",
        sdk_message(e)
    ))
}

#[async_trait]
impl SecretStore for SecretsManager {
    async fn put_secret(&self, tenant: &TenantId, value: &str) -> Result<(), StoreError> {
        let name = self.name(tenant);
        let created = self
            .client
            .create_secret()
            .name(&name)
            .description(format!("contact-sync: the credentials of tenant {tenant}"))
            .secret_string(value)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_exists_exception()) =>
            {
                // A new version: readers see it at their next read (rotation).
                self.client
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(value)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| backend("update", tenant, &e))
            }
            Err(e) => Err(backend("creation", tenant, &e)),
        }
    }

    async fn secret(&self, tenant: &TenantId) -> Result<Option<String>, StoreError> {
        match self
            .client
            .get_secret_value()
            .secret_id(self.name(tenant))
            .send()
            .await
        {
            Ok(out) => Ok(out.secret_string),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(backend("read", tenant, &e)),
        }
    }
}

//! Tenant credentials kept apart from the registry: a registered tenant's record is stored with
//! every credential replaced by a marker, and the credentials themselves in a [`SecretStore`]
//! (AWS Secrets Manager in a deployment: one secret per tenant). Reading a tenant joins the two,
//! so a credential rotated in the secret store takes effect when the directory next reads the
//! tenant (its TTL), without a redeploy; anything that can read the registry's table reads no
//! credential.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{TenantRecord, TenantRegistry};
use crate::domain::TenantId;
use crate::error::StoreError;

/// Where a tenant's credentials are kept: one JSON document per tenant.
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn put_secret(&self, tenant: &TenantId, value: &str) -> Result<(), StoreError>;
    async fn secret(&self, tenant: &TenantId) -> Result<Option<String>, StoreError>;
}

/// The field names whose values are credentials, wherever they sit in a record.
const CREDENTIALS: [&str; 9] = [
    "api_key",
    "app_webhook_secret",
    "secret",
    "password",
    "access_token",
    "refresh_token",
    "client_secret",
    "api_token",
    "webhook_password",
];

/// What a sealed credential's value is replaced with in the stored record.
pub const SEALED: &str = "<sealed>";

/// The record with every credential sealed, and the credentials by their JSON pointer.
fn seal(record: &TenantRecord) -> Result<(Value, BTreeMap<String, String>), StoreError> {
    let mut value = serde_json::to_value(record).map_err(backend)?;
    let mut secrets = BTreeMap::new();
    walk(&mut value, String::new(), &mut |pointer, v| {
        if let Value::String(s) = v {
            secrets.insert(pointer.to_string(), std::mem::replace(s, SEALED.into()));
        }
    });
    Ok((value, secrets))
}

/// The record `sealed` stood for, its credentials put back from `secrets`. A sealed credential
/// missing from `secrets` is an error: a tenant is never served with a marker for a secret.
fn unseal(
    mut sealed: Value,
    secrets: &BTreeMap<String, String>,
) -> Result<TenantRecord, StoreError> {
    let mut missing = Vec::new();
    walk(&mut sealed, String::new(), &mut |pointer, v| {
        if v.as_str() == Some(SEALED) {
            match secrets.get(pointer) {
                Some(s) => *v = Value::String(s.clone()),
                None => missing.push(pointer.to_string()),
            }
        }
    });
    if !missing.is_empty() {
        return Err(StoreError::Backend(format!(
            "the tenant's secret lacks {}",
            missing.join(", ")
        )));
    }
    serde_json::from_value(sealed).map_err(backend)
}

/// Calls `f` with every value stored under a credential's name, and its JSON pointer.
fn walk(value: &mut Value, pointer: String, f: &mut dyn FnMut(&str, &mut Value)) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let here = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                if CREDENTIALS.contains(&key.as_str()) && v.is_string() {
                    f(&here, v);
                } else {
                    walk(v, here, f);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, format!("{pointer}/{i}"), f);
            }
        }
        _ => {}
    }
}

fn backend(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("tenant record: {e}"))
}

/// A registry whose records keep their credentials in a [`SecretStore`].
pub struct SealedRegistry {
    records: Arc<dyn TenantRegistry>,
    secrets: Arc<dyn SecretStore>,
}

impl SealedRegistry {
    pub fn new(records: Arc<dyn TenantRegistry>, secrets: Arc<dyn SecretStore>) -> Self {
        Self { records, secrets }
    }

    /// A stored record with its sealed credentials put back (a record stored before sealing,
    /// with its credentials in place, is read as it is).
    async fn open(&self, stored: TenantRecord) -> Result<TenantRecord, StoreError> {
        let sealed = serde_json::to_value(&stored).map_err(backend)?;
        let secrets = match self.secrets.secret(&stored.config.id).await? {
            Some(json) => serde_json::from_str(&json).map_err(backend)?,
            None => BTreeMap::new(),
        };
        unseal(sealed, &secrets)
    }
}

#[async_trait]
impl TenantRegistry for SealedRegistry {
    async fn put_record(&self, record: &TenantRecord, index: &[String]) -> Result<(), StoreError> {
        let (sealed, secrets) = seal(record)?;
        let json = serde_json::to_string(&secrets).map_err(backend)?;
        // The secret first: a record is never there without the credentials it names.
        self.secrets.put_secret(&record.config.id, &json).await?;
        let stored: TenantRecord = serde_json::from_value(sealed).map_err(backend)?;
        self.records.put_record(&stored, index).await
    }

    async fn registered_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let mut out = Vec::new();
        for stored in self.records.registered_tenants().await? {
            out.push(self.open(stored).await?);
        }
        Ok(out)
    }

    async fn registered_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        match self.records.registered_tenant(id).await? {
            Some(stored) => Ok(Some(self.open(stored).await?)),
            None => Ok(None),
        }
    }

    async fn tenant_by_index(&self, index: &str) -> Result<Option<TenantId>, StoreError> {
        self.records.tenant_by_index(index).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantConfig;

    fn record() -> TenantRecord {
        let mut config = TenantConfig::new("acme");
        config.api_key = Some("the-api-key".into());
        config.app_webhook_secret = Some("the-app-secret".into());
        TenantRecord {
            config,
            crms: Vec::new(),
        }
    }

    #[test]
    fn sealing_takes_every_credential_out_and_unsealing_puts_it_back() {
        let (sealed, secrets) = seal(&record()).unwrap();
        let text = sealed.to_string();
        assert!(!text.contains("the-api-key") && !text.contains("the-app-secret"));
        assert_eq!(secrets["/config/api_key"], "the-api-key");
        let back = unseal(sealed, &secrets).unwrap();
        assert_eq!(
            serde_json::to_value(back).unwrap(),
            serde_json::to_value(record()).unwrap()
        );
    }

    #[test]
    fn a_record_stored_before_sealing_is_read_as_it_is() {
        let plain = serde_json::to_value(record()).unwrap();
        let read = unseal(plain.clone(), &BTreeMap::new()).unwrap();
        assert_eq!(serde_json::to_value(read).unwrap(), plain);
    }
}

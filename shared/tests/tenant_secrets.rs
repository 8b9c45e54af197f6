//! Registered tenants' credentials live in AWS Secrets Manager (one secret per tenant), not in
//! the registry's table; a credential rotated there takes effect at the directory's next read
//! of the tenant. Against moto server with the real SDK clients, as deployed (`deploy.rs`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::aws::dynamo::{DynamoStore, TableNames};
use shared::adapters::aws::secrets::SecretsManager;
use shared::crm::CrmSettings;
use shared::crm::hubspot::settings::HubSpotSettings;
use shared::provision::{ClientKit, RegistrySource};
use shared::tenant::{
    SEALED, SealedRegistry, SecretStore, TenantConfig, TenantKey, TenantRecord, TenantRegistry,
    Tenants,
};
use shared::{CrmAccount, Provider, TenantId, WebhookAuth};

/// Every credential of the test tenant, each distinct.
const CREDENTIALS: [&str; 5] = [
    "api-key-acme-5d1e",
    "app-hook-secret-acme-77aa",
    "pat-na1-acme-token-0b3c",
    "hubspot-client-secret-acme-19fe",
    "pipedrive-hook-password-acme-c4d2",
];

struct Deployed {
    tables: TableNames,
    dynamo: aws_sdk_dynamodb::Client,
    secrets: Arc<SecretsManager>,
    registry: Arc<SealedRegistry>,
}

async fn deployed() -> Deployed {
    let cfg = common::moto::sdk_config().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let tables = TableNames::with_prefix(&prefix);
    let dynamo = aws_sdk_dynamodb::Client::new(&cfg);
    let store = Arc::new(DynamoStore::new(dynamo.clone(), tables.clone()));
    store.create_tables().await.unwrap();
    let secrets = Arc::new(SecretsManager::new(
        aws_sdk_secretsmanager::Client::new(&cfg),
        format!("contact-sync/{prefix}/tenants/"),
    ));
    let registry = Arc::new(SealedRegistry::new(store, secrets.clone()));
    Deployed {
        tables,
        dynamo,
        secrets,
        registry,
    }
}

fn record() -> TenantRecord {
    let [api_key, app_secret, token, client_secret, hook_password] = CREDENTIALS;
    let mut config = TenantConfig::new("acme");
    config.api_key = Some(api_key.into());
    config.app_webhook_secret = Some(app_secret.into());
    let hubspot = HubSpotSettings {
        api_base: "http://127.0.0.1:9".into(),
        access_token: Some(token.into()),
        client_id: None,
        refresh_token: None,
        client_secret: Some(client_secret.into()),
        app_id: Some(7),
        portal_id: 111,
        burst_limit: 100,
    };
    config.accounts = vec![
        hubspot.account(),
        CrmAccount {
            provider: Provider::Pipedrive,
            account_id: "222".into(),
            our_writer: None,
            webhook_auth: Some(WebhookAuth::Basic {
                user: "hook-user".into(),
                password: hook_password.into(),
            }),
        },
    ];
    TenantRecord {
        config,
        crms: vec![CrmSettings::HubSpot(hubspot)],
    }
}

/// Every item of the SyncState table, as text.
async fn state_table(d: &Deployed) -> String {
    let items = d
        .dynamo
        .scan()
        .table_name(&d.tables.state)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert!(!items.is_empty());
    format!("{items:?}")
}

#[tokio::test]
async fn a_registered_tenants_credentials_are_in_secrets_manager_not_in_the_table() {
    let d = deployed().await;
    let original = record();
    d.registry.put_tenant(&original).await.unwrap();

    let table = state_table(&d).await;
    for secret in CREDENTIALS {
        assert!(!table.contains(secret), "{secret} is in the table: {table}");
    }
    assert!(
        table.contains(SEALED),
        "the record is stored sealed: {table}"
    );
    let stored = d
        .secrets
        .secret(&TenantId::new("acme"))
        .await
        .unwrap()
        .expect("the tenant's secret");
    for secret in CREDENTIALS {
        assert!(stored.contains(secret), "{secret} is not in the secret");
    }

    // Read back whole, and found by each key (the index entries were made from the whole
    // record: an API key's is its hash, a webhook login's too).
    let read = d
        .registry
        .registered_tenant(&TenantId::new("acme"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        serde_json::to_value(&original).unwrap()
    );
    let tenants = Tenants::new().with_source(
        Arc::new(RegistrySource::new(
            d.registry.clone(),
            ClientKit::local(reqwest::Client::new()),
        )),
        Duration::from_secs(60),
    );
    let by_key = tenants
        .resolve_key(&TenantKey::ApiKey(CREDENTIALS[0]))
        .await
        .unwrap()
        .expect("found by its API key");
    assert_eq!(by_key.app_webhook_secret.as_deref(), Some(CREDENTIALS[1]));
    let login = format!("hook-user:{}", CREDENTIALS[4]);
    assert!(
        tenants
            .resolve_key(&TenantKey::WebhookLogin(
                Provider::Pipedrive,
                login.as_bytes()
            ))
            .await
            .unwrap()
            .is_some(),
        "found by its Pipedrive webhook login"
    );
}

#[tokio::test]
async fn a_credential_rotated_in_secrets_manager_takes_effect_without_a_redeploy() {
    let d = deployed().await;
    d.registry.put_tenant(&record()).await.unwrap();
    let ttl = Duration::from_millis(300);
    let tenants = Tenants::new().with_source(
        Arc::new(RegistrySource::new(
            d.registry.clone(),
            ClientKit::local(reqwest::Client::new()),
        )),
        ttl,
    );
    let acme = TenantId::new("acme");
    let before = tenants.resolve(&acme).await.unwrap().unwrap();
    assert_eq!(before.app_webhook_secret.as_deref(), Some(CREDENTIALS[1]));

    // An operator rotates the app webhook secret in Secrets Manager, nothing else.
    let stored = d.secrets.secret(&acme).await.unwrap().unwrap();
    let rotated = stored.replace(CREDENTIALS[1], "app-hook-secret-acme-rotated");
    d.secrets.put_secret(&acme, &rotated).await.unwrap();

    tokio::time::sleep(ttl * 2).await;
    let after = tenants.resolve(&acme).await.unwrap().unwrap();
    assert_eq!(
        after.app_webhook_secret.as_deref(),
        Some("app-hook-secret-acme-rotated")
    );
}

#[tokio::test]
async fn a_tenant_whose_secret_is_missing_is_not_served_with_placeholders() {
    let d = deployed().await;
    d.registry.put_tenant(&record()).await.unwrap();
    let acme = TenantId::new("acme");
    // The secret lost one credential (e.g. edited by hand).
    let stored = d.secrets.secret(&acme).await.unwrap().unwrap();
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&stored).unwrap();
    map.retain(|pointer, _| !pointer.ends_with("/api_key"));
    d.secrets
        .put_secret(&acme, &serde_json::to_string(&map).unwrap())
        .await
        .unwrap();
    let Err(err) = d.registry.registered_tenant(&acme).await else {
        panic!("served without its API key");
    };
    let message = err.to_string();
    assert!(message.contains("/config/api_key"), "{message}");
    for secret in CREDENTIALS {
        assert!(!message.contains(secret), "{message}");
    }
}

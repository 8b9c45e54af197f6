//! Black-box: the operator commands run as a user runs them, against DynamoDB and SQS on moto
//! server and the CRM simulators standing in for HubSpot and Pipedrive.

#[path = "../../test-support/moto.rs"]
mod moto;

use std::process::Command;
use std::sync::Arc;

use shared::adapters::aws::dynamo::{DynamoStore, TableNames};
use shared::adapters::aws::secrets::SecretsManager;
use shared::tenant::{SEALED, SealedRegistry, TenantRegistry};
use shared::{ChangeEvent, ChangeKind, Origin, Provider, TenantId};

struct Deployment {
    store: Arc<DynamoStore>,
    /// The registry as the functions read it: records in the table, credentials in Secrets
    /// Manager under `secret_prefix`.
    registry: SealedRegistry,
    secret_prefix: String,
    tables: TableNames,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: String,
}

async fn deployment() -> Deployment {
    let cfg = moto::sdk_config().await;
    let name = format!("ops{}", uuid::Uuid::new_v4().simple());
    let tables = TableNames::with_prefix(&name);
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        tables.clone(),
    ));
    store.create_tables().await.unwrap();
    let (sqs, queue_url, dlq_url) = moto::sync_queues(30).await;
    let secret_prefix = format!("{name}/tenants/");
    let registry = SealedRegistry::new(
        store.clone(),
        Arc::new(SecretsManager::new(
            aws_sdk_secretsmanager::Client::new(&cfg),
            secret_prefix.clone(),
        )),
    );
    Deployment {
        store,
        registry,
        secret_prefix,
        tables,
        sqs,
        queue_url,
        dlq_url,
    }
}

impl Deployment {
    /// Runs `contact-sync-ops args...` with the deployment's environment plus `env`; returns
    /// whether it succeeded and what it printed.
    fn ops(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_contact-sync-ops"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", moto::endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("CONTACTS_TABLE", &self.tables.contacts)
            .env("LINKS_TABLE", &self.tables.links)
            .env("STATE_TABLE", &self.tables.state)
            .env("SYNC_QUEUE_URL", &self.queue_url)
            .env("SYNC_DLQ_URL", &self.dlq_url)
            .env("TENANT_SECRET_PREFIX", &self.secret_prefix);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run contact-sync-ops");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn send(&self, url: &str, tenant: &str, record: &str) {
        let event = ChangeEvent::new(
            TenantId::new(tenant),
            Origin::App,
            record,
            ChangeKind::Upsert,
        );
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(serde_json::to_string(&event).unwrap())
            .send()
            .await
            .unwrap();
    }

    async fn bodies(&self, url: &str) -> Vec<String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        out.messages()
            .iter()
            .filter_map(|m| m.body().map(str::to_owned))
            .collect()
    }
}

// Multi-threaded: the simulators keep serving while the test waits for the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_tenant_then_setup_crm_fields_then_replay_dlq() {
    let d = deployment().await;
    let mut cfg = crm_sim::SimConfig::default();
    cfg.pipedrive.api_tokens = vec!["onboard-pipedrive-token".into()];
    cfg.hubspot.access_tokens = vec!["onboard-hubspot-token".into()];
    let sim = crm_sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sim.base_url();
    let onboard_env = [
        ("ONBOARD_API_KEY", "acme-api-key"),
        ("ONBOARD_HUBSPOT_ACCESS_TOKEN", "onboard-hubspot-token"),
        ("ONBOARD_HUBSPOT_CLIENT_SECRET", "acme-hubspot-secret"),
        ("ONBOARD_PIPEDRIVE_API_TOKEN", "onboard-pipedrive-token"),
        ("ONBOARD_PIPEDRIVE_WEBHOOK_PASSWORD", "acme-hook-password"),
    ];
    let (ok, out) = d.ops(
        &[
            "onboard-tenant",
            "--tenant",
            "acme",
            "--public-base-url",
            "https://sync.example.com",
            "--hubspot-api-base",
            &base,
            "--hubspot-portal-id",
            "62515",
            "--hubspot-app-id",
            "1234567",
            "--pipedrive-api-base",
            &base,
            "--pipedrive-webhook-user",
            "acme-hook",
        ],
        &onboard_env,
    );
    assert!(ok, "{out}");
    assert!(out.contains("tenant acme registered"), "{out}");
    assert!(out.contains("hubspot: pronouns field ready"), "{out}");
    assert!(out.contains("pipedrive: pronouns field ready"), "{out}");
    for (_, secret) in onboard_env {
        assert!(!out.contains(secret), "the output holds a secret: {out}");
    }

    // The table holds the tenant's record without its credentials...
    let stored = d.store.registered_tenants().await.unwrap();
    let sealed = stored
        .iter()
        .find(|r| r.config.id == TenantId::new("acme"))
        .expect("acme registered");
    assert_eq!(sealed.config.api_key.as_deref(), Some(SEALED));
    // ...and read as the functions read it, with them and its resolved Pipedrive identity.
    let registered = d.registry.registered_tenants().await.unwrap();
    let acme = registered
        .iter()
        .find(|r| r.config.id == TenantId::new("acme"))
        .expect("acme registered");
    assert_eq!(acme.config.api_key.as_deref(), Some("acme-api-key"));
    let pd = acme.config.account(Provider::Pipedrive).unwrap();
    assert_eq!(pd.account_id, "7001");
    assert_eq!(pd.our_writer.as_deref(), Some("9001"));
    let hs = acme.config.account(Provider::HubSpot).unwrap();
    assert_eq!(hs.account_id, "62515");
    assert_eq!(hs.our_writer.as_deref(), Some("1234567"));
    // Its Pipedrive webhook points at the deployment, with the given credentials.
    let hooks: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/webhooks"))
        .header("x-api-token", "onboard-pipedrive-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook = hooks["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["subscription_url"] == "https://sync.example.com/webhooks/pipedrive")
        .unwrap_or_else(|| panic!("no webhook registered: {hooks}"));
    assert_eq!(hook["http_auth_user"], "acme-hook");

    // setup-crm-fields serves the registered tenant from the registry (idempotent).
    let (ok, out) = d.ops(&["setup-crm-fields", "--tenant", "acme"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("hubspot: pronouns field ready"), "{out}");
    assert!(out.contains("pipedrive: pronouns field ready"), "{out}");

    // replay-dlq moves the tenant's dead letters back, and only those.
    d.send(&d.dlq_url, "acme", "c1").await;
    d.send(&d.dlq_url, "acme", "c2").await;
    d.send(&d.dlq_url, "globex", "g1").await;
    let (ok, out) = d.ops(&["replay-dlq", "--tenant", "acme"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("moved 2 dead-lettered job(s)"), "{out}");
    let back = d.bodies(&d.queue_url).await;
    assert_eq!(back.len(), 2, "{back:?}");
    assert!(back.iter().all(|b| b.contains("\"acme\"")), "{back:?}");
}

#[tokio::test]
async fn a_bad_tenant_id_or_a_missing_setting_fails_with_a_clear_error() {
    let d = deployment().await;
    let (ok, out) = d.ops(
        &[
            "onboard-tenant",
            "--tenant",
            "no spaces",
            "--public-base-url",
            "https://x.example",
        ],
        &[("ONBOARD_API_KEY", "k")],
    );
    assert!(!ok);
    assert!(
        out.contains("tenant ids use letters, digits, - and _"),
        "{out}"
    );
    let cmd_env = [
        ("ONBOARD_API_KEY", "k"),
        ("ONBOARD_HUBSPOT_ACCESS_TOKEN", "t"),
    ];
    let (ok, out) = d.ops(
        &[
            "onboard-tenant",
            "--tenant",
            "acme",
            "--public-base-url",
            "https://x.example",
        ],
        &cmd_env,
    );
    assert!(!ok);
    assert!(out.contains("--hubspot-portal-id is required"), "{out}");
    assert!(
        d.store.registered_tenants().await.unwrap().is_empty(),
        "nothing registered"
    );
}

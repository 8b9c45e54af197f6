//! `contact-sync-ops`: operator commands against a deployment. Configuration comes from the same
//! environment variables the Lambda functions read (tables, queue URLs, tenant, CRM settings).

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::TenantId;
use shared::crm::CrmSettings;
use shared::crm::hubspot::settings::HubSpotSettings;
use shared::crm::pipedrive::settings::PipedriveSettings;
use shared::deploy::Deployment;
use shared::ports::JobQueue;
use shared::provision::{self, Preparation};
use shared::tenant::TenantConfig;

#[derive(Parser)]
#[command(name = "contact-sync-ops", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Moves a tenant's dead-lettered sync jobs back to the sync queue and reports how many.
    ReplayDlq {
        /// The tenant (default: TENANT_ID).
        #[arg(long, env = "TENANT_ID", default_value = "default")]
        tenant: String,
    },
    /// Creates the pronouns field in every CRM of the tenant (idempotent) and stores its key.
    SetupCrmFields {
        #[arg(long, env = "TENANT_ID", default_value = "default")]
        tenant: String,
    },
    /// Registers (or updates) a tenant with its API key, app webhook secret and CRM
    /// credentials, resolves its Pipedrive company and user, registers its Pipedrive webhook and
    /// creates its pronouns fields. The deployment's functions serve it from their next start.
    OnboardTenant(Box<Onboard>),
}

#[derive(clap::Args)]
struct Onboard {
    /// Tenant id (letters, digits, `-`, `_`).
    #[arg(long)]
    tenant: String,
    /// Bearer key of the app API for this tenant.
    #[arg(long, env = "ONBOARD_API_KEY", hide_env_values = true)]
    api_key: String,
    /// HMAC secret of the tenant's app webhook.
    #[arg(long, env = "ONBOARD_APP_WEBHOOK_SECRET", hide_env_values = true)]
    app_webhook_secret: Option<String>,
    /// The deployment's webhook URL (the stack output WebhookBaseUrl): Pipedrive webhooks point there.
    #[arg(long)]
    public_base_url: String,
    #[arg(long, default_value = shared::crm::hubspot::DEFAULT_API_BASE)]
    hubspot_api_base: String,
    #[arg(long, env = "ONBOARD_HUBSPOT_ACCESS_TOKEN", hide_env_values = true)]
    hubspot_access_token: Option<String>,
    #[arg(long, env = "ONBOARD_HUBSPOT_CLIENT_SECRET", hide_env_values = true)]
    hubspot_client_secret: Option<String>,
    #[arg(long)]
    hubspot_app_id: Option<u64>,
    #[arg(long)]
    hubspot_portal_id: Option<u64>,
    #[arg(long, default_value = shared::crm::pipedrive::DEFAULT_API_BASE)]
    pipedrive_api_base: String,
    #[arg(long, env = "ONBOARD_PIPEDRIVE_API_TOKEN", hide_env_values = true)]
    pipedrive_api_token: Option<String>,
    #[arg(long)]
    pipedrive_company_id: Option<u64>,
    #[arg(long)]
    pipedrive_webhook_user: Option<String>,
    #[arg(
        long,
        env = "ONBOARD_PIPEDRIVE_WEBHOOK_PASSWORD",
        hide_env_values = true
    )]
    pipedrive_webhook_password: Option<String>,
}

impl Onboard {
    fn hubspot(&self) -> anyhow::Result<Option<HubSpotSettings>> {
        let Some(token) = &self.hubspot_access_token else {
            return Ok(None);
        };
        Ok(Some(HubSpotSettings {
            api_base: self.hubspot_api_base.clone(),
            access_token: Some(token.clone()),
            client_id: None,
            refresh_token: None,
            client_secret: self.hubspot_client_secret.clone(),
            app_id: self.hubspot_app_id,
            portal_id: self
                .hubspot_portal_id
                .context("--hubspot-portal-id is required with a HubSpot token")?,
            burst_limit: 100,
        }))
    }

    fn pipedrive(&self) -> Option<PipedriveSettings> {
        let token = self.pipedrive_api_token.clone()?;
        Some(PipedriveSettings {
            api_base: self.pipedrive_api_base.clone(),
            api_token: Some(token),
            access_token: None,
            client_id: None,
            client_secret: None,
            refresh_token: None,
            oauth_token_url: shared::crm::pipedrive::DEFAULT_OAUTH_TOKEN_URL.into(),
            company_id: self.pipedrive_company_id,
            webhook_user: self.pipedrive_webhook_user.clone(),
            webhook_password: self.pipedrive_webhook_password.clone(),
            burst_limit: None,
            daily_token_budget: Some(shared::crm::pipedrive::DEFAULT_DAILY_TOKEN_BUDGET),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::logging::init("warn").context("setting up logs")?;
    let cli = Cli::parse();
    let deployment = Deployment::from_env()
        .await
        .context("reading the deployment's settings")?;
    match cli.command {
        Command::ReplayDlq { tenant } => {
            let moved = deployment.queue.replay_dlq(&TenantId::new(tenant)).await?;
            println!("moved {moved} dead-lettered job(s) back to the sync queue");
        }
        Command::SetupCrmFields { tenant } => {
            let results = deployment
                .service
                .setup_pronouns(&TenantId::new(tenant))
                .await?;
            let mut failed = false;
            for (provider, r) in results {
                match r {
                    Ok(key) => println!("{provider}: pronouns field ready ({key})"),
                    Err(e) => {
                        failed = true;
                        println!("{provider}: {e}");
                    }
                }
            }
            anyhow::ensure!(!failed, "the pronouns field could not be set up everywhere");
        }
        Command::OnboardTenant(o) => {
            anyhow::ensure!(
                !o.tenant.is_empty()
                    && o.tenant
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "tenant ids use letters, digits, - and _"
            );
            let crms: Vec<CrmSettings> = [
                o.hubspot()?.map(CrmSettings::HubSpot),
                o.pipedrive().map(CrmSettings::Pipedrive),
            ]
            .into_iter()
            .flatten()
            .collect();
            let mut config = TenantConfig::new(o.tenant.clone());
            config.api_key = Some(o.api_key.clone());
            config.app_webhook_secret = o.app_webhook_secret.clone();
            // Its setup calls pace by the limits the deployed workers share.
            let kit =
                provision::ClientKit::shared(provision::http_client(), deployment.store.clone());
            let provisioned = provision::connect(config, crms, &kit).await?;
            let id = provisioned.config.id.clone();
            provisioned.register_webhooks(&o.public_base_url).await;
            deployment
                .registry
                .put_tenant(&provisioned.record())
                .await?;
            println!("tenant {id} registered");
            // Serve it from this process too, to prepare its CRM fields now.
            let mut tenants = shared::tenant::Tenants::new();
            provisioned.add_to(&mut tenants);
            let service = shared::sync::SyncService::new(
                deployment.store.clone(),
                deployment.store.clone(),
                deployment.store.clone(),
                std::sync::Arc::new(tenants),
            );
            provisioned.prepare(&service, Preparation::Fresh).await?;
            for (provider, r) in service.setup_pronouns(&id).await? {
                match r {
                    Ok(key) => println!("{provider}: pronouns field ready ({key})"),
                    Err(e) => println!("{provider}: pronouns field not ready: {e}"),
                }
            }
        }
    }
    Ok(())
}

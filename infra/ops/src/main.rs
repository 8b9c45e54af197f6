//! `contact-sync-ops`: operator commands against a deployment. Configuration comes from the same
//! environment variables the Lambda functions read (tables, queue URLs, tenant, CRM settings).

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::TenantId;
use shared::deploy::Deployment;
use shared::ports::JobQueue;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
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
    }
    Ok(())
}

//! `webhook-ingest`: HubSpot, Pipedrive and app webhooks → verified → SQS. Answers fast.

use lambda_http::{Error, run, tracing};
use shared::deploy::Deployment;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let deployment = Deployment::from_env().await?;
    run(shared::http::webhook_router(deployment.app_state())).await
}

//! `api`: the app-facing HTTP API behind API Gateway (HTTP API, payload v2).

use lambda_http::{Error, run, tracing};
use shared::deploy::Deployment;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let deployment = Deployment::from_env().await?;
    run(shared::http::api_router(deployment.app_state())).await
}

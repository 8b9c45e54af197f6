//! `contact-sync-local`: the whole service in one process on the embedded store.
//!
//! Serves the same HTTP routes as the deployed API, runs the sync worker over the embedded
//! queue and the poll schedule. Configuration comes from the environment (see README).

use anyhow::Context;

mod config;
mod runner;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::logging::init("info,hyper=warn,reqwest=warn").context("setting up logs")?;
    let config = config::LocalConfig::from_env().context("reading configuration")?;
    let running = runner::start(config).await?;
    tracing::info!(url = %running.url, simulator = ?running.sim_url, "contact-sync-local is up");
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

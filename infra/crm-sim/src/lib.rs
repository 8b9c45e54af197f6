//! Stateful simulators of the HubSpot and Pipedrive APIs, served from one HTTP server.
//!
//! The root of the server answers HubSpot's paths (`/crm/v3/...`, `/oauth/...`) and Pipedrive's
//! (`/api/v1/...`, `/api/v2/...`). Paths under `/_sim/...` are the simulator's own control
//! endpoints (edits "made in the CRM UI", counters, outage switch), never part of a real API.

pub mod hubspot;
pub mod pipedrive;

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use axum::Router;
use tokio::net::TcpListener;

/// The simulators' notion of now: the system clock, or a virtual one (the deterministic
/// simulation runs the simulators in process on its own clock).
#[derive(Clone, Default)]
pub struct SimClock(Option<Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>>);

impl SimClock {
    /// Time read from `now` instead of the system clock.
    pub fn virtual_time(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(now)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.as_ref().map_or_else(Utc::now, |f| f())
    }
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "SimClock(virtual)"
        } else {
            "SimClock(system)"
        })
    }
}

/// Configuration of both simulators.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    pub hubspot: hubspot::HubSpotConfig,
    pub pipedrive: pipedrive::PipedriveConfig,
}

/// A running simulator server.
pub struct SimServer {
    pub addr: SocketAddr,
    pub hubspot: hubspot::HubSpotSim,
    pub pipedrive: pipedrive::PipedriveSim,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Root URL of the server, e.g. `http://127.0.0.1:4010` (HubSpot and Pipedrive base URL alike).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving (the state is dropped with the last handle).
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The combined router of both simulators.
pub fn router(hubspot: &hubspot::HubSpotSim, pipedrive: &pipedrive::PipedriveSim) -> Router {
    Router::new()
        .merge(hubspot::routes(hubspot.clone()))
        .merge(pipedrive::routes(pipedrive.clone()))
}

/// Binds `addr` (port 0 picks a free port) and serves both simulators in the background.
pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let hubspot = hubspot::HubSpotSim::new(config.hubspot);
    let pipedrive = pipedrive::PipedriveSim::new(config.pipedrive);
    let app = router(&hubspot, &pipedrive);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "crm-sim server stopped");
        }
    });
    Ok(SimServer {
        addr,
        hubspot,
        pipedrive,
        task,
    })
}

//! Assembles the local service: embedded store, tenants, HTTP server, worker and schedule.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::adapters::embedded::EmbeddedStore;
use shared::http::{AppState, HttpSettings};
use shared::service::SyncService;
use shared::tenant::{TenantConfig, Tenants};
use shared::worker;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::LocalConfig;

pub struct Running {
    pub url: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

pub async fn start(config: LocalConfig) -> anyhow::Result<Running> {
    let store = EmbeddedStore::open_dir(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let mut tenant = TenantConfig::new(config.tenant_id.clone());
    tenant.api_key = config.api_key.clone();
    let tenant_id = tenant.id.clone();
    let mut tenants = Tenants::new();
    tenants.add(tenant, Vec::new());

    let shared_store = Arc::new(store.clone());
    let service = SyncService::new(
        shared_store.clone(),
        shared_store.clone(),
        shared_store.clone(),
        Arc::new(tenants),
    );
    let settings = HttpSettings {
        open_tenant: config.api_key.is_none().then(|| tenant_id.clone()),
        public_base_url: None,
    };
    let state = AppState {
        service: service.clone(),
        queue: shared_store.clone(),
        settings: Arc::new(settings),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let addr: SocketAddr = format!("{}:{}", config.host, config.port)
        .parse()
        .context("HOST/PORT do not form a socket address")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let app = shared::http::router(state);
    let mut rx = stop_rx.clone();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    let worker_task = tokio::spawn(worker_loop(service.clone(), store.clone(), stop_rx.clone()));
    let schedule_task = tokio::spawn(poll_schedule(service, store, config.poll_interval, stop_rx));
    Ok(Running {
        url: format!("http://{local}"),
        stop: stop_tx,
        tasks: vec![server, worker_task, schedule_task],
    })
}

/// Drains the embedded queue; wakes on every enqueue and at least every 250 ms (retries).
async fn worker_loop(service: SyncService, store: EmbeddedStore, mut stop: watch::Receiver<bool>) {
    let notify = store.job_notifier();
    loop {
        if *stop.borrow() {
            return;
        }
        match worker::run_once(&service, &store, 10).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "worker could not reach the queue"),
        }
        tokio::select! {
            _ = notify.notified() => {},
            _ = tokio::time::sleep(Duration::from_millis(250)) => {},
            _ = stop.changed() => {},
        }
    }
}

/// The local stand-in for the EventBridge schedule: polls every CRM of every tenant.
async fn poll_schedule(service: SyncService, store: EmbeddedStore, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stop.changed() => return,
        }
        let tenants: Vec<_> = service.tenants.all().map(|t| t.id.clone()).collect();
        for tenant in tenants {
            for provider in service.tenants.providers(&tenant) {
                if let Err(e) = service.poll(&tenant, provider, &store, 20).await {
                    tracing::warn!(%tenant, %provider, error = %e, "poll failed");
                }
            }
        }
    }
}

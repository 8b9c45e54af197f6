//! Assembles the local service: embedded store, tenants and CRM clients (or the in-process
//! simulators), HTTP server, worker and schedule.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::adapters::embedded::EmbeddedStore;
use shared::crm::CrmSettings;
use shared::crm::hubspot::settings::HubSpotSettings;
use shared::crm::pipedrive::settings::PipedriveSettings;
use shared::http::{AppState, HttpSettings};
use shared::provision::{self, Preparation};
use shared::sync::SyncService;
use shared::sync::worker;
use shared::tenant::{TenantConfig, Tenants};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{LocalConfig, SimulatedAccounts};

/// OAuth access token of the simulated Pipedrive connection (the local runner connects to the
/// simulator like a Marketplace app: Bearer auth, the OAuth burst limit of 80 per 2 s).
const SIM_PIPEDRIVE_TOKEN: &str = "sim-pipedrive-oauth-token";
/// Webhook Basic auth credentials with the simulator, unless `PIPEDRIVE_WEBHOOK_*` are set.
const SIM_PIPEDRIVE_WEBHOOK_USER: &str = "contact-sync";
const SIM_PIPEDRIVE_WEBHOOK_PASSWORD: &str = "sim-pipedrive-webhook-password";

pub struct Running {
    pub url: String,
    /// Root URL of the in-process CRM simulator, when one runs.
    pub sim_url: Option<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _sim: Option<crm_sim::SimServer>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// HubSpot settings that point at the in-process simulator (its app, portal and token).
fn simulated_hubspot(
    sim: &crm_sim::SimServer,
    account: &crm_sim::hubspot::HubSpotConfig,
    given: &SimulatedAccounts,
) -> HubSpotSettings {
    HubSpotSettings {
        api_base: sim.base_url(),
        access_token: account.access_tokens.first().cloned(),
        client_id: None,
        refresh_token: None,
        client_secret: Some(account.client_secret.clone()),
        app_id: Some(account.app_id),
        portal_id: account.portal_id,
        burst_limit: given
            .hubspot_burst_limit
            .unwrap_or(account.burst_limit.unwrap_or(100)),
    }
}

/// Pipedrive settings that point at the in-process simulator.
fn simulated_pipedrive(
    sim: &crm_sim::SimServer,
    account: &crm_sim::pipedrive::PipedriveConfig,
    given: &SimulatedAccounts,
) -> PipedriveSettings {
    PipedriveSettings {
        api_base: sim.base_url(),
        api_token: None,
        access_token: Some(SIM_PIPEDRIVE_TOKEN.into()),
        client_id: None,
        client_secret: None,
        refresh_token: None,
        oauth_token_url: shared::crm::pipedrive::DEFAULT_OAUTH_TOKEN_URL.into(),
        company_id: Some(account.company_id),
        webhook_user: account.webhook_user.clone(),
        webhook_password: account.webhook_password.clone(),
        burst_limit: given.pipedrive_burst_limit,
        daily_token_budget: match given.pipedrive_daily_token_budget {
            Some(0) => None,
            Some(budget) => Some(budget),
            None => account.daily_token_budget,
        },
    }
}

pub async fn start(config: LocalConfig) -> anyhow::Result<Running> {
    let store = EmbeddedStore::open_dir(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;

    let addr: SocketAddr = format!("{}:{}", config.host, config.port)
        .parse()
        .context("HOST/PORT do not form a socket address")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let url = format!("http://{local}");
    let public_base = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| url.clone());

    // CRMs without settings are served by the in-process simulator (unless CRM_SIMULATOR=off).
    let mut sim = None;
    let mut hubspot = config.hubspot.clone();
    let mut pipedrive = config.pipedrive.clone();
    if config.simulator && (hubspot.is_none() || pipedrive.is_none()) {
        let mut sim_cfg = crm_sim::SimConfig::default();
        sim_cfg.hubspot.webhook_url = Some(format!("{public_base}/webhooks/hubspot"));
        if let Some(limit) = config.sim_hubspot_burst_limit {
            sim_cfg.hubspot.burst_limit = Some(limit);
        }
        if let Some(zone) = &config.sim_hubspot_time_zone {
            sim_cfg.hubspot.portal_time_zone = zone.clone();
        }
        let given = &config.simulated;
        if let Some(secret) = &given.hubspot_client_secret {
            sim_cfg.hubspot.client_secret = secret.clone();
        }
        if let Some(app_id) = given.hubspot_app_id {
            sim_cfg.hubspot.app_id = app_id;
        }
        if let Some(portal_id) = given.hubspot_portal_id {
            sim_cfg.hubspot.portal_id = portal_id;
        }
        if let Some(company_id) = given.pipedrive_company_id {
            sim_cfg.pipedrive.company_id = company_id;
        }
        sim_cfg.pipedrive.webhook_url = Some(format!("{public_base}/webhooks/pipedrive"));
        sim_cfg.pipedrive.webhook_user = Some(
            given
                .pipedrive_webhook_user
                .clone()
                .unwrap_or_else(|| SIM_PIPEDRIVE_WEBHOOK_USER.into()),
        );
        sim_cfg.pipedrive.webhook_password = Some(
            given
                .pipedrive_webhook_password
                .clone()
                .unwrap_or_else(|| SIM_PIPEDRIVE_WEBHOOK_PASSWORD.into()),
        );
        sim_cfg.pipedrive.oauth_tokens = vec![SIM_PIPEDRIVE_TOKEN.into()];
        let sim_port = config.sim_port.unwrap_or(if local.port() == 0 {
            0
        } else {
            local.port().wrapping_add(1)
        });
        let sim_addr: SocketAddr = format!("{}:{sim_port}", config.host).parse()?;
        let server = crm_sim::start(sim_cfg.clone(), sim_addr)
            .await
            .with_context(|| format!("starting the CRM simulator on {sim_addr}"))?;
        let simulated: Vec<&str> = [
            hubspot.is_none().then_some("HubSpot"),
            pipedrive.is_none().then_some("Pipedrive"),
        ]
        .into_iter()
        .flatten()
        .collect();
        tracing::info!(url = %server.base_url(), crms = ?simulated, "CRM simulator started");
        if hubspot.is_none() {
            hubspot = Some(simulated_hubspot(&server, &sim_cfg.hubspot, given));
        }
        if pipedrive.is_none() {
            pipedrive = Some(simulated_pipedrive(&server, &sim_cfg.pipedrive, given));
        }
        sim = Some(server);
    }

    // The workers pace by limits kept in the store, as the deployed ones do in DynamoDB.
    let kit = provision::ClientKit::shared(provision::http_client(), Arc::new(store.clone()));
    let mut tenant = TenantConfig::new(config.tenant_id.clone());
    tenant.api_key = Some(config.api_key.clone());
    tenant.app_webhook_secret = config.app_webhook_secret.clone();
    if config.api_key == crate::config::DEFAULT_API_KEY {
        tracing::info!(
            "app API key: the default `{}` (set API_KEY to change it)",
            crate::config::DEFAULT_API_KEY
        );
    }
    let crms: Vec<CrmSettings> = [
        hubspot.map(CrmSettings::HubSpot),
        pipedrive.map(CrmSettings::Pipedrive),
    ]
    .into_iter()
    .flatten()
    .collect();
    let provisioned = provision::connect(tenant, crms, &kit).await?;
    let mut tenants = Tenants::new();
    provisioned.add_to(&mut tenants);

    let shared_store = Arc::new(store.clone());
    let service = SyncService::new(
        shared_store.clone(),
        shared_store.clone(),
        shared_store.clone(),
        Arc::new(tenants),
    )
    .with_check_grace(config.check_grace)
    .with_webhook_grace(config.webhook_grace);
    let service = match &config.outcomes_webhook_url {
        Some(url) => service.with_outcomes(Arc::new(shared::outcomes::WebhookSink::new(
            url.clone(),
            reqwest::Client::new(),
        ))),
        None => service,
    };
    if let Err(e) = provisioned.prepare(&service, Preparation::Fresh).await {
        tracing::warn!(error = %e, "could not prepare the CRM fields");
    }
    // In the background: Pipedrive may call the URL while its webhook is registered.
    let base = public_base.clone();
    let setup_tasks = vec![tokio::spawn(async move {
        provisioned.register_webhooks(&base).await;
    })];

    let settings = HttpSettings {
        public_base_url: Some(public_base.clone()),
    };
    let state = AppState {
        service: service.clone(),
        queue: shared_store.clone(),
        settings: Arc::new(settings),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let app = shared::http::router(state);
    let mut rx = stop_rx.clone();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    // Several workers on one queue and store, as several sync-worker Lambdas run at once.
    tracing::info!(workers = config.sync_workers, "sync workers started");
    let workers = (0..config.sync_workers)
        .map(|_| {
            tokio::spawn(worker_loop(
                service.clone(),
                store.clone(),
                config.job_deadline,
                stop_rx.clone(),
            ))
        })
        .collect::<Vec<_>>();
    let schedule_task = tokio::spawn(poll_schedule(service, store, config.poll_interval, stop_rx));
    Ok(Running {
        url,
        sim_url: sim.as_ref().map(crm_sim::SimServer::base_url),
        stop: stop_tx,
        tasks: [server, schedule_task]
            .into_iter()
            .chain(workers)
            .chain(setup_tasks)
            .collect(),
        _sim: sim,
    })
}

/// Drains the embedded queue; wakes on every enqueue and at least every 250 ms (retries).
/// Each batch has `job_time` (the Lambda's timeout) as its deadline.
async fn worker_loop(
    service: SyncService,
    store: EmbeddedStore,
    job_time: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let notify = store.job_notifier();
    loop {
        if *stop.borrow() {
            return;
        }
        let deadline = tokio::time::Instant::now() + job_time;
        match shared::deadline::within(deadline, worker::run_once(&service, &store, 10)).await {
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

/// The local stand-in for the EventBridge schedule: polls every CRM of every tenant and resumes
/// a first sync whose CRM budget has reset.
async fn poll_schedule(
    service: SyncService,
    store: EmbeddedStore,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stop.changed() => return,
        }
        let tenants: Vec<_> = service.tenants.all().into_iter().map(|t| t.id).collect();
        for tenant in tenants {
            // A first sync that waited for a CRM's daily budget goes on after the reset.
            if let Err(e) = service.resume_waiting(&tenant, &store).await {
                tracing::warn!(%tenant, error = %e, "could not resume the waiting backfill");
            }
            for provider in service.tenants.providers(&tenant) {
                if let Err(e) = service.poll(&tenant, provider, &store, 20).await {
                    tracing::warn!(%tenant, %provider, error = %e, "poll failed");
                }
            }
        }
    }
}

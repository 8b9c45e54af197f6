//! The HTTP routes, shared by the Lambda functions (through lambda_http) and the local runner.

mod contacts;
mod errors;
mod setup;
mod status;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{get, post};

use crate::domain::TenantId;
use crate::ports::JobQueue;
use crate::sync::SyncService;
use crate::tenant::TenantKey;

pub use errors::ApiError;

/// Largest request body accepted (webhook batches included).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Deployment-level HTTP settings.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// Public base URL the CRMs call (e.g. `https://abc.execute-api.eu-west-1.amazonaws.com`);
    /// HubSpot v3 signatures cover the full URL.
    pub public_base_url: Option<String>,
}

/// Everything the handlers need, built once at start-up.
#[derive(Clone)]
pub struct AppState {
    pub service: SyncService,
    pub queue: Arc<dyn JobQueue>,
    pub settings: Arc<HttpSettings>,
}

/// The tenant a request acts for, from its bearer API key.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let value = header.ok_or_else(|| {
            ApiError::unauthorized("missing API key: send Authorization: Bearer <API key>")
        })?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("use an Authorization: Bearer <API key> header")
            })?;
        state
            .service
            .tenants
            .resolve_key(&TenantKey::ApiKey(key.trim()))
            .await?
            .map(|t| Tenant(t.id))
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))
    }
}

/// The app-facing routes.
fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/contacts", get(contacts::list).post(contacts::create))
        .route(
            "/contacts/{id}",
            get(contacts::read)
                .put(contacts::replace)
                .delete(contacts::delete),
        )
        .route("/sync/status", get(status::sync_status))
        .route("/sync", post(status::sync_now))
        .route("/dlq/replay", post(status::replay_dlq))
        .route("/conflicts", get(status::conflicts))
        .route("/setup/pronouns-fields", post(setup::create_fields))
        .route("/setup/pronouns-status", get(setup::status))
}

/// The webhook receivers: verify, enqueue, answer fast.
fn webhook_routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/hubspot", post(webhooks::hubspot::receive))
        .route("/webhooks/pipedrive", post(webhooks::pipedrive::receive))
        .route("/webhooks/app", post(webhooks::app::receive))
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .route("/health", get(health))
        .fallback(errors::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The `api` function's router.
pub fn api_router(state: AppState) -> Router {
    finish(api_routes(), state)
}

/// The `webhook-ingest` function's router.
pub fn webhook_router(state: AppState) -> Router {
    finish(webhook_routes(), state)
}

/// Every route (the local runner serves them all on one port).
pub fn router(state: AppState) -> Router {
    finish(api_routes().merge(webhook_routes()), state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// The dashboard page: static HTML + JavaScript over the JSON API; it asks for the API key.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

//! The HTTP routes, shared by the Lambda functions (through lambda_http) and the local runner.

mod contacts;
mod errors;
mod history;
mod openapi;
mod preview;
mod settings;
mod setup;
mod status;
mod sync_health;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::TenantId;
use crate::ports::JobQueue;
use crate::sync::SyncService;
use crate::tenant::TenantKey;

pub use errors::{ApiError, ErrorBody};
pub use openapi::document as openapi_document;

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
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(contacts::list, contacts::create))
        .routes(routes!(contacts::read, contacts::replace, contacts::delete))
        .routes(routes!(history::contact_history))
        .routes(routes!(status::sync_status))
        .routes(routes!(sync_health::sync_health))
        .routes(routes!(status::sync_now))
        .routes(routes!(preview::sync_preview))
        .routes(routes!(status::replay_dlq))
        .routes(routes!(status::conflicts))
        .routes(routes!(settings::get_fields, settings::put_fields))
        .routes(routes!(setup::create_fields))
        .routes(routes!(setup::status))
}

/// The webhook receivers: verify, enqueue, answer fast.
fn webhook_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(webhooks::hubspot::receive))
        .routes(routes!(webhooks::pipedrive::receive))
        .routes(routes!(webhooks::app::receive))
}

/// What every function serves.
fn service_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(openapi::serve))
}

/// Every route, in the document.
fn all_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api_routes())
        .merge(webhook_routes())
        .merge(service_routes())
}

fn finish(routes: OpenApiRouter<AppState>, state: AppState) -> Router {
    let (router, _) = routes.merge(service_routes()).split_for_parts();
    router
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
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

/// `{"status": "ok"}` while the function runs.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    pub status: String,
}

/// Liveness: answers while the function runs (no key needed).
#[utoipa::path(get, path = "/health", tag = "service", operation_id = "health",
    responses((status = 200, description = "Running", body = Health)))]
async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// The dashboard: static HTML and JavaScript over this API; it asks for the API key.
#[utoipa::path(get, path = "/", tag = "service", operation_id = "dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)))]
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

//! The webhook receivers, one per sender: each authenticates before it reads anything it does
//! not need to find the tenant, maps the payload to change events (triggers, not data), drops
//! our own writes and repeated deliveries, enqueues and answers fast. Nothing is enqueued for a
//! request that fails a check; a delivery that could not be enqueued is forgotten by dedupe, so
//! the sender's retry gets through.

pub mod app;
pub mod hubspot;
pub mod pipedrive;

use std::time::Duration;

use axum::http::HeaderMap;

use crate::http::AppState;

/// What a webhook receiver did with a delivery.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Sync triggers queued.
    pub accepted: usize,
    /// Events dropped: our own writes' echoes, repeated deliveries, events of no interest.
    pub dropped: usize,
}

impl Accepted {
    pub(crate) fn new(accepted: usize, dropped: usize) -> axum::Json<Self> {
        axum::Json(Self { accepted, dropped })
    }
}

/// How long a webhook event is remembered for dedupe (HubSpot retries for up to a day,
/// Pipedrive within minutes).
pub(crate) const DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The full URL the caller used, as the CRM signed it: the configured public base URL, else the
/// Host header (scheme from `X-Forwarded-Proto`, default http).
pub fn public_url(state: &AppState, headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    match &state.settings.public_base_url {
        Some(base) => format!("{}{}", base.trim_end_matches('/'), path),
        None => {
            let scheme = header(headers, "x-forwarded-proto").unwrap_or("http");
            let host = header(headers, "host").unwrap_or("localhost");
            format!("{scheme}://{host}{path}")
        }
    }
}

//! `GET /sync/health`: per CRM, contacts in sync, excluded and failing (grouped by reason), and
//! whether the CRM's webhooks still reach us.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody};
use super::{AppState, Tenant};
use crate::domain::TenantId;
use crate::sync::CrmHealthReport;

/// The tenant's sync health.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncHealth {
    pub tenant: TenantId,
    pub crms: Vec<CrmHealthReport>,
}

/// Per CRM: contacts in sync, pending, excluded (and why), failing (grouped by error, with up to
/// 5 contacts each); when the last webhook came in, and `webhooks: broken` with a warning when
/// the last poll found changes no webhook delivered while none has come in within the grace.
#[utoipa::path(get, path = "/sync/health", tag = "sync", operation_id = "syncHealth",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant's sync health", body = SyncHealth),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn sync_health(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<SyncHealth>, ApiError> {
    let svc = &state.service;
    let links = svc.links.links_for_tenant(&tenant).await?;
    let mut crms = Vec::new();
    for provider in svc.tenants.providers(&tenant) {
        crms.push(svc.crm_health(&tenant, provider, &links).await?);
    }
    Ok(Json(SyncHealth { tenant, crms }))
}

//! `GET /sync/preview`: what a first sync would do, before it writes anything.

use axum::Json;
use axum::extract::State;

use super::errors::{ApiError, ErrorBody};
use super::{AppState, Tenant};
use crate::sync::SyncPreview;

/// Per CRM: how many app contacts the first sync would match by email, create in the CRM,
/// and import from it, and which fields of the matched pairs conflict (who would win), with up
/// to 20 examples each; contacts without an email counted apart. Reads only: one listing of
/// each CRM (its requests and tokens are in the answer), which a Sync Now within 15 minutes
/// reuses instead of listing again.
#[utoipa::path(get, path = "/sync/preview", tag = "sync", operation_id = "syncPreview",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The preview, per CRM (a CRM that could not be listed says why in its `error`)", body = SyncPreview),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn sync_preview(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<SyncPreview>, ApiError> {
    let preview = state.service.preview(&tenant).await?;
    tracing::info!(%tenant, crms = preview.crms.len(), "sync preview");
    Ok(Json(preview))
}

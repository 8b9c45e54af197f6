//! `GET /contacts/{id}/history`: the last sync decisions of one contact.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody};
use super::{AppState, Tenant};
use crate::domain::HistoryEntry;

/// A contact's sync history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactHistory {
    pub contact_id: String,
    pub items: Vec<HistoryEntry>,
}

/// The contact's last 50 sync decisions, newest first: when, what set the sync off (`app`,
/// `webhook`, `poll`, `sync_now`, `replay`, `check`), and per CRM what was written where
/// (field, old → new), the conflicts and who won, and any error. Entries are kept 30 days.
#[utoipa::path(get, path = "/contacts/{id}/history", tag = "contacts", operation_id = "contactHistory",
    params(("id" = String, Path, description = "The contact's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The history, newest first", body = ContactHistory),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 404, description = "No such contact (or it was deleted)", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn contact_history(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<ContactHistory>, ApiError> {
    let contact = state.service.contacts.get(&tenant, &id).await?;
    if contact.is_none_or(|c| c.deleted) {
        return Err(ApiError::not_found(format!("no contact {id}")));
    }
    let items = state.service.history(&tenant, &id).await?;
    Ok(Json(ContactHistory {
        contact_id: id,
        items,
    }))
}

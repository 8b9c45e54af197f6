//! Pronouns setup: create the field in every CRM, and report its state.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::{AppState, Tenant};
use crate::domain::CustomField;

/// `POST /setup/pronouns-fields`: creates the pronouns field where it is missing (idempotent).
pub async fn create_fields(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<Value>, ApiError> {
    let results = state.service.setup_pronouns(&tenant).await?;
    let crms: Vec<Value> = results
        .into_iter()
        .map(|(provider, r)| match r {
            Ok(key) => json!({"provider": provider, "ready": true, "field_key": key}),
            Err(e) => json!({"provider": provider, "ready": false, "error": e.to_string()}),
        })
        .collect();
    let all_ready = crms.iter().all(|c| c["ready"] == true);
    Ok(Json(json!({"ready": all_ready, "crms": crms})))
}

/// `GET /setup/pronouns-status`: per CRM, whether the field is set up.
pub async fn status(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<Value>, ApiError> {
    let mut crms = Vec::new();
    for provider in state.service.tenants.providers(&tenant) {
        let key = state
            .service
            .state
            .field_key(&tenant, provider, CustomField::Pronouns)
            .await?;
        crms.push(json!({"provider": provider, "ready": key.is_some(), "field_key": key}));
    }
    let all_ready = crms.iter().all(|c| c["ready"] == true);
    Ok(Json(json!({"ready": all_ready, "crms": crms})))
}

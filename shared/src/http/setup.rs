//! Pronouns setup: create the field in every CRM, and report its state.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody};
use super::{AppState, Tenant};
use crate::domain::{CustomField, Provider};

/// Whether the pronouns field is ready in every CRM, and in each.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PronounsSetup {
    /// True when every configured CRM has the field.
    pub ready: bool,
    pub crms: Vec<PronounsField>,
}

/// One CRM's pronouns field.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PronounsField {
    pub provider: Provider,
    pub ready: bool,
    /// The field's key in the CRM (a Pipedrive custom field key, a HubSpot property name).
    pub field_key: Option<String>,
    /// Why it could not be created (only from `POST /setup/pronouns-fields`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PronounsSetup {
    fn of(crms: Vec<PronounsField>) -> Self {
        Self {
            ready: crms.iter().all(|c| c.ready),
            crms,
        }
    }
}

/// Creates the pronouns field in every CRM where it is missing (idempotent).
#[utoipa::path(post, path = "/setup/pronouns-fields", tag = "setup", operation_id = "setupPronouns",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Each CRM's field, or why it could not be created", body = PronounsSetup),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
        (status = 502, description = "A CRM answered with an error", body = ErrorBody),
        (status = 503, description = "Busy (retry)", body = ErrorBody),
    ))]
pub async fn create_fields(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<PronounsSetup>, ApiError> {
    let results = state.service.setup_pronouns(&tenant).await?;
    let crms = results
        .into_iter()
        .map(|(provider, r)| match r {
            Ok(key) => PronounsField {
                provider,
                ready: true,
                field_key: Some(key),
                error: None,
            },
            Err(e) => PronounsField {
                provider,
                ready: false,
                field_key: None,
                error: Some(e.to_string()),
            },
        })
        .collect();
    Ok(Json(PronounsSetup::of(crms)))
}

/// Per CRM, whether the pronouns field is set up.
#[utoipa::path(get, path = "/setup/pronouns-status", tag = "setup", operation_id = "pronounsStatus",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Each CRM's field", body = PronounsSetup),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<PronounsSetup>, ApiError> {
    let mut crms = Vec::new();
    for provider in state.service.tenants.providers(&tenant) {
        let field_key = state
            .service
            .state
            .field_key(&tenant, provider, CustomField::Pronouns)
            .await?;
        crms.push(PronounsField {
            provider,
            ready: field_key.is_some(),
            field_key,
            error: None,
        });
    }
    Ok(Json(PronounsSetup::of(crms)))
}

//! `GET/PUT /settings/fields`: the tenant's field rules (which way each field flows, who wins
//! its conflicts), read by the engine on every sync.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody, json_body};
use super::{AppState, Tenant};
use crate::domain::{ConflictPolicy, Field, FieldRule, FieldRules};

/// Every field's rule (the email's is fixed: two-way, matched by), and the tenant's conflict
/// policy, which decides where a rule names no winner.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldSettings {
    pub fields: BTreeMap<Field, FieldRule>,
    #[schema(value_type = String, pattern = "^(crm_wins|app_wins)$")]
    pub conflict_policy: ConflictPolicy,
}

/// The rules to store: by field; a field left out is two-way under the tenant's policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSettingsInput {
    pub fields: FieldRulesInput,
}

/// A rule per field but the email (always two-way: records are matched by it).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldRulesInput {
    #[serde(default)]
    pub first_name: Option<FieldRule>,
    #[serde(default)]
    pub last_name: Option<FieldRule>,
    #[serde(default)]
    pub phone: Option<FieldRule>,
    #[serde(default)]
    pub job_title: Option<FieldRule>,
    #[serde(default)]
    pub pronouns: Option<FieldRule>,
}

impl FieldRulesInput {
    /// The rules to store: those that differ from the default.
    fn into_rules(self) -> FieldRules {
        FieldRules(
            [
                (Field::FirstName, self.first_name),
                (Field::LastName, self.last_name),
                (Field::Phone, self.phone),
                (Field::JobTitle, self.job_title),
                (Field::Pronouns, self.pronouns),
            ]
            .into_iter()
            .filter_map(|(f, r)| Some((f, r?)))
            .filter(|(_, r)| *r != FieldRule::default())
            .collect(),
        )
    }
}

async fn settings(
    state: &AppState,
    tenant: &crate::domain::TenantId,
) -> Result<FieldSettings, ApiError> {
    let rules = state.service.state.field_rules(tenant).await?;
    let policy = state
        .service
        .tenants
        .resolve(tenant)
        .await?
        .map(|c| c.conflict_policy)
        .unwrap_or_default();
    Ok(FieldSettings {
        fields: Field::ALL.into_iter().map(|f| (f, rules.rule(f))).collect(),
        conflict_policy: policy,
    })
}

/// The tenant's field rules, every field listed.
#[utoipa::path(get, path = "/settings/fields", tag = "settings", operation_id = "getFieldSettings",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every field's rule", body = FieldSettings),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn get_fields(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<FieldSettings>, ApiError> {
    Ok(Json(settings(&state, &tenant).await?))
}

/// Replaces the tenant's field rules: per field a `direction` (`two_way`, `app_to_crms`,
/// `crms_to_app`, `off`) and a conflict `winner` (`app`, `crm`, `newest`, or null for the
/// tenant's policy). The next sync of each contact follows them; nothing is re-synced at once.
#[utoipa::path(put, path = "/settings/fields", tag = "settings", operation_id = "putFieldSettings",
    request_body(content = FieldSettingsInput, content_type = "application/json"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Stored; every field's rule", body = FieldSettings),
        (status = 400, description = "Not valid rules (an unknown field or value; the email has none)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
    ))]
pub async fn put_fields(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FieldSettings>, ApiError> {
    let raw: serde_json::Value = json_body(&headers, &body?)?;
    // An object of rules (serde would take a struct from an array too).
    if !raw.get("fields").is_some_and(serde_json::Value::is_object) {
        return Err(ApiError::bad_request(
            "expected {\"fields\": {<field>: {\"direction\", \"winner\"}}}",
        ));
    }
    let input: FieldSettingsInput = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let rules = input.fields.into_rules();
    rules.validate().map_err(ApiError::bad_request)?;
    state.service.state.set_field_rules(&tenant, &rules).await?;
    tracing::info!(%tenant, rules = rules.0.len(), "field rules stored");
    Ok(Json(settings(&state, &tenant).await?))
}

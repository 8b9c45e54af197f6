//! `POST /webhooks/pipedrive`: webhooks v2 deliveries. Checks HTTP Basic auth (constant time),
//! maps the company to the tenant, drops repeated deliveries, enqueues one trigger (our own
//! write's as its echo, which checks it) and answers at once. Nothing is enqueued for a request that fails any check.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;

use super::{Accepted, DEDUPE_TTL};
use crate::crm::pipedrive::mapping::Slots;
use crate::crm::pipedrive::webhook::{PayloadError, PipedriveWebhook};
use crate::domain::{CustomField, Provider, TenantId};
use crate::http::AppState;
use crate::http::errors::{ApiError, ErrorBody, require_json};
use crate::signature::basic_auth_login;
use crate::tenant::TenantKey;

/// The tenant whose webhook login the `Authorization` header carries.
async fn authenticated_tenant(
    state: &AppState,
    header: &str,
) -> Result<Option<TenantId>, ApiError> {
    let Some(login) = basic_auth_login(header) else {
        return Ok(None);
    };
    Ok(state
        .service
        .tenants
        .resolve_key(&TenantKey::WebhookLogin(Provider::Pipedrive, &login))
        .await?
        .map(|t| t.id))
}

/// Pipedrive webhooks v2 deliveries (person events), with the HTTP Basic login registered
/// for the tenant's webhooks.
#[utoipa::path(post, path = "/webhooks/pipedrive", tag = "webhooks", operation_id = "pipedriveWebhook",
    request_body(content = PipedriveWebhook, content_type = "application/json"),
    security(("pipedrive_basic" = [])),
    responses(
        (status = 200, description = "Accepted (or dropped as a repeat or of no interest)", body = Accepted),
        (status = 400, description = "Not a webhooks v2 payload", body = ErrorBody),
        (status = 401, description = "No Basic auth, or a wrong login", body = ErrorBody),
        (status = 404, description = "No tenant has this Pipedrive company", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
        (status = 503, description = "The sync queue is unavailable (Pipedrive retries)", body = ErrorBody),
    ))]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let body = body?;
    // Credentials first: an unauthenticated caller learns nothing about companies.
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("HTTP Basic auth required"))?;
    let Some(allowed) = authenticated_tenant(&state, auth).await? else {
        return Err(ApiError::unauthorized("webhook credentials rejected"));
    };
    require_json(&headers, &body)?;
    let hook = PipedriveWebhook::parse(&body).map_err(|e| match e {
        PayloadError::Malformed(_) | PayloadError::Version(_) | PayloadError::Company => {
            ApiError::bad_request(e.to_string())
        }
    })?;
    let company = hook.company_id().unwrap_or_default();
    let tenant = state
        .service
        .tenants
        .resolve_key(&TenantKey::Account(
            Provider::Pipedrive,
            &company.to_string(),
        ))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant for Pipedrive company {company}")))?;
    if allowed != tenant.id {
        return Err(ApiError::unauthorized("webhook credentials rejected"));
    }
    let tenant_id = tenant.id.clone();
    // Webhooks reach us (our own writes' echoes included): the health check's sign of life.
    state
        .service
        .note_webhook(&tenant_id, Provider::Pipedrive)
        .await;
    let our_user = tenant
        .account(Provider::Pipedrive)
        .and_then(|a| a.our_writer.as_deref())
        .and_then(|id| id.parse().ok());
    let action = hook.meta.action.as_str();
    // Our custom fields' keys, so a user's edit of them is reported too.
    let keys = state
        .service
        .field_keys(
            &tenant_id,
            Provider::Pipedrive,
            &[CustomField::Pronouns, CustomField::JobTitle],
        )
        .await?;
    let key = |field| {
        keys.iter()
            .find(|(f, _)| *f == field)
            .map(|(_, k)| k.as_str())
    };
    let slots = Slots {
        pronouns: key(CustomField::Pronouns),
        job_title: key(CustomField::JobTitle),
    };
    // A user's change is a trigger; our own write comes back as its echo, which says what the
    // fields held just before it (the check of that write).
    let Some(change) = hook.trigger(&tenant_id, slots, our_user) else {
        tracing::debug!(tenant = %tenant_id, entity = %hook.meta.entity, action, "Pipedrive webhook ignored");
        return Ok(Accepted::new(0, 1));
    };
    if !state
        .service
        .state
        .first_sighting(&tenant_id, &hook.dedupe_key(), DEDUPE_TTL)
        .await?
    {
        tracing::debug!(tenant = %tenant_id, action, "Pipedrive webhook: repeated delivery, dropped");
        return Ok(Accepted::new(0, 1));
    }
    if let Err(e) = state
        .queue
        .enqueue_changes(std::slice::from_ref(&change))
        .await
    {
        // Not enqueued: Pipedrive's retry of this event must not be taken for a duplicate.
        let _ = state
            .service
            .state
            .forget_sighting(&tenant_id, &hook.dedupe_key())
            .await;
        return Err(e.into());
    }
    tracing::info!(tenant = %tenant_id, action, record = %change.record_id, attempt = ?hook.meta.attempt, "Pipedrive webhook");
    Ok(Accepted::new(1, 0))
}

//! `POST /webhooks/app`: an external app pushes its contact changes, signed with
//! `X-Webhook-Signature: hex(HMAC-SHA256(tenant secret, raw body))`. The tenant is named by
//! `X-Contact-Sync-Tenant`. Verified in constant time before anything is parsed or stored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use chrono::Utc;
use serde::Deserialize;

use crate::domain::{ChangeEvent, ChangeKind, Contact, ContactFields, Origin, TenantId};
use crate::error::StoreError;
use crate::http::AppState;
use crate::http::contacts::validate_fields;
use crate::http::errors::{ApiError, ErrorBody, require_json};
use crate::http::webhooks::Accepted;
use crate::signature::verify_app_webhook;

/// At most this many changes per request.
pub const MAX_APP_EVENTS: usize = 100;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppContact {
    /// The app's id for the contact (kept as our id); without it the email matches.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    id: Option<String>,
    /// Required, as with `POST /contacts`.
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    email: Option<String>,
    #[schema(max_length = 255)]
    first_name: Option<String>,
    #[schema(max_length = 255)]
    last_name: Option<String>,
    #[schema(max_length = 255)]
    phone: Option<String>,
    #[schema(max_length = 255)]
    job_title: Option<String>,
    #[schema(max_length = 255)]
    pronouns: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum AppEvent {
    Upsert {
        contact: AppContact,
    },
    Delete {
        #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
        id: String,
    },
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppBatch {
    #[schema(max_items = 100)]
    events: Vec<AppEvent>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// One change an app webhook asks for: the contact's id (if given) and its fields, or none for
/// a delete.
pub type AppChange = (Option<String>, Option<ContactFields>);

/// Reads and validates an app webhook's event batch (after its signature held): every event or
/// none (a bad one rejects the request). Never panics, whatever the bytes.
pub fn parse_batch(body: &[u8]) -> Result<Vec<AppChange>, ApiError> {
    let batch: AppBatch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid app webhook body: {e}")))?;
    if batch.events.len() > MAX_APP_EVENTS {
        return Err(ApiError::too_large(format!(
            "at most {MAX_APP_EVENTS} events per request"
        )));
    }
    let mut changes = Vec::with_capacity(batch.events.len());
    for e in batch.events {
        match e {
            AppEvent::Upsert { contact } => {
                if let Some(id) = &contact.id
                    && !valid_id(id)
                {
                    return Err(ApiError::bad_request(format!("invalid contact id {id:?}")));
                }
                let fields = validate_fields(ContactFields {
                    email: contact.email,
                    first_name: contact.first_name,
                    last_name: contact.last_name,
                    phone: contact.phone,
                    job_title: contact.job_title,
                    pronouns: contact.pronouns,
                })?;
                changes.push((contact.id, Some(fields)));
            }
            AppEvent::Delete { id } => {
                if !valid_id(&id) {
                    return Err(ApiError::bad_request(format!("invalid contact id {id:?}")));
                }
                changes.push((Some(id), None))
            }
        }
    }
    Ok(changes)
}

/// An external app pushes its contact changes (up to 100), signed with the tenant's app
/// webhook secret: `X-Webhook-Signature: hex(HMAC-SHA256(secret, raw body))`.
#[utoipa::path(post, path = "/webhooks/app", tag = "webhooks", operation_id = "appWebhook",
    params(("X-Contact-Sync-Tenant" = String, Header, description = "The tenant whose secret signed the body")),
    request_body(content = AppBatch, content_type = "application/json"),
    security(("app_signature" = [])),
    responses(
        (status = 200, description = "Stored, and the syncs queued", body = Accepted),
        (status = 400, description = "Not a valid batch (every event is checked before any is stored)", body = ErrorBody),
        (status = 401, description = "No tenant or signature, or a wrong one (whatever the body)", body = ErrorBody),
        (status = 409, description = "Another contact has this email", body = ErrorBody),
        (status = 413, description = "Over 100 events, or a body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
        (status = 503, description = "A concurrent write, or the sync queue is unavailable (retry)", body = ErrorBody),
    ))]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let body = body?;
    // Authenticated first, whatever the body: without a tenant there is no secret to verify
    // the signature with, and an unknown tenant is not told apart from a wrong signature.
    let tenant_name = headers
        .get("x-contact-sync-tenant")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("X-Contact-Sync-Tenant header missing: cannot verify")
        })?;
    let tenant = state
        .service
        .tenants
        .resolve(&TenantId::new(tenant_name))
        .await?
        .ok_or_else(|| ApiError::unauthorized("webhook signature rejected"))?;
    let secret = tenant.app_webhook_secret.as_deref().ok_or_else(|| {
        ApiError::unauthorized("no app webhook secret is configured for this tenant")
    })?;
    let signature = headers
        .get("x-webhook-signature")
        .and_then(|v| v.to_str().ok());
    verify_app_webhook(secret, signature, &body)
        .map_err(|e| ApiError::unauthorized(format!("webhook signature rejected: {e}")))?;
    require_json(&headers, &body)?;
    let changes = parse_batch(&body)?;
    let tenant_id = tenant.id.clone();
    let mut events = Vec::with_capacity(changes.len());
    for (id, fields) in changes {
        if let Some(id) = apply(&state, &tenant_id, id, fields).await? {
            events.push(ChangeEvent::new(
                tenant_id.clone(),
                Origin::App,
                id,
                ChangeKind::Upsert,
            ));
        }
    }
    state.queue.enqueue_changes(&events).await?;
    tracing::info!(tenant = %tenant_id, accepted = events.len(), "app webhook");
    Ok(Accepted::new(events.len(), 0))
}

/// Stores one change; returns the contact id to sync (None when there was nothing to do).
async fn apply(
    state: &AppState,
    tenant: &TenantId,
    id: Option<String>,
    fields: Option<ContactFields>,
) -> Result<Option<String>, ApiError> {
    let contacts = &state.service.contacts;
    let existing = match (&id, &fields) {
        (Some(id), _) => contacts.get(tenant, id).await?,
        (None, Some(f)) => {
            contacts
                .find_by_email(tenant, f.email.as_deref().unwrap_or_default())
                .await?
        }
        (None, None) => None,
    };
    let now = Utc::now();
    match (existing, fields) {
        (Some(mut c), Some(f)) => {
            if c.fields == f && !c.deleted {
                return Ok(None);
            }
            c.fields = f;
            c.deleted = false;
            c.last_app_modified = now;
            let id = c.id.clone();
            contacts.update(&c).await.map_err(conflict_is_retryable)?;
            Ok(Some(id))
        }
        (None, Some(f)) => {
            let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let c = Contact::new(tenant.clone(), id, f, now);
            let stored = contacts.insert(&c).await?;
            Ok(Some(stored.id))
        }
        (Some(mut c), None) if !c.deleted => {
            c.deleted = true;
            c.last_app_modified = now;
            let id = c.id.clone();
            contacts.update(&c).await.map_err(conflict_is_retryable)?;
            Ok(Some(id))
        }
        _ => Ok(None),
    }
}

/// A lost race on the contact: the sender retries (503), nothing half-applied is acknowledged.
fn conflict_is_retryable(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => {
            ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "retry", m)
        }
        other => other.into(),
    }
}

//! `POST /webhooks/hubspot`: verifies the signature, maps the portal to the tenant, drops our
//! own writes and repeated deliveries, coalesces one trigger per contact and enqueues.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method};
use chrono::Utc;
use serde_json::Value;

use super::{Accepted, DEDUPE_TTL, header, public_url};
use crate::crm::hubspot::webhook::{HubSpotBatch, MAX_EVENTS, coalesce};
use crate::domain::{Provider, WebhookAuth};
use crate::http::AppState;
use crate::http::errors::{ApiError, ErrorBody, require_json};
use crate::signature::{HubSpotSignatureHeaders, SignatureError, verify_hubspot};
use crate::tenant::TenantKey;

/// The portal of a batch's first event, read without taking the body for an event batch
/// (its items are kept as read, to be taken as events once the signature holds).
pub fn portal_of(body: &[u8]) -> Option<(u64, Vec<Value>)> {
    let items: Vec<Value> = serde_json::from_slice(body).ok()?;
    let portal = match items.first()?.get("portalId")? {
        Value::Number(n) => crate::whole::natural_of(n)?,
        _ => return None,
    };
    Some((portal, items))
}

fn signature_error(e: SignatureError) -> ApiError {
    ApiError::unauthorized(format!("webhook signature rejected: {e}"))
}

/// HubSpot webhook deliveries: up to 100 contact events, signed (v3, or v1/v2) with the app's
/// client secret; the portal names the tenant.
#[utoipa::path(post, path = "/webhooks/hubspot", tag = "webhooks", operation_id = "hubspotWebhook",
    params(
        ("X-HubSpot-Signature-v3" = Option<String>, Header, description = "base64 HMAC-SHA256 of method, URL, body and timestamp (v3)"),
        ("X-HubSpot-Request-Timestamp" = Option<String>, Header, description = "ms since the epoch (v3); at most 5 minutes old"),
        ("X-HubSpot-Signature" = Option<String>, Header, description = "hex SHA-256 (v1, v2)"),
        ("X-HubSpot-Signature-Version" = Option<String>, Header, description = "v1 or v2"),
    ),
    request_body(content = HubSpotBatch, content_type = "application/json"),
    security(("hubspot_signature" = [])),
    responses(
        (status = 200, description = "Accepted", body = Accepted),
        (status = 400, description = "Not a HubSpot event batch", body = ErrorBody),
        (status = 401, description = "No signature, or a wrong or stale one (whatever the body)", body = ErrorBody),
        (status = 413, description = "Over 100 events, or a body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = ErrorBody),
        (status = 500, description = "Storage is unavailable", body = ErrorBody),
        (status = 503, description = "The sync queue is unavailable (HubSpot retries)", body = ErrorBody),
    ))]
pub async fn receive(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let body = body?;
    // Authenticated before the body is read as events: an absent or wrong signature is a 401
    // whatever the body. The tenant (whose secret verifies the signature) is found by the
    // portal id, the one thing read from the body before.
    let sig = HubSpotSignatureHeaders {
        signature: header(&headers, "x-hubspot-signature"),
        version: header(&headers, "x-hubspot-signature-version"),
        signature_v3: header(&headers, "x-hubspot-signature-v3"),
        timestamp: header(&headers, "x-hubspot-request-timestamp"),
    };
    if sig.signature.is_none() && sig.signature_v3.is_none() {
        return Err(ApiError::unauthorized("webhook signature missing"));
    }
    let rejected = || ApiError::unauthorized("webhook signature rejected");
    let (portal, items) = portal_of(&body).ok_or_else(rejected)?;
    let tenant = state
        .service
        .tenants
        .resolve_key(&TenantKey::Account(Provider::HubSpot, &portal.to_string()))
        .await?
        .ok_or_else(rejected)?;
    let account = tenant
        .account(Provider::HubSpot)
        .expect("found by its HubSpot account");
    let Some(WebhookAuth::Signature { secret }) = &account.webhook_auth else {
        return Err(rejected());
    };
    let app_id = account.our_writer.as_deref().and_then(|id| id.parse().ok());
    let url = public_url(&state, &headers, &uri);
    verify_hubspot(
        secret,
        &sig,
        method.as_str(),
        &url,
        &body,
        Utc::now().timestamp_millis(),
    )
    .map_err(signature_error)?;

    require_json(&headers, &body)?;
    let HubSpotBatch(events) = serde_json::from_value(Value::Array(items))
        .map_err(|e| ApiError::bad_request(format!("not a HubSpot event batch: {e}")))?;
    if events.len() > MAX_EVENTS {
        return Err(ApiError::too_large(format!(
            "{} events in one request; HubSpot sends at most {MAX_EVENTS}",
            events.len()
        )));
    }
    if events.iter().any(|e| e.portal_id != portal) {
        return Err(ApiError::bad_request(
            "events of several portals in one request",
        ));
    }

    let tenant_id = tenant.id.clone();
    // Webhooks reach us (our own writes' echoes included): the health check's sign of life.
    state
        .service
        .note_webhook(&tenant_id, Provider::HubSpot)
        .await;
    let mut changes = Vec::new();
    let mut marked = Vec::new();
    let mut dropped = 0usize;
    // Any failure from here on answers with an error, and HubSpot retries the whole batch: the
    // events marked seen by this request are forgotten first, so the retry is not dropped as a
    // duplicate.
    let forget = |marked: Vec<String>| {
        let state = state.clone();
        let tenant_id = tenant_id.clone();
        async move {
            for key in &marked {
                let _ = state.service.state.forget_sighting(&tenant_id, key).await;
            }
        }
    };
    // Our own writes are dropped; the others are marked seen together (one transaction
    // where the store has them) and the first sightings go on.
    let theirs: Vec<_> = events.iter().filter(|e| !e.is_own_write(app_id)).collect();
    dropped += events.len() - theirs.len();
    let keys: Vec<String> = theirs.iter().map(|e| e.dedupe_key()).collect();
    let first = match state
        .service
        .state
        .first_sightings(&tenant_id, &keys, DEDUPE_TTL)
        .await
    {
        Ok(first) => first,
        // Some may have been marked before the failure: all are forgotten (forgetting a
        // duplicate's mark only lets a harmless trigger through again).
        Err(err) => {
            forget(keys).await;
            return Err(err.into());
        }
    };
    for ((e, key), first) in theirs.into_iter().zip(keys).zip(first) {
        if !first {
            dropped += 1;
            continue;
        }
        marked.push(key);
        match e.to_change(&tenant_id) {
            Some(c) => changes.push(c),
            None => dropped += 1,
        }
    }
    let changes = coalesce(changes);
    if let Err(e) = state.queue.enqueue_changes(&changes).await {
        forget(marked).await;
        return Err(e.into());
    }
    tracing::info!(tenant = %tenant_id, received = events.len(), enqueued = changes.len(), dropped, "HubSpot webhook");
    Ok(Accepted::new(changes.len(), dropped))
}

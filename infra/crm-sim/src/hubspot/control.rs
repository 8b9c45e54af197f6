//! `/_sim/hubspot/...`: the simulator's own endpoints (UI edits, inspection, switches).
//! Not part of HubSpot's API: no authentication, no rate limit, not affected by an outage.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Value, json};

use super::api::{parse_json, props_from_json};
use super::error::ApiError;
use super::{HubSpotSim, SimError};

pub(crate) fn routes() -> Router<HubSpotSim> {
    Router::new()
        .route("/_sim/hubspot/contacts", get(list).post(create))
        .route("/_sim/hubspot/contacts/merge", post(merge))
        .route(
            "/_sim/hubspot/contacts/{id}",
            get(get_one).patch(update).delete(delete),
        )
        .route("/_sim/hubspot/contacts/{id}/restore", post(restore))
        .route("/_sim/hubspot/contacts/{id}/gdpr-delete", post(gdpr_delete))
        .route("/_sim/hubspot/stats", get(stats).delete(reset_stats))
        .route("/_sim/hubspot/outage", post(outage))
        .route("/_sim/hubspot/config/refuse-email", post(refuse_email))
        .route(
            "/_sim/hubspot/webhooks",
            get(webhooks_status).post(webhooks),
        )
        .route("/_sim/hubspot/config/rate-limit", put(rate_limit))
        .route("/_sim/hubspot/oauth/expire", post(expire_tokens))
        .route("/_sim/hubspot/reset", post(reset))
        .route(
            "/_sim/hubspot/properties/{name}",
            axum::routing::delete(delete_property),
        )
}

/// A user deletes a custom property in HubSpot's settings: reads no longer return it and
/// writes to it fail with `PROPERTY_DOESNT_EXIST`, as in HubSpot. HubSpot's own properties
/// cannot be deleted.
async fn delete_property(State(sim): State<HubSpotSim>, Path(name): Path<String>) -> Response {
    let mut store = sim.store();
    match store.props.get(&name) {
        None => ApiError::object_not_found().into_response(),
        Some(p) if p.hubspot_defined => (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "error", "message": format!("{name} is a HubSpot-defined property")})),
        )
            .into_response(),
        Some(_) => {
            store.props.remove(&name);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

fn sim_error(e: SimError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(e.body)).into_response()
}

fn contact_json(sim: &HubSpotSim, id: &str) -> Response {
    match sim.contact(id) {
        Some(c) => Json(c).into_response(),
        None => ApiError::object_not_found().into_response(),
    }
}

fn body_props(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let v: Value = parse_json(body)?;
    let Some(map) = v.get("properties").and_then(Value::as_object) else {
        return Err(ApiError::invalid_json(
            "Some required fields were not set: [properties]",
        ));
    };
    Ok(props_from_json(map)?.into_iter().collect())
}

async fn list(State(sim): State<HubSpotSim>) -> Response {
    let results = sim.contacts();
    Json(json!({"total": results.len(), "results": results})).into_response()
}

async fn get_one(State(sim): State<HubSpotSim>, Path(id): Path<String>) -> Response {
    contact_json(&sim, &id)
}

async fn create(State(sim): State<HubSpotSim>, body: Bytes) -> Response {
    let props = match body_props(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match sim.ui_create(props) {
        Ok(id) => {
            let mut r = contact_json(&sim, &id);
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Err(e) => sim_error(e),
    }
}

async fn update(State(sim): State<HubSpotSim>, Path(id): Path<String>, body: Bytes) -> Response {
    let props = match body_props(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match sim.ui_update(&id, props) {
        Ok(()) => contact_json(&sim, &id),
        Err(e) => sim_error(e),
    }
}

async fn delete(State(sim): State<HubSpotSim>, Path(id): Path<String>) -> Response {
    match sim.ui_delete(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(e),
    }
}

async fn gdpr_delete(State(sim): State<HubSpotSim>, Path(id): Path<String>) -> Response {
    match sim.ui_gdpr_delete(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(e),
    }
}

async fn restore(State(sim): State<HubSpotSim>, Path(id): Path<String>) -> Response {
    match sim.ui_restore(&id) {
        Ok(()) => contact_json(&sim, &id),
        Err(e) => sim_error(e),
    }
}

async fn merge(State(sim): State<HubSpotSim>, body: Bytes) -> Response {
    let v: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let id = |k: &str| match v.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (Some(primary), Some(other)) = (id("primaryObjectId"), id("objectIdToMerge")) else {
        return ApiError::invalid_json(
            "Some required fields were not set: [primaryObjectId, objectIdToMerge]",
        )
        .into_response();
    };
    match sim.ui_merge(&primary, &other) {
        Ok(new_id) => contact_json(&sim, &new_id),
        Err(e) => sim_error(e),
    }
}

async fn stats(State(sim): State<HubSpotSim>) -> Response {
    Json(sim.stats()).into_response()
}

async fn reset_stats(State(sim): State<HubSpotSim>) -> Response {
    sim.reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

/// `{"email": "..."}`: writes of that email are refused as invalid from now on.
async fn refuse_email(State(sim): State<HubSpotSim>, body: Bytes) -> Response {
    let v: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let Some(email) = v.get("email").and_then(Value::as_str) else {
        return ApiError::validation("expected {\"email\": \"...\"}").into_response();
    };
    sim.refuse_email(email);
    Json(json!({"refused": email})).into_response()
}

async fn outage(State(sim): State<HubSpotSim>, body: Bytes) -> Response {
    let v: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let Some(down) = v.get("down").and_then(Value::as_bool) else {
        return ApiError::validation("expected {\"down\": true|false}").into_response();
    };
    sim.set_outage(down);
    Json(json!({"down": down})).into_response()
}

fn webhook_state(sim: &HubSpotSim) -> Value {
    let hub = sim.webhook_hub();
    json!({"enabled": hub.enabled(), "url": hub.url(), "pending": sim.webhooks_pending()})
}

async fn webhooks_status(State(sim): State<HubSpotSim>) -> Response {
    Json(webhook_state(&sim)).into_response()
}

async fn webhooks(State(sim): State<HubSpotSim>, body: Bytes) -> Response {
    let v: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match v.get("enabled") {
        None => {}
        Some(Value::Bool(b)) => sim.set_webhooks_enabled(*b),
        Some(_) => return ApiError::validation("enabled must be a boolean").into_response(),
    }
    match v.get("url") {
        None => {}
        Some(Value::Null) => sim.set_webhook_url(None),
        Some(Value::String(u)) => sim.set_webhook_url(Some(u.clone())),
        Some(_) => return ApiError::validation("url must be a string or null").into_response(),
    }
    Json(webhook_state(&sim)).into_response()
}

/// `{"burst_limit": n|null, "daily_limit": n|null, "search_per_second": n}`; absent keys keep
/// their value, `null` means unlimited. camelCase keys are accepted too.
async fn rate_limit(State(sim): State<HubSpotSim>, body: Bytes) -> Response {
    let v: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let field = |snake: &str, camel: &str| v.get(snake).or_else(|| v.get(camel));
    let limit = |value: Option<&Value>, current: Option<u32>| -> Result<Option<u32>, ApiError> {
        match value {
            None => Ok(current),
            Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::validation("limits must be non-negative integers or null")
                }),
        }
    };
    let (burst_now, daily_now, search_now) = {
        let g = sim.gate_state();
        (g.burst_limit, g.daily_limit, g.search_per_second)
    };
    let burst = match limit(field("burst_limit", "burstLimit"), burst_now) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let daily = match limit(field("daily_limit", "dailyLimit"), daily_now) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let search = match limit(
        field("search_per_second", "searchPerSecond"),
        Some(search_now),
    ) {
        Ok(s) => s.unwrap_or(0),
        Err(e) => return e.into_response(),
    };
    sim.set_rate_limit(burst, daily);
    sim.set_search_per_second(search);
    Json(json!({"burst_limit": burst, "daily_limit": daily, "search_per_second": search}))
        .into_response()
}

async fn expire_tokens(State(sim): State<HubSpotSim>) -> Response {
    sim.expire_oauth_tokens();
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(sim): State<HubSpotSim>) -> Response {
    sim.reset();
    StatusCode::NO_CONTENT.into_response()
}

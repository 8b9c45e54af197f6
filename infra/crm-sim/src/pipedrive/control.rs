//! `/_sim/pipedrive/...` control endpoints: edits "made in the Pipedrive web app", counters,
//! switches and logs. Not part of Pipedrive; no auth, no token cost, not in the request log.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use super::PipedriveSim;

fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"success": false, "error": msg.into()})),
    )
        .into_response()
}

fn body_json(body: &Bytes) -> Result<Value, Box<Response>> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| Box::new(fail(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}"))))
}

fn id_of(raw: &str) -> Result<u64, Box<Response>> {
    raw.parse()
        .map_err(|_| Box::new(fail(StatusCode::BAD_REQUEST, "id must be an integer")))
}

fn person_or_404(sim: &PipedriveSim, id: u64) -> Response {
    match sim.person(id) {
        Some(p) => axum::Json(json!({"success": true, "data": p})).into_response(),
        None => fail(StatusCode::NOT_FOUND, "person not found"),
    }
}

fn edit_error(msg: String) -> Response {
    if msg == super::NOT_FOUND_MSG {
        fail(StatusCode::NOT_FOUND, msg)
    } else {
        fail(StatusCode::BAD_REQUEST, msg)
    }
}

async fn ui_create(State(sim): State<PipedriveSim>, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match sim.try_ui_create(body) {
        Ok(id) => person_or_404(&sim, id),
        Err(msg) => edit_error(msg),
    }
}

async fn list_all(State(sim): State<PipedriveSim>) -> Response {
    axum::Json(json!({"success": true, "data": sim.persons()})).into_response()
}

async fn get_one(State(sim): State<PipedriveSim>, Path(id): Path<String>) -> Response {
    match id_of(&id) {
        Ok(id) => person_or_404(&sim, id),
        Err(r) => *r,
    }
}

async fn ui_update(
    State(sim): State<PipedriveSim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match sim.try_ui_update(id, body) {
        Ok(()) => person_or_404(&sim, id),
        Err(msg) => edit_error(msg),
    }
}

async fn ui_delete(State(sim): State<PipedriveSim>, Path(id): Path<String>) -> Response {
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if sim.ui_delete(id) {
        axum::Json(json!({"success": true, "data": {"id": id}})).into_response()
    } else {
        fail(StatusCode::NOT_FOUND, "person not found")
    }
}

async fn ui_merge(
    State(sim): State<PipedriveSim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(with) = body.get("merge_with_id").and_then(Value::as_u64) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "merge_with_id (integer) is required",
        );
    };
    match sim.try_ui_merge(id, with) {
        Ok(()) => person_or_404(&sim, with),
        Err(msg) => edit_error(msg),
    }
}

async fn stats(State(sim): State<PipedriveSim>) -> Response {
    axum::Json(sim.stats()).into_response()
}

async fn reset_stats(State(sim): State<PipedriveSim>) -> Response {
    sim.reset_stats();
    axum::Json(sim.stats()).into_response()
}

async fn outage(State(sim): State<PipedriveSim>, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(down) = body.get("down").and_then(Value::as_bool) else {
        return fail(StatusCode::BAD_REQUEST, "body must be {\"down\": bool}");
    };
    sim.set_outage(down);
    axum::Json(json!({"down": down})).into_response()
}

async fn webhooks_switch(State(sim): State<PipedriveSim>, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(enabled) = body.get("enabled").and_then(Value::as_bool) else {
        return fail(StatusCode::BAD_REQUEST, "body must be {\"enabled\": bool}");
    };
    sim.set_webhooks_enabled(enabled);
    axum::Json(json!({"enabled": enabled})).into_response()
}

async fn reset_day(State(sim): State<PipedriveSim>) -> Response {
    sim.reset_day();
    axum::Json(json!({"daily_tokens_used": 0})).into_response()
}

/// Body: any of `burst_limit`, `oauth_burst_limit`, `search_burst_limit`, `daily_token_budget`;
/// a number sets the limit, `null` removes it, an absent key leaves it unchanged.
async fn rate_limit(State(sim): State<PipedriveSim>, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(obj) = body.as_object() else {
        return fail(StatusCode::BAD_REQUEST, "body must be an object");
    };
    let mut limits = sim.rate_limits();
    for (k, v) in obj {
        let n = match v {
            Value::Null => None,
            v => match v.as_u64() {
                Some(n) => Some(n),
                None => {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        format!("{k}: expected integer or null"),
                    );
                }
            },
        };
        let as_u32 = |n: Option<u64>| n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        match k.as_str() {
            "burst_limit" => limits.burst_limit = as_u32(n),
            "oauth_burst_limit" => limits.oauth_burst_limit = as_u32(n),
            "search_burst_limit" => limits.search_burst_limit = as_u32(n),
            "daily_token_budget" => limits.daily_token_budget = n,
            other => return fail(StatusCode::BAD_REQUEST, format!("unknown key {other}")),
        }
    }
    sim.set_rate_limits(limits);
    axum::Json(limits).into_response()
}

async fn clock(State(sim): State<PipedriveSim>, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(secs) = body.get("advance_seconds").and_then(Value::as_i64) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "body must be {\"advance_seconds\": int}",
        );
    };
    sim.advance_clock(secs);
    axum::Json(json!({"now": super::model::ts(sim.now())})).into_response()
}

async fn requests(State(sim): State<PipedriveSim>) -> Response {
    axum::Json(sim.request_log()).into_response()
}

async fn clear_requests(State(sim): State<PipedriveSim>) -> Response {
    sim.clear_request_log();
    StatusCode::NO_CONTENT.into_response()
}

async fn deliveries(State(sim): State<PipedriveSim>) -> Response {
    axum::Json(sim.webhook_log()).into_response()
}

async fn fields(State(sim): State<PipedriveSim>) -> Response {
    axum::Json(json!({"success": true, "data": sim.fields()})).into_response()
}

/// Body: `{"field_name": "...", "field_type": "...", "options": [{"label": ...}]}` (as the API).
async fn create_field(State(sim): State<PipedriveSim>, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let result = sim.core().lock().create_field(&body);
    match result {
        Ok(f) => {
            axum::Json(json!({"success": true, "data": super::model::render_custom_field(&f, &[])}))
                .into_response()
        }
        Err(msg) => fail(StatusCode::BAD_REQUEST, msg),
    }
}

pub(crate) fn routes() -> Router<PipedriveSim> {
    Router::new()
        .route("/_sim/pipedrive/persons", get(list_all).post(ui_create))
        .route(
            "/_sim/pipedrive/persons/{id}",
            get(get_one).patch(ui_update).delete(ui_delete),
        )
        .route("/_sim/pipedrive/persons/{id}/merge", post(ui_merge))
        .route("/_sim/pipedrive/stats", get(stats))
        .route("/_sim/pipedrive/stats/reset", post(reset_stats))
        .route("/_sim/pipedrive/outage", post(outage))
        .route("/_sim/pipedrive/webhooks", post(webhooks_switch))
        .route("/_sim/pipedrive/reset-day", post(reset_day))
        .route("/_sim/pipedrive/config/rate-limit", put(rate_limit))
        .route("/_sim/pipedrive/clock", post(clock))
        .route(
            "/_sim/pipedrive/requests",
            get(requests).delete(clear_requests),
        )
        .route("/_sim/pipedrive/webhook-deliveries", get(deliveries))
        .route("/_sim/pipedrive/fields", get(fields).post(create_field))
}

//! Each person's field changelog, as `GET /api/v1/persons/{id}/changelog` lists it: one item
//! per field a write changed (`field_key`, `old_value`, `new_value`, `actor_user_id`, `time` in
//! `YYYY-MM-DD HH:MM:SS` UTC, `change_source`, …), newest first, paged by an opaque cursor.
//! The keys are the person fields' keys: `first_name`, `last_name`, `name`, `email` and
//! `phone` (the primary entry's value), `job_title`, and custom fields' 40-hex keys.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::PipedriveSim;
use super::model::{self, Person};
use super::store::Actor;

/// One field's change.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Change {
    pub field_key: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub actor: Actor,
    pub time: DateTime<Utc>,
}

/// Items per page when the request names no limit (and at most).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

fn plain(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o.get("value").and_then(plain),
        _ => None,
    }
}

/// What the changelog sees of a person: each key's value as text.
fn values(p: &Person) -> BTreeMap<String, Option<String>> {
    let primary = |c: &[model::Channel]| {
        c.iter()
            .find(|c| c.primary)
            .or(c.first())
            .map(|c| c.value.clone())
    };
    let mut out = BTreeMap::new();
    out.insert(
        "name".to_string(),
        Some(p.name.clone()).filter(|n| !n.is_empty()),
    );
    out.insert("first_name".to_string(), p.first_name.clone());
    out.insert("last_name".to_string(), p.last_name.clone());
    out.insert("email".to_string(), primary(&p.emails));
    out.insert("phone".to_string(), primary(&p.phones));
    out.insert("job_title".to_string(), p.job_title.clone());
    for (key, v) in &p.custom_fields {
        out.insert(key.clone(), plain(v));
    }
    out
}

/// The changes from `old` to `new`, one per key whose value differs.
pub(crate) fn diff(old: &Person, new: &Person, actor: Actor, time: DateTime<Utc>) -> Vec<Change> {
    let (before, after) = (values(old), values(new));
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (o, n) = (
                before.get(key).cloned().flatten(),
                after.get(key).cloned().flatten(),
            );
            (o != n).then(|| Change {
                field_key: key.clone(),
                old_value: o,
                new_value: n,
                actor,
                time,
            })
        })
        .collect()
}

fn render(c: &Change) -> Value {
    json!({
        "field_key": c.field_key,
        "old_value": c.old_value,
        "new_value": c.new_value,
        "actor_user_id": c.actor.user_id,
        "time": model::ts_v1(c.time),
        "change_source": c.actor.source,
        "change_source_user_agent": if c.actor.source == "api" { "contact-sync" } else { "Mozilla/5.0" },
        "is_bulk_update_flag": false,
    })
}

/// `GET /api/v1/persons/{id}/changelog?cursor&limit`
pub(crate) async fn get_changelog(
    State(sim): State<PipedriveSim>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let param = |name: &str| q.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let id = match id.parse::<u64>() {
        Ok(n) if n > 0 => n,
        _ => {
            return super::api::error_body(
                axum::http::StatusCode::BAD_REQUEST,
                &format!("Validation failed: id: expected positive integer, got '{id}'"),
                "Please check developers.pipedrive.com for more information about Pipedrive API.",
            );
        }
    };
    let limit = match param("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if n > 0 => n.min(MAX_LIMIT),
        Some(_) => {
            return super::api::error_body(
                axum::http::StatusCode::BAD_REQUEST,
                "Validation failed: limit: expected positive integer",
                "Please check developers.pipedrive.com for more information about Pipedrive API.",
            );
        }
    };
    // The cursor is opaque to callers: here, how many items the earlier pages held.
    let start = param("cursor")
        .and_then(|c| c.strip_prefix("offset:"))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let st = sim.core().lock();
    if !st.persons.contains_key(&id) {
        return super::api::error_body(
            axum::http::StatusCode::NOT_FOUND,
            "Person not found",
            "Object was not found.",
        );
    }
    let all: Vec<&Change> = st
        .changelog
        .get(&id)
        .map(|c| c.iter().rev().collect())
        .unwrap_or_default();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|c| render(c))
        .collect();
    let next = (start + limit < all.len()).then(|| format!("offset:{}", start + limit));
    axum::Json(json!({
        "success": true,
        "data": page,
        "additional_data": {"next_cursor": next},
    }))
    .into_response()
}

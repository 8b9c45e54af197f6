//! Handlers of the simulated Pipedrive API (`/api/v2/...` and the v1 endpoints we need).
//! Authentication, limits and costs are handled by `gate` before these run.

use std::cmp::Ordering;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::PipedriveSim;
use super::gate::{AuthKind, Principal};
use super::model::{self, Person, RenderOpts};
use super::store::{OpError, Webhook};

type Params = Query<Vec<(String, String)>>;

const ERROR_INFO: &str =
    "Please check developers.pipedrive.com for more information about Pipedrive API.";

/// The standard error envelope: `{"success":false,"error":…,"error_info":…,"data":null,"additional_data":null}`.
pub(crate) fn error_body(status: StatusCode, error: &str, info: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "success": false,
            "error": error,
            "error_info": info,
            "data": null,
            "additional_data": null,
        })),
    )
        .into_response()
}

fn bad_request(msg: impl AsRef<str>) -> Response {
    error_body(StatusCode::BAD_REQUEST, msg.as_ref(), ERROR_INFO)
}

/// A rejected request (boxed: a `Response` is large).
type Rejection = Box<Response>;

fn reject(msg: impl AsRef<str>) -> Rejection {
    Box::new(bad_request(msg))
}

fn not_found() -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "Entity was not found",
        "Object was not found.",
    )
}

fn ok(data: Value) -> Response {
    axum::Json(json!({"success": true, "data": data})).into_response()
}

fn ok_paged(data: Value, next_cursor: Option<String>) -> Response {
    axum::Json(json!({
        "success": true,
        "data": data,
        "additional_data": {"next_cursor": next_cursor},
    }))
    .into_response()
}

fn op_error(e: OpError) -> Response {
    match e {
        OpError::NotFound => not_found(),
        OpError::Invalid(msg) => bad_request(msg),
    }
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_json(body: &Bytes) -> Result<Value, Rejection> {
    if body.is_empty() {
        return Err(reject("Validation failed: request body is required"));
    }
    serde_json::from_slice(body).map_err(|e| reject(format!("Invalid JSON in request body: {e}")))
}

fn parse_path_id(raw: &str) -> Result<u64, Rejection> {
    match raw.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(reject(format!(
            "Validation failed: id: expected positive integer, got '{raw}'"
        ))),
    }
}

fn parse_int_param(q: &[(String, String)], name: &str) -> Result<Option<u64>, Rejection> {
    match param(q, name) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            reject(format!(
                "Validation failed: {name}: expected integer, got '{v}'"
            ))
        }),
    }
}

fn parse_bool_param(q: &[(String, String)], name: &str) -> Result<bool, Rejection> {
    match param(q, name) {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(reject(format!(
            "Validation failed: {name}: expected boolean (true/false), got '{v}'"
        ))),
    }
}

/// `limit`: default 100, 1..=500.
fn parse_limit(q: &[(String, String)]) -> Result<usize, Rejection> {
    match param(q, "limit") {
        None => Ok(100),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=500).contains(&n) => Ok(n as usize),
            Ok(_) => Err(reject(
                "Validation failed: limit: must be between 1 and 500",
            )),
            Err(_) => Err(reject(format!(
                "Validation failed: limit: expected integer, got '{v}'"
            ))),
        },
    }
}

/// RFC 3339 with whole seconds only; fractional seconds are rejected like the real API does.
fn parse_filter_time(name: &str, v: &str) -> Result<DateTime<Utc>, Rejection> {
    let err = || {
        reject(format!(
            "Validation failed: {name}: expected RFC3339 date-time without fractional seconds, e.g. 2025-01-01T10:20:00Z, got '{v}'"
        ))
    };
    if v.contains('.') {
        return Err(err());
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| err())
}

fn comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses the query parameters that shape a person in the response.
fn render_opts(
    sim: &PipedriveSim,
    q: &[(String, String)],
    customs: &[model::CustomField],
) -> Result<RenderOpts, Rejection> {
    let mut opts = RenderOpts {
        contact_sync: sim.core().cfg.contact_sync_fields,
        ..Default::default()
    };
    if let Some(v) = param(q, "include_fields") {
        for f in comma_list(v) {
            if !model::PERSON_INCLUDE_FIELDS.contains(&f.as_str()) {
                return Err(reject(format!(
                    "Validation failed: include_fields: '{f}' is not a supported value"
                )));
            }
            opts.include_fields.push(f);
        }
    }
    if let Some(v) = param(q, "custom_fields") {
        let keys = comma_list(v);
        if keys.len() > 15 {
            return Err(reject(
                "Validation failed: custom_fields: a maximum of 15 keys is allowed",
            ));
        }
        for k in &keys {
            if !customs.iter().any(|f| &f.key == k) {
                return Err(reject(format!(
                    "Validation failed: custom_fields: unknown custom field key '{k}'"
                )));
            }
        }
        opts.custom_keys = Some(keys);
    }
    opts.include_option_labels = parse_bool_param(q, "include_option_labels")?;
    opts.include_labels = parse_bool_param(q, "include_labels")?;
    Ok(opts)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SortBy {
    Id,
    UpdateTime,
    AddTime,
}

impl SortBy {
    fn name(self) -> &'static str {
        match self {
            SortBy::Id => "id",
            SortBy::UpdateTime => "update_time",
            SortBy::AddTime => "add_time",
        }
    }

    fn key(self, p: &Person) -> (i64, u64) {
        let k = match self {
            SortBy::Id => p.id as i64,
            SortBy::UpdateTime => p.update_time.timestamp(),
            SortBy::AddTime => p.add_time.timestamp(),
        };
        (k, p.id)
    }

    fn field_value(self, p: &Person) -> Value {
        match self {
            SortBy::Id => json!(p.id),
            SortBy::UpdateTime => json!(model::ts(p.update_time)),
            SortBy::AddTime => json!(model::ts(p.add_time)),
        }
    }
}

/// Keyset cursor, encoded like Pipedrive's: base64url of
/// `{"field":…,"fieldValue":…,"sortDirection":…,"id":…}`.
fn encode_cursor(sort: SortBy, desc: bool, p: &Person) -> String {
    let c = json!({
        "field": sort.name(),
        "fieldValue": sort.field_value(p),
        "sortDirection": if desc { "desc" } else { "asc" },
        "id": p.id,
    });
    URL_SAFE_NO_PAD.encode(c.to_string())
}

fn decode_cursor(raw: &str, sort: SortBy, desc: bool) -> Result<(i64, u64), Rejection> {
    let invalid = || reject("Validation failed: cursor: invalid cursor");
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let c: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if c["field"] != json!(sort.name())
        || c["sortDirection"] != json!(if desc { "desc" } else { "asc" })
    {
        return Err(reject(
            "Validation failed: cursor: cursor does not match sort_by / sort_direction",
        ));
    }
    let id = c["id"].as_u64().ok_or_else(invalid)?;
    let key = match sort {
        SortBy::Id => c["fieldValue"].as_i64().ok_or_else(invalid)?,
        _ => {
            let s = c["fieldValue"].as_str().ok_or_else(invalid)?;
            DateTime::parse_from_rfc3339(s)
                .map_err(|_| invalid())?
                .timestamp()
        }
    };
    Ok((key, id))
}

/// Offset cursor for search and field lists.
fn encode_offset(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(json!({"offset": offset}).to_string())
}

fn decode_offset(raw: Option<&str>) -> Result<usize, Rejection> {
    let Some(raw) = raw else { return Ok(0) };
    URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["offset"].as_u64())
        .map(|n| n as usize)
        .ok_or_else(|| reject("Validation failed: cursor: invalid cursor"))
}

/// `GET /api/v2/persons`
pub(crate) async fn list_persons(State(sim): State<PipedriveSim>, Query(q): Params) -> Response {
    let limit = match parse_limit(&q) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let sort = match param(&q, "sort_by") {
        None | Some("id") => SortBy::Id,
        Some("update_time") => SortBy::UpdateTime,
        Some("add_time") => SortBy::AddTime,
        Some(v) => {
            return bad_request(format!(
                "Validation failed: sort_by: must be one of id, update_time, add_time, got '{v}'"
            ));
        }
    };
    let desc = match param(&q, "sort_direction") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(v) => {
            return bad_request(format!(
                "Validation failed: sort_direction: must be asc or desc, got '{v}'"
            ));
        }
    };
    let since = match param(&q, "updated_since").map(|v| parse_filter_time("updated_since", v)) {
        Some(Err(r)) => return *r,
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let until = match param(&q, "updated_until").map(|v| parse_filter_time("updated_until", v)) {
        Some(Err(r)) => return *r,
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let (filter_id, owner_id, org_id, deal_id) = match (
        parse_int_param(&q, "filter_id"),
        parse_int_param(&q, "owner_id"),
        parse_int_param(&q, "org_id"),
        parse_int_param(&q, "deal_id"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(r), ..) | (_, Err(r), ..) | (_, _, Err(r), _) | (.., Err(r)) => return *r,
    };
    if let Some(f) = filter_id {
        // The simulator has no saved filters.
        return bad_request(format!("Filter with id {f} was not found"));
    }
    let ids: Option<Vec<u64>> = match param(&q, "ids") {
        None => None,
        Some(v) => {
            let parts = comma_list(v);
            if parts.len() > 100 {
                return bad_request("Validation failed: ids: up to 100 ids are allowed");
            }
            let mut out = Vec::new();
            for p in parts {
                match p.parse::<u64>() {
                    Ok(n) => out.push(n),
                    Err(_) => {
                        return bad_request(format!(
                            "Validation failed: ids: '{p}' is not an integer"
                        ));
                    }
                }
            }
            Some(out)
        }
    };

    let mut st = sim.core().lock();
    st.purge();
    let opts = match render_opts(&sim, &q, &st.customs) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let after = match param(&q, "cursor") {
        Some(c) => match decode_cursor(c, sort, desc) {
            Ok(k) => Some(k),
            Err(r) => return *r,
        },
        None => None,
    };
    let mut items: Vec<&Person> = st
        .persons
        .values()
        .filter(|p| !p.is_deleted())
        .filter(|p| ids.as_ref().is_none_or(|ids| ids.contains(&p.id)))
        .filter(|p| owner_id.is_none_or(|o| p.owner_id == o))
        .filter(|p| org_id.is_none_or(|o| p.org_id == Some(o)))
        .filter(|_| deal_id.is_none())
        .filter(|p| since.is_none_or(|t| p.update_time >= t))
        .filter(|p| until.is_none_or(|t| p.update_time < t))
        .collect();
    items.sort_by(|a, b| {
        let o = sort.key(a).cmp(&sort.key(b));
        if desc { o.reverse() } else { o }
    });
    if let Some(pos) = after {
        items.retain(|p| {
            let o = sort.key(p).cmp(&pos);
            if desc {
                o == Ordering::Less
            } else {
                o == Ordering::Greater
            }
        });
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|p| encode_cursor(sort, desc, p))
    } else {
        None
    };
    let data: Vec<Value> = items
        .iter()
        .map(|p| model::render_v2(p, &st.customs, &opts))
        .collect();
    ok_paged(Value::Array(data), next)
}

/// `GET /api/v2/persons/{id}`
pub(crate) async fn get_person(
    State(sim): State<PipedriveSim>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let id = match parse_path_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let mut st = sim.core().lock();
    st.purge();
    let opts = match render_opts(&sim, &q, &st.customs) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    match st.live(id) {
        Some(p) => ok(model::render_v2(p, &st.customs, &opts)),
        None => not_found(),
    }
}

fn person_response(sim: &PipedriveSim, st: &super::store::State, p: &Person) -> Response {
    let opts = RenderOpts {
        contact_sync: sim.core().cfg.contact_sync_fields,
        ..Default::default()
    };
    ok(model::render_v2(p, &st.customs, &opts))
}

/// `POST /api/v2/persons` (answers 200, not 201)
pub(crate) async fn add_person(State(sim): State<PipedriveSim>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let cfg = &sim.core().cfg;
    let mut st = sim.core().lock();
    match st.create_person(
        &body,
        sim.api_actor(),
        cfg.contact_sync_fields,
        cfg.company_id,
    ) {
        Ok((p, events)) => {
            sim.emit(&mut st, events);
            person_response(&sim, &st, &p)
        }
        Err(e) => op_error(e),
    }
}

/// `PATCH /api/v2/persons/{id}`
pub(crate) async fn update_person(
    State(sim): State<PipedriveSim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let id = match parse_path_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let cfg = &sim.core().cfg;
    let mut st = sim.core().lock();
    st.purge();
    match st.update_person(
        id,
        &body,
        sim.api_actor(),
        cfg.contact_sync_fields,
        cfg.company_id,
    ) {
        Ok((p, events)) => {
            sim.emit(&mut st, events);
            person_response(&sim, &st, &p)
        }
        Err(e) => op_error(e),
    }
}

/// `DELETE /api/v2/persons/{id}`
pub(crate) async fn delete_person(
    State(sim): State<PipedriveSim>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_path_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let mut st = sim.core().lock();
    st.purge();
    match st.delete_person(id, sim.api_actor(), sim.core().cfg.company_id) {
        Ok((id, events)) => {
            sim.emit(&mut st, events);
            ok(json!({"id": id}))
        }
        Err(e) => op_error(e),
    }
}

/// `GET /api/v2/persons/search`
pub(crate) async fn search_persons(State(sim): State<PipedriveSim>, Query(q): Params) -> Response {
    let exact = match parse_bool_param(&q, "exact_match") {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(term) = param(&q, "term") else {
        return bad_request("Validation failed: term: required");
    };
    let term = term.trim().to_string();
    let min = if exact { 1 } else { 2 };
    if term.chars().count() < min {
        return bad_request(format!(
            "Validation failed: term: must be at least {min} characters long"
        ));
    }
    let fields: Vec<String> = match param(&q, "fields") {
        None => model::SEARCH_FIELDS.iter().map(|s| s.to_string()).collect(),
        Some(v) => {
            let list = comma_list(v);
            for f in &list {
                if !model::SEARCH_FIELDS.contains(&f.as_str()) {
                    return bad_request(format!(
                        "Validation failed: fields: '{f}' is not one of custom_fields, email, notes, phone, name"
                    ));
                }
            }
            list
        }
    };
    let org = match parse_int_param(&q, "organization_id") {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if let Some(v) = param(&q, "include_fields")
        && v != "person.picture"
    {
        return bad_request("Validation failed: include_fields: must be person.picture");
    }
    let limit = match parse_limit(&q) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let offset = match decode_offset(param(&q, "cursor")) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let needle = term.to_lowercase();
    let mut st = sim.core().lock();
    st.purge();
    let mut hits: Vec<(f64, Value)> = Vec::new();
    // Search sees each person as the index last saw it (it lags writes).
    let indexed = st.persons.values().filter_map(|p| st.searchable(p));
    for p in indexed.filter(|p| !p.is_deleted()) {
        if org.is_some_and(|o| p.org_id != Some(o)) {
            continue;
        }
        let mut score: f64 = 0.0;
        let mut custom_hits = Vec::new();
        let mut note_hits = Vec::new();
        for f in &fields {
            for v in model::search_values(p, &st.customs, f) {
                let lv = v.to_lowercase();
                let s = if lv == needle {
                    1.0
                } else if !exact && lv.contains(&needle) {
                    0.5
                } else {
                    0.0
                };
                if s > 0.0 {
                    score = score.max(s);
                    match f.as_str() {
                        "custom_fields" => custom_hits.push(v.clone()),
                        "notes" => note_hits.push(v.clone()),
                        _ => {}
                    }
                }
            }
        }
        if score == 0.0 {
            continue;
        }
        let item = json!({
            "id": p.id,
            "type": "person",
            "name": p.name,
            "phones": p.phones.iter().map(|c| c.value.clone()).collect::<Vec<_>>(),
            "emails": p.emails.iter().map(|c| c.value.clone()).collect::<Vec<_>>(),
            "visible_to": p.visible_to,
            "owner": {"id": p.owner_id},
            "organization": p.org_id.map(|id| json!({"id": id, "name": null, "address": null})),
            "custom_fields": custom_hits,
            "notes": note_hits,
        });
        hits.push((score, item));
    }
    // Best matches first; ties keep id order.
    hits.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));
    let total = hits.len();
    let page: Vec<Value> = hits
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(score, item)| json!({"result_score": score, "item": item}))
        .collect();
    let next = (offset + limit < total).then(|| encode_offset(offset + limit));
    ok_paged(json!({"items": page}), next)
}

fn field_include(q: &[(String, String)]) -> Result<Vec<String>, Rejection> {
    let list = param(q, "include_fields")
        .map(comma_list)
        .unwrap_or_default();
    for f in &list {
        if !matches!(
            f.as_str(),
            "ui_visibility" | "important_fields" | "required_fields"
        ) {
            return Err(reject(format!(
                "Validation failed: include_fields: '{f}' is not a supported value"
            )));
        }
    }
    Ok(list)
}

fn all_fields(sim: &PipedriveSim, st: &super::store::State, include: &[String]) -> Vec<Value> {
    let contact_sync = sim.core().cfg.contact_sync_fields;
    model::BUILTIN_FIELDS
        .iter()
        .filter(|f| contact_sync || !f.contact_sync_only)
        .map(|f| model::render_builtin_field(f, include))
        .chain(
            st.customs
                .iter()
                .map(|f| model::render_custom_field(f, include)),
        )
        .collect()
}

/// `GET /api/v2/personFields`
pub(crate) async fn list_fields(State(sim): State<PipedriveSim>, Query(q): Params) -> Response {
    let include = match field_include(&q) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let limit = match parse_limit(&q) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let offset = match decode_offset(param(&q, "cursor")) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let st = sim.core().lock();
    let all = all_fields(&sim, &st, &include);
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let next = (offset + limit < total).then(|| encode_offset(offset + limit));
    ok_paged(Value::Array(page), next)
}

/// `POST /api/v2/personFields`
pub(crate) async fn add_field(State(sim): State<PipedriveSim>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let mut st = sim.core().lock();
    match st.create_field(&body) {
        Ok(f) => ok(model::render_custom_field(
            &f,
            &[
                "ui_visibility".into(),
                "important_fields".into(),
                "required_fields".into(),
            ],
        )),
        Err(msg) => bad_request(msg),
    }
}

/// `GET /api/v2/personFields/{field_code}`
pub(crate) async fn get_field(
    State(sim): State<PipedriveSim>,
    Path(code): Path<String>,
    Query(q): Params,
) -> Response {
    let include = match field_include(&q) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let st = sim.core().lock();
    all_fields(&sim, &st, &include)
        .into_iter()
        .find(|f| f["field_code"] == json!(code))
        .map(ok)
        .unwrap_or_else(not_found)
}

/// `DELETE /api/v2/personFields/{field_code}` (custom fields only)
pub(crate) async fn delete_field(
    State(sim): State<PipedriveSim>,
    Path(code): Path<String>,
) -> Response {
    let mut st = sim.core().lock();
    if model::BUILTIN_FIELDS.iter().any(|f| f.code == code) {
        return bad_request("System fields can not be deleted");
    }
    match st.delete_field(&code) {
        Some(f) => ok(json!({
            "field_name": f.name,
            "field_code": f.key,
            "field_type": f.field_type,
            "is_custom_field": true,
            "is_optional_response_field": false,
        })),
        None => not_found(),
    }
}

/// `PUT /api/v1/persons/{id}/merge` with `{"merge_with_id": N}`: person `id` is merged into
/// `merge_with_id`, which survives. The response is the survivor in the v1 shape.
pub(crate) async fn merge_persons(
    State(sim): State<PipedriveSim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let id = match parse_path_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(obj) = body.as_object() else {
        return bad_request("Validation failed: request body must be a JSON object");
    };
    let merge_with_id = match obj.get("merge_with_id") {
        None => return bad_request("Validation failed: merge_with_id: required"),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => n,
            _ => return bad_request("Validation failed: merge_with_id: expected integer"),
        },
    };
    let company_id = sim.core().cfg.company_id;
    let mut st = sim.core().lock();
    st.purge();
    match st.merge_persons(id, merge_with_id, sim.api_actor(), company_id) {
        Ok((survivor, events)) => {
            sim.emit(&mut st, events);
            let mut data = model::render_v1(&survivor, &st.customs, company_id);
            data["merge_what_id"] = json!(id);
            ok(data)
        }
        Err(e) => op_error(e),
    }
}

/// `GET /api/v1/users/me`
pub(crate) async fn users_me(State(sim): State<PipedriveSim>) -> Response {
    let cfg = &sim.core().cfg;
    ok(json!({
        "id": cfg.api_user_id,
        "name": cfg.api_user_name,
        "default_currency": "EUR",
        "locale": "en_US",
        "lang": 1,
        "email": cfg.api_user_email,
        "phone": null,
        "activated": true,
        "last_login": "2025-01-01 00:00:00",
        "created": "2024-01-01 00:00:00",
        "modified": "2025-01-01 00:00:00",
        "has_created_company": true,
        "access": [
            {"app": "sales", "admin": true, "permission_set_id": "00000000-0000-4000-8000-000000000001"},
            {"app": "global", "admin": true, "permission_set_id": "00000000-0000-4000-8000-000000000002"},
        ],
        "active_flag": true,
        "timezone_name": "Europe/Tallinn",
        "timezone_offset": "+02:00",
        "role_id": 1,
        "icon_url": null,
        "is_you": true,
        "is_deleted": false,
        "company_id": cfg.company_id,
        "company_name": cfg.company_name,
        "company_domain": cfg.company_domain,
        "company_country": "EE",
        "company_industry": null,
        "language": {"language_code": "en", "country_code": "US"},
    }))
}

fn webhook_errors(errors: Map<String, Value>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"status": "error", "success": false, "errors": errors})),
    )
        .into_response()
}

/// `GET /api/v1/webhooks`
pub(crate) async fn list_webhooks(State(sim): State<PipedriveSim>) -> Response {
    let company_id = sim.core().cfg.company_id;
    let st = sim.core().lock();
    let data: Vec<Value> = st
        .webhooks
        .values()
        .map(|w| w.to_json(company_id))
        .collect();
    axum::Json(json!({"status": "ok", "success": true, "data": data})).into_response()
}

/// Maximum number of webhooks per user (documented).
const MAX_WEBHOOKS_PER_USER: usize = 40;

const EVENT_ACTIONS: &[&str] = &["create", "change", "delete", "*"];
const EVENT_OBJECTS: &[&str] = &[
    "activity",
    "deal",
    "lead",
    "note",
    "organization",
    "person",
    "pipeline",
    "product",
    "stage",
    "user",
    "*",
];

/// `POST /api/v1/webhooks` (answers 201)
pub(crate) async fn add_webhook(
    State(sim): State<PipedriveSim>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let cfg = &sim.core().cfg;
    let mut errors = Map::new();
    let mut err = |k: &str, m: &str| {
        errors.insert(k.to_string(), json!([m]));
    };
    let Some(obj) = body.as_object() else {
        err("body", "must be a JSON object");
        return webhook_errors(errors);
    };
    let s = |k: &str| obj.get(k).and_then(Value::as_str);
    let url = s("subscription_url").unwrap_or_default().to_string();
    match reqwest::Url::parse(&url) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.ends_with("pipedrive.com")) => {}
        _ => err("subscription_url", "invalid or non-reachable URL"),
    }
    let action = s("event_action").unwrap_or_default().to_string();
    if !EVENT_ACTIONS.contains(&action.as_str()) {
        err("event_action", "must be one of create, change, delete, *");
    }
    let object = s("event_object").unwrap_or_default().to_string();
    if !EVENT_OBJECTS.contains(&object.as_str()) {
        err("event_object", "invalid event object");
    }
    let name = s("name").unwrap_or_default().to_string();
    if name.trim().is_empty() || name.chars().count() > 255 {
        err("name", "is required (max 255 characters)");
    }
    let version = match obj.get("version") {
        None | Some(Value::Null) => "2.0".to_string(),
        Some(Value::String(v)) if v == "1.0" || v == "2.0" => v.clone(),
        Some(_) => {
            err("version", "must be 1.0 or 2.0");
            String::new()
        }
    };
    let user_id = match obj.get("user_id") {
        None | Some(Value::Null) => cfg.api_user_id,
        Some(v) => match v.as_u64() {
            Some(id) if id == cfg.api_user_id || id == cfg.ui_user_id => id,
            _ => {
                err("user_id", "user not found in the company");
                0
            }
        },
    };
    let mut auth = |k: &str| match obj.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(_) => {
            err(k, "must be a string or null");
            None
        }
    };
    let http_auth_user = auth("http_auth_user");
    let http_auth_password = auth("http_auth_password");
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "subscription_url"
                | "event_action"
                | "event_object"
                | "name"
                | "user_id"
                | "http_auth_user"
                | "http_auth_password"
                | "version"
        ) {
            err(k, "unknown parameter");
        }
    }
    if !errors.is_empty() {
        return webhook_errors(errors);
    }
    let mut st = sim.core().lock();
    let owned = st
        .webhooks
        .values()
        .filter(|w| w.owner_id == cfg.api_user_id)
        .count();
    if owned >= MAX_WEBHOOKS_PER_USER {
        errors.insert(
            "webhooks".into(),
            json!(["The maximum limit of 40 webhooks per user is reached"]),
        );
        return webhook_errors(errors);
    }
    let id = st.next_webhook_id;
    st.next_webhook_id += 1;
    let w = Webhook {
        id,
        owner_id: cfg.api_user_id,
        user_id,
        event_action: action,
        event_object: object,
        subscription_url: url,
        version,
        add_time: st.now(),
        kind: if principal.kind == AuthKind::Bearer {
            "application"
        } else {
            "general"
        },
        http_auth_user,
        http_auth_password,
        name,
        last_delivery_time: None,
        last_http_status: None,
    };
    let data = w.to_json(cfg.company_id);
    st.webhooks.insert(id, w);
    (
        StatusCode::CREATED,
        axum::Json(json!({"status": "ok", "success": true, "data": data})),
    )
        .into_response()
}

/// `DELETE /api/v1/webhooks/{id}`
pub(crate) async fn delete_webhook(
    State(sim): State<PipedriveSim>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_path_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let mut st = sim.core().lock();
    if st.webhooks.remove(&id).is_some() {
        axum::Json(json!({"status": "ok", "success": true})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "status": "error",
                "success": false,
                "errors": {"id": ["Webhook not found"]},
            })),
        )
            .into_response()
    }
}

/// Any other path under `/api/`: answered by the gate with a 404.
pub(crate) async fn unknown() -> Response {
    not_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: u64, secs: i64) -> Person {
        let t = DateTime::from_timestamp(secs, 0).unwrap();
        let input = model::parse_person_input(
            &json!({"name": format!("P {id}")}),
            model::Mode::Create,
            &[],
            false,
        )
        .unwrap();
        let mut p = model::new_person(id, input, 1, t).unwrap();
        p.update_time = t;
        p
    }

    #[test]
    fn cursor_round_trip_and_format() {
        let p = person(7, 1_700_000_000);
        let c = encode_cursor(SortBy::Id, false, &p);
        let decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&c).unwrap()).unwrap();
        assert_eq!(
            decoded,
            json!({"field": "id", "fieldValue": 7, "sortDirection": "asc", "id": 7})
        );
        assert!(decode_cursor(&c, SortBy::Id, false).is_ok());
        assert!(decode_cursor(&c, SortBy::UpdateTime, false).is_err());
        assert!(decode_cursor(&c, SortBy::Id, true).is_err());
        assert!(decode_cursor("garbage!", SortBy::Id, false).is_err());
        let c = encode_cursor(SortBy::UpdateTime, true, &p);
        assert_eq!(
            decode_cursor(&c, SortBy::UpdateTime, true).unwrap(),
            (1_700_000_000, 7)
        );
    }

    #[test]
    fn filter_times_reject_fractions() {
        assert!(parse_filter_time("updated_since", "2025-01-01T10:20:00Z").is_ok());
        assert!(parse_filter_time("updated_since", "2025-01-01T10:20:00+02:00").is_ok());
        assert!(parse_filter_time("updated_since", "2025-01-01T10:20:00.000Z").is_err());
        assert!(parse_filter_time("updated_since", "2025-01-01 10:20:00").is_err());
    }

    #[test]
    fn limits_are_checked() {
        let q = |v: &str| vec![("limit".to_string(), v.to_string())];
        assert_eq!(parse_limit(&[]).unwrap(), 100);
        assert_eq!(parse_limit(&q("500")).unwrap(), 500);
        assert!(parse_limit(&q("501")).is_err());
        assert!(parse_limit(&q("0")).is_err());
        assert!(parse_limit(&q("ten")).is_err());
    }
}

//! Handlers of the CRM v3 contacts and properties endpoints.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::HubSpotSim;
use super::error::{ApiError, WriteError};
use super::properties::property_from_create_body;
use super::query::QueryParams;
use super::search::{MAX_BODY_CHARS, Plan, SearchRequest};
use super::store::{IdKind, Selection, Store, first_duplicate, fmt_ts};

type ApiResult = Result<Response, ApiError>;

/// Inputs per batch request (HubSpot's contacts API guide:
/// batch endpoints take up to 100 inputs).
pub(crate) const MAX_BATCH_INPUTS: usize = 100;
const LIST_DEFAULT_LIMIT: usize = 10;
const LIST_MAX_LIMIT: usize = 100;

pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json(
            "No content to map due to end-of-input",
        ));
    }
    serde_json::from_slice(body).map_err(ApiError::invalid_json)
}

fn missing_fields(fields: &[(&str, bool)]) -> Result<(), ApiError> {
    let missing: Vec<&str> = fields
        .iter()
        .filter(|(_, present)| !present)
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_json(format!(
            "Some required fields were not set: [{}]",
            missing.join(", ")
        )))
    }
}

/// Property values may arrive as strings, numbers, booleans or null; HubSpot stores strings.
pub(crate) fn props_from_json(
    map: &Map<String, Value>,
) -> Result<BTreeMap<String, String>, ApiError> {
    map.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                _ => {
                    return Err(ApiError::invalid_json(format!(
                        "Cannot deserialize value of type `String` from {} for property \"{k}\"",
                        if v.is_array() { "Array" } else { "Object" }
                    )));
                }
            };
            Ok((k.clone(), s))
        })
        .collect()
}

fn id_string(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(ApiError::invalid_json("id must be a string")),
    }
}

fn check_batch_size(n: usize) -> Result<(), ApiError> {
    if n > MAX_BATCH_INPUTS {
        Err(ApiError::validation(format!(
            "Too many inputs: {n}. Batch requests accept at most {MAX_BATCH_INPUTS} inputs."
        )))
    } else {
        Ok(())
    }
}

fn selection(props: &Option<Vec<String>>) -> Selection<'_> {
    match props {
        Some(p) if !p.is_empty() => Selection::Named(p),
        _ => Selection::Default,
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn batch_response(
    ok_status: StatusCode,
    results: Vec<Value>,
    errors: Vec<Value>,
    started: chrono::DateTime<Utc>,
) -> Response {
    let mut body = Map::new();
    body.insert("status".into(), json!("COMPLETE"));
    body.insert("results".into(), Value::Array(results));
    let status = if errors.is_empty() {
        ok_status
    } else {
        body.insert("numErrors".into(), json!(errors.len()));
        body.insert("errors".into(), Value::Array(errors));
        StatusCode::MULTI_STATUS
    };
    body.insert("startedAt".into(), json!(fmt_ts(started)));
    body.insert("completedAt".into(), json!(fmt_ts(started)));
    json_response(status, Value::Object(body))
}

// ---- single-record endpoints ---------------------------------------------------------------

/// `GET /crm/v3/objects/contacts`
pub(crate) async fn list_contacts(
    State(sim): State<HubSpotSim>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = QueryParams::parse(q.as_deref());
    let limit = match q.get("limit") {
        None | Some("") => LIST_DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::validation(format!("Invalid limit \"{v}\"")))?,
    };
    if limit == 0 || limit > LIST_MAX_LIMIT {
        return Err(ApiError::validation(format!(
            "limit must be between 1 and {LIST_MAX_LIMIT}, got {limit}"
        )));
    }
    let after = match q.get("after") {
        None | Some("") => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::validation(format!("Invalid after cursor \"{v}\"")))?,
    };
    let archived = q.bool("archived")?;
    let props = q.list("properties");
    let history = q.list("propertiesWithHistory").unwrap_or_default();
    let store = sim.store();
    let mut matching = store
        .contacts
        .range(after..)
        .map(|(_, r)| r)
        .filter(|r| r.archived() == archived);
    let results: Vec<Value> = matching
        .by_ref()
        .take(limit)
        .map(|r| store.render(r, selection(&props), &history))
        .collect();
    let next = matching.next().map(|r| r.id);
    let mut body = json!({ "results": results });
    if let Some(next) = next {
        body["paging"] = json!({"next": {
            "after": next.to_string(),
            "link": format!("/crm/v3/objects/contacts?limit={limit}&after={next}"),
        }});
    }
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct PropertiesBody {
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// `POST /crm/v3/objects/contacts`
pub(crate) async fn create_contact(State(sim): State<HubSpotSim>, body: Bytes) -> ApiResult {
    let body: PropertiesBody = parse_json(&body)?;
    missing_fields(&[("properties", body.properties.is_some())])?;
    let props = props_from_json(body.properties.as_ref().expect("checked"))?;
    let portal = sim.config().portal_id;
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let rendered = {
        let mut store = sim.store();
        let id = store
            .create(&props, &actor, &mut changes)
            .map_err(|e| e.to_api(portal))?;
        let written: BTreeSet<String> = store.contacts[&id]
            .props
            .keys()
            .cloned()
            .chain(props.keys().cloned())
            .collect();
        store.render(&store.contacts[&id], Selection::Written(&written), &[])
    };
    sim.count_write(1);
    sim.emit(&actor, changes);
    Ok(json_response(StatusCode::CREATED, rendered))
}

fn lookup(
    store: &Store,
    id: &str,
    id_property: Option<&str>,
    archived: bool,
    portal: u64,
) -> Result<u64, ApiError> {
    let kind = store.id_kind(id_property).map_err(|e| e.to_api(portal))?;
    store
        .find(id, kind, archived)
        .ok_or_else(ApiError::object_not_found)
}

/// `GET /crm/v3/objects/contacts/{id}`
pub(crate) async fn get_contact(
    State(sim): State<HubSpotSim>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = QueryParams::parse(q.as_deref());
    let archived = q.bool("archived")?;
    let props = q.list("properties");
    let history = q.list("propertiesWithHistory").unwrap_or_default();
    let portal = sim.config().portal_id;
    let store = sim.store();
    let rid = lookup(&store, &id, q.get("idProperty"), archived, portal)?;
    let body = store.render(&store.contacts[&rid], selection(&props), &history);
    Ok(json_response(StatusCode::OK, body))
}

/// `PATCH /crm/v3/objects/contacts/{id}`
pub(crate) async fn update_contact(
    State(sim): State<HubSpotSim>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let q = QueryParams::parse(q.as_deref());
    let body: PropertiesBody = parse_json(&body)?;
    missing_fields(&[("properties", body.properties.is_some())])?;
    let props = props_from_json(body.properties.as_ref().expect("checked"))?;
    let portal = sim.config().portal_id;
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let rendered = {
        let mut store = sim.store();
        let rid = lookup(&store, &id, q.get("idProperty"), false, portal)?;
        store
            .update(rid, &props, &actor, &mut changes)
            .map_err(|e| e.to_api(portal))?;
        let written: BTreeSet<String> = props.keys().cloned().collect();
        store.render(&store.contacts[&rid], Selection::Written(&written), &[])
    };
    sim.count_write(1);
    sim.emit(&actor, changes);
    Ok(json_response(StatusCode::OK, rendered))
}

/// `DELETE /crm/v3/objects/contacts/{id}`: archives; unknown ids are a no-op 204.
pub(crate) async fn archive_contact(
    State(sim): State<HubSpotSim>,
    Path(id): Path<String>,
) -> ApiResult {
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let archived = match id.trim().parse::<u64>() {
        Ok(rid) => sim.store().archive(rid, &mut changes),
        Err(_) => false,
    };
    sim.count_write(usize::from(archived));
    sim.emit(&actor, changes);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /crm/v3/objects/contacts/gdpr-delete` `{"objectId": "…"}` (or `{"objectId": email,
/// "idProperty": "email"}`): deletes the contact for good; 204, also for an unknown one.
pub(crate) async fn gdpr_delete(State(sim): State<HubSpotSim>, body: Bytes) -> ApiResult {
    let v: Value = parse_json(&body)?;
    let Some(object_id) = v.get("objectId").and_then(Value::as_str) else {
        return Err(ApiError::validation(
            "Some required fields were not set: [objectId]",
        ));
    };
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let erased = {
        let mut store = sim.store();
        let id = match v.get("idProperty").and_then(Value::as_str) {
            Some("email") => store.id_of_email(object_id),
            _ => object_id.trim().parse::<u64>().ok(),
        };
        id.is_some_and(|id| store.erase(id, &mut changes))
    };
    sim.count_write(usize::from(erased));
    sim.emit(&actor, changes);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- batch ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadBody {
    #[serde(default)]
    properties: Option<Vec<String>>,
    #[serde(default)]
    properties_with_history: Option<Vec<String>>,
    #[serde(default)]
    id_property: Option<String>,
    #[serde(default)]
    inputs: Option<Vec<IdInput>>,
}

#[derive(Deserialize)]
struct IdInput {
    id: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteInput {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    id_property: Option<String>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
    #[serde(default)]
    object_write_trace_id: Option<String>,
}

#[derive(Deserialize)]
struct Inputs<T> {
    #[serde(default = "none")]
    inputs: Option<Vec<T>>,
}

fn none<T>() -> Option<T> {
    None
}

fn inputs_of<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, ApiError> {
    let parsed: Inputs<T> = parse_json(body)?;
    missing_fields(&[("inputs", parsed.inputs.is_some())])?;
    let inputs = parsed.inputs.expect("checked");
    check_batch_size(inputs.len())?;
    Ok(inputs)
}

/// `POST /crm/v3/objects/contacts/batch/{action}`
pub(crate) async fn batch(
    State(sim): State<HubSpotSim>,
    Path(action): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let q = QueryParams::parse(q.as_deref());
    let resp = match action.as_str() {
        "read" => batch_read(&sim, &q, &body)?,
        "create" => batch_create(&sim, &body)?,
        "update" => batch_update(&sim, &body)?,
        "upsert" => batch_upsert(&sim, &body)?,
        "archive" => batch_archive(&sim, &body)?,
        other => {
            return Err(ApiError::not_found(format!(
                "Unknown batch operation \"{other}\""
            )));
        }
    };
    sim.count_batch();
    Ok(resp)
}

fn batch_read(sim: &HubSpotSim, q: &QueryParams, body: &[u8]) -> ApiResult {
    let started = sim.now();
    let body: ReadBody = parse_json(body)?;
    missing_fields(&[
        ("properties", body.properties.is_some()),
        (
            "propertiesWithHistory",
            body.properties_with_history.is_some(),
        ),
        ("inputs", body.inputs.is_some()),
    ])?;
    let inputs = body.inputs.unwrap_or_default();
    check_batch_size(inputs.len())?;
    let ids: Vec<String> = inputs
        .iter()
        .map(|i| id_string(&i.id))
        .collect::<Result<_, _>>()?;
    let archived = q.bool("archived")?;
    let portal = sim.config().portal_id;
    let history = body.properties_with_history.unwrap_or_default();
    let store = sim.store();
    let kind = store
        .id_kind(body.id_property.as_deref())
        .map_err(|e| e.to_api(portal))?;
    let mut seen = BTreeSet::new();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for id in &ids {
        match store.find(id, kind, archived) {
            Some(rid) => {
                if seen.insert(rid) {
                    results.push(store.render(
                        &store.contacts[&rid],
                        selection(&body.properties),
                        &history,
                    ));
                }
            }
            None => missing.push(id.clone()),
        }
    }
    let mut errors = Vec::new();
    if !missing.is_empty() {
        errors.push(json!({
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
            "context": {"ids": missing},
            "errors": [],
            "links": {},
        }));
    }
    Ok(batch_response(StatusCode::OK, results, errors, started))
}

fn write_props(input: &WriteInput) -> Result<BTreeMap<String, String>, ApiError> {
    match &input.properties {
        Some(p) => props_from_json(p),
        None => Err(ApiError::invalid_json(
            "Some required fields were not set: [properties]",
        )),
    }
}

fn batch_create(sim: &HubSpotSim, body: &[u8]) -> ApiResult {
    let started = sim.now();
    let inputs: Vec<WriteInput> = inputs_of(body)?;
    let raws: Vec<BTreeMap<String, String>> =
        inputs.iter().map(write_props).collect::<Result<_, _>>()?;
    // With objectWriteTraceIds HubSpot reports per-input failures (207); without them the
    // whole batch fails on the first bad input.
    let partial = inputs.iter().any(|i| i.object_write_trace_id.is_some());
    let portal = sim.config().portal_id;
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    {
        let mut store = sim.store();
        let mut render = |store: &Store, id: u64, raw: &BTreeMap<String, String>, trace| {
            let written: BTreeSet<String> = raw.keys().cloned().collect();
            let mut v = store.render(&store.contacts[&id], Selection::Written(&written), &[]);
            if let Some(t) = trace {
                v["objectWriteTraceId"] = json!(t);
            }
            results.push(v);
        };
        if partial {
            for (input, raw) in inputs.iter().zip(&raws) {
                match store.create(raw, &actor, &mut changes) {
                    Ok(id) => render(&store, id, raw, input.object_write_trace_id.clone()),
                    Err(e) => {
                        let ctx = match &input.object_write_trace_id {
                            Some(t) => json!({"objectWriteTraceId": [t]}),
                            None => json!({}),
                        };
                        errors.push(e.standard_error(portal, ctx));
                    }
                }
            }
        } else {
            let checked = store
                .precheck_creates(&raws)
                .map_err(|e| e.to_api(portal))?;
            for (props, raw) in checked.into_iter().zip(&raws) {
                let id = store.insert(props, &actor, &mut changes);
                render(&store, id, raw, None);
            }
        }
    }
    sim.count_write(results.len());
    sim.emit(&actor, changes);
    Ok(batch_response(
        StatusCode::CREATED,
        results,
        errors,
        started,
    ))
}

struct Keyed {
    id: String,
    id_property: Option<String>,
    props: BTreeMap<String, String>,
}

fn keyed_inputs(inputs: &[WriteInput]) -> Result<Vec<Keyed>, ApiError> {
    let keyed: Vec<Keyed> = inputs
        .iter()
        .map(|i| {
            let id = i
                .id
                .as_ref()
                .ok_or_else(|| ApiError::invalid_json("Some required fields were not set: [id]"))
                .and_then(id_string)?;
            Ok(Keyed {
                id,
                id_property: i.id_property.clone().filter(|p| !p.is_empty()),
                props: write_props(i)?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let keys: Vec<String> = keyed
        .iter()
        .map(|k| {
            let id = if k.id_property.as_deref() == Some("email") {
                k.id.trim().to_lowercase()
            } else {
                k.id.clone()
            };
            format!("{}\u{0}{id}", k.id_property.as_deref().unwrap_or(""))
        })
        .collect();
    if let Some(dup) = first_duplicate(keys.iter().map(String::as_str)) {
        let shown = dup.split('\u{0}').nth(1).unwrap_or(dup);
        return Err(ApiError::validation(format!(
            "Duplicate IDs found in batch input: [{shown}]. IDs must be unique"
        )));
    }
    Ok(keyed)
}

fn batch_update(sim: &HubSpotSim, body: &[u8]) -> ApiResult {
    let started = sim.now();
    let inputs: Vec<WriteInput> = inputs_of(body)?;
    let keyed = keyed_inputs(&inputs)?;
    let portal = sim.config().portal_id;
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut missing = Vec::new();
    {
        let mut store = sim.store();
        // Property names and values are validated for the whole batch first.
        let mut normalized = Vec::with_capacity(keyed.len());
        for k in &keyed {
            store
                .id_kind(k.id_property.as_deref())
                .map_err(|e| e.to_api(portal))?;
            normalized.push(store.normalize(&k.props).map_err(|e| e.to_api(portal))?);
        }
        for (k, props) in keyed.iter().zip(&normalized) {
            let kind = store
                .id_kind(k.id_property.as_deref())
                .map_err(|e| e.to_api(portal))?;
            let Some(rid) = store.find(&k.id, kind, false) else {
                missing.push(k.id.clone());
                continue;
            };
            match store.apply_update(rid, props, &actor, &mut changes) {
                Ok(_) => {
                    let written: BTreeSet<String> = k.props.keys().cloned().collect();
                    results.push(store.render(
                        &store.contacts[&rid],
                        Selection::Written(&written),
                        &[],
                    ));
                }
                Err(e) => errors.push(e.standard_error(portal, json!({"ids": [k.id]}))),
            }
        }
    }
    if !missing.is_empty() {
        errors.push(
            WriteError::NotFound {
                id: missing.join(", "),
            }
            .standard_error(portal, json!({ "ids": missing })),
        );
    }
    sim.count_write(results.len());
    sim.emit(&actor, changes);
    Ok(batch_response(StatusCode::OK, results, errors, started))
}

fn batch_upsert(sim: &HubSpotSim, body: &[u8]) -> ApiResult {
    let started = sim.now();
    let inputs: Vec<WriteInput> = inputs_of(body)?;
    let keyed = keyed_inputs(&inputs)?;
    let portal = sim.config().portal_id;
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    {
        let mut store = sim.store();
        let mut prepared = Vec::with_capacity(keyed.len());
        for k in &keyed {
            let Some(id_property) = k.id_property.as_deref() else {
                return Err(ApiError::validation(
                    "idProperty is required for upsert: use email or a property with a unique value",
                ));
            };
            let kind = store
                .id_kind(Some(id_property))
                .map_err(|e| e.to_api(portal))?;
            if kind == IdKind::ObjectId {
                return Err(ApiError::validation(
                    "Upsert by record id is not supported: use email or a property with a unique value as idProperty",
                ));
            }
            // The id value is written to the idProperty, so it must be a valid value for it.
            let mut raw = k.props.clone();
            raw.insert(id_property.to_string(), k.id.clone());
            let props = store.normalize(&raw).map_err(|e| e.to_api(portal))?;
            prepared.push((kind, props));
        }
        for (k, (kind, props)) in keyed.iter().zip(prepared) {
            let (result, is_new) = match store.find(&k.id, kind, false) {
                Some(rid) => (
                    store
                        .apply_update(rid, &props, &actor, &mut changes)
                        .map(|_| rid),
                    false,
                ),
                None => (store.create(&props, &actor, &mut changes), true),
            };
            match result {
                Ok(rid) => {
                    let written: BTreeSet<String> = props.keys().cloned().collect();
                    let mut v =
                        store.render(&store.contacts[&rid], Selection::Written(&written), &[]);
                    v["new"] = json!(is_new);
                    results.push(v);
                }
                Err(e) => errors.push(e.standard_error(portal, json!({"ids": [k.id]}))),
            }
        }
    }
    sim.count_write(results.len());
    sim.emit(&actor, changes);
    Ok(batch_response(StatusCode::OK, results, errors, started))
}

fn batch_archive(sim: &HubSpotSim, body: &[u8]) -> ApiResult {
    let inputs: Vec<IdInput> = inputs_of(body)?;
    let ids: Vec<String> = inputs
        .iter()
        .map(|i| id_string(&i.id))
        .collect::<Result<_, _>>()?;
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let mut archived = 0;
    {
        let mut store = sim.store();
        for id in ids {
            if let Ok(rid) = id.trim().parse::<u64>()
                && store.archive(rid, &mut changes)
            {
                archived += 1;
            }
        }
    }
    sim.count_write(archived);
    sim.emit(&actor, changes);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- search and merge ----------------------------------------------------------------------

/// `POST /crm/v3/objects/contacts/search`
pub(crate) async fn search(State(sim): State<HubSpotSim>, body: Bytes) -> ApiResult {
    sim.count_search();
    if body.len() > MAX_BODY_CHARS {
        return Err(ApiError::validation(format!(
            "The search request body is {} characters long; the maximum is {MAX_BODY_CHARS}.",
            body.len()
        )));
    }
    let req: SearchRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SearchRequest::default()
    } else {
        parse_json(&body)?
    };
    let plan = Plan::from_request(req, sim.config().search_max_results)?;
    let lagging = sim.config().search_index_lag_ms > 0;
    let store = sim.store();
    let (total, page, next) = plan.run(&store, lagging.then(|| store.peek_now()));
    let results: Vec<Value> = page
        .iter()
        .map(|rec| store.render(rec, selection(&plan.properties), &[]))
        .collect();
    let mut body = json!({"total": total, "results": results});
    if let Some(next) = next {
        body["paging"] = json!({"next": {"after": next.to_string()}});
    }
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MergeBody {
    #[serde(default)]
    primary_object_id: Option<Value>,
    #[serde(default)]
    object_id_to_merge: Option<Value>,
}

/// `POST /crm/v3/objects/contacts/merge`
pub(crate) async fn merge(State(sim): State<HubSpotSim>, body: Bytes) -> ApiResult {
    let body: MergeBody = parse_json(&body)?;
    missing_fields(&[
        ("primaryObjectId", body.primary_object_id.is_some()),
        ("objectIdToMerge", body.object_id_to_merge.is_some()),
    ])?;
    let parse = |v: &Option<Value>| -> Result<u64, ApiError> {
        let s = id_string(v.as_ref().expect("checked"))?;
        s.trim()
            .parse::<u64>()
            .map_err(|_| ApiError::validation(format!("Invalid object id \"{s}\"")))
    };
    let (primary, other) = (
        parse(&body.primary_object_id)?,
        parse(&body.object_id_to_merge)?,
    );
    let portal = sim.config().portal_id;
    let actor = sim.api_actor();
    let mut changes = Vec::new();
    let rendered = {
        let mut store = sim.store();
        let new_id = store
            .merge(primary, other, &mut changes)
            .map_err(|e| e.to_api(portal))?;
        store.render(&store.contacts[&new_id], Selection::All, &[])
    };
    sim.count_write(1);
    sim.emit(&actor, changes);
    Ok(json_response(StatusCode::OK, rendered))
}

// ---- properties ----------------------------------------------------------------------------

/// `GET /crm/v3/properties/contacts`
pub(crate) async fn list_properties(State(sim): State<HubSpotSim>) -> ApiResult {
    let store = sim.store();
    let results: Vec<Value> = store.props.values().map(|p| p.to_json()).collect();
    Ok(json_response(StatusCode::OK, json!({ "results": results })))
}

/// `GET /crm/v3/properties/contacts/{name}`
pub(crate) async fn get_property(
    State(sim): State<HubSpotSim>,
    Path(name): Path<String>,
) -> ApiResult {
    let store = sim.store();
    match store.props.get(&name) {
        Some(p) => Ok(json_response(StatusCode::OK, p.to_json())),
        None => Err(ApiError::not_found(format!(
            "Unable to find property with name \"{name}\" for object type contacts"
        ))),
    }
}

/// Validates and stores a new property definition; returns its JSON.
pub(crate) fn insert_property(sim: &HubSpotSim, body: &Value) -> Result<Value, ApiError> {
    let mut store = sim.store();
    let now = store.now();
    let def = property_from_create_body(body, now)?;
    if store.props.contains_key(&def.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "OBJECT_ALREADY_EXISTS",
            format!("Property named '{}' already exists.", def.name),
        )
        .with_field("context", json!({"name": [def.name]})));
    }
    let json = def.to_json();
    store.props.insert(def.name.clone(), def);
    Ok(json)
}

/// `POST /crm/v3/properties/contacts`
pub(crate) async fn create_property(State(sim): State<HubSpotSim>, body: Bytes) -> ApiResult {
    let body: Value = parse_json(&body)?;
    let created = insert_property(&sim, &body)?;
    let name = created["name"].as_str().unwrap_or_default().to_string();
    let mut resp = json_response(StatusCode::CREATED, created);
    if let Ok(v) = HeaderValue::from_str(&format!("/crm/v3/properties/contacts/{name}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

//! Person and person-field data model: request validation (v2 bodies), rendering in the
//! v2 API shape, the v1 shape (merge response, v1 webhooks) and the webhooks-v2 shape.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// Field types accepted by `POST /api/v2/personFields` (spec enum).
pub(crate) const CUSTOM_FIELD_TYPES: &[&str] = &[
    "varchar",
    "text",
    "double",
    "phone",
    "date",
    "daterange",
    "time",
    "timerange",
    "set",
    "enum",
    "varchar_auto",
    "address",
    "monetary",
    "org",
    "people",
    "user",
];

/// Custom field types that `GET /api/v2/persons/search` looks into (spec text).
const SEARCHABLE_CUSTOM_TYPES: &[&str] = &[
    "address",
    "varchar",
    "text",
    "varchar_auto",
    "double",
    "monetary",
    "phone",
];

/// `include_fields` values accepted by the v2 persons list/get endpoints.
pub(crate) const PERSON_INCLUDE_FIELDS: &[&str] = &[
    "next_activity_id",
    "last_activity_id",
    "open_deals_count",
    "related_open_deals_count",
    "closed_deals_count",
    "related_closed_deals_count",
    "participant_open_deals_count",
    "participant_closed_deals_count",
    "email_messages_count",
    "activities_count",
    "done_activities_count",
    "undone_activities_count",
    "files_count",
    "notes_count",
    "followers_count",
    "won_deals_count",
    "related_won_deals_count",
    "lost_deals_count",
    "related_lost_deals_count",
    "last_incoming_mail_time",
    "last_outgoing_mail_time",
    "marketing_status",
    "doi_status",
    "smart_bcc_email",
];

const MARKETING_STATUSES: &[&str] = &["no_consent", "unsubscribed", "subscribed", "archived"];

/// Built-in person labels (`label_ids` must reference one of these).
pub(crate) const PERSON_LABELS: &[(u64, &str)] = &[
    (1, "Customer"),
    (2, "Hot lead"),
    (3, "Warm lead"),
    (4, "Cold lead"),
];

/// Formats a timestamp the way v2 returns it: `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Formats a timestamp the way v1 returns it: `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn ts_v1(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An email, phone or IM entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Channel {
    pub value: String,
    pub primary: bool,
    pub label: String,
}

impl Channel {
    fn to_json(&self) -> Value {
        json!({"value": self.value, "primary": self.primary, "label": self.label})
    }
}

#[derive(Clone, Debug)]
pub(crate) struct FieldOption {
    pub id: u64,
    pub label: String,
    pub add_time: DateTime<Utc>,
}

/// A custom person field created through `POST /api/v2/personFields`.
#[derive(Clone, Debug)]
pub(crate) struct CustomField {
    pub key: String,
    pub name: String,
    pub field_type: String,
    pub options: Vec<FieldOption>,
    pub ui_visibility: Value,
    pub important_fields: Value,
    pub required_fields: Value,
}

impl CustomField {
    fn option_label(&self, id: u64) -> Option<&str> {
        self.options
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.label.as_str())
    }
}

/// A stored person.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Person {
    pub id: u64,
    pub name: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub owner_id: u64,
    pub org_id: Option<u64>,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub emails: Vec<Channel>,
    pub phones: Vec<Channel>,
    pub im: Vec<Channel>,
    pub visible_to: u64,
    pub label_ids: Vec<u64>,
    pub notes: Option<String>,
    pub birthday: Option<String>,
    pub job_title: Option<String>,
    pub postal_address: Option<Value>,
    pub marketing_status: Option<String>,
    /// Custom field values in the v2 API encoding; unset fields are absent.
    pub custom_fields: BTreeMap<String, Value>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub merged_into: Option<u64>,
}

impl Person {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// Whether a body is a create (POST) or an update (PATCH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Create,
    Update,
}

/// A validated person body. `None` = key absent; `Some(None)` = explicit `null` (clear).
#[derive(Clone, Debug, Default)]
pub(crate) struct PersonInput {
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub owner_id: Option<u64>,
    pub org_id: Option<Option<u64>>,
    pub add_time: Option<DateTime<Utc>>,
    pub emails: Option<Vec<Channel>>,
    pub phones: Option<Vec<Channel>>,
    pub im: Option<Vec<Channel>>,
    pub visible_to: Option<u64>,
    pub label_ids: Option<Vec<u64>>,
    pub notes: Option<Option<String>>,
    pub birthday: Option<Option<String>>,
    pub job_title: Option<Option<String>>,
    pub postal_address: Option<Option<Value>>,
    pub marketing_status: Option<String>,
    pub custom_fields: Vec<(String, Option<Value>)>,
}

fn invalid(path: &str, msg: &str) -> String {
    format!("Validation failed: {path}: {msg}")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expect_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| invalid(path, &format!("expected string, got {}", type_name(v))))
}

/// Integers only: strings are not coerced (v2 rule), floats and negatives are rejected.
fn expect_id(v: &Value, path: &str) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(
            path,
            &format!("expected positive integer, got {}", type_name(v)),
        )),
    }
}

fn opt_string(v: &Value, path: &str) -> Result<Option<String>, String> {
    if v.is_null() {
        Ok(None)
    } else {
        expect_str(v, path).map(|s| Some(s.to_string()))
    }
}

/// Parses an `emails` / `phones` / `im` array: objects only, `value` required,
/// `label` defaults to `work`, at most one `primary`, first one primary if none is.
fn parse_channels(v: &Value, path: &str) -> Result<Vec<Channel>, String> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    let arr = v
        .as_array()
        .ok_or_else(|| invalid(path, &format!("expected array, got {}", type_name(v))))?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, item) in arr.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let obj = item.as_object().ok_or_else(|| {
            invalid(
                &p,
                "can only be sent as an object, e.g. {\"value\": \"...\", \"label\": \"work\", \"primary\": true}",
            )
        })?;
        for k in obj.keys() {
            if !matches!(k.as_str(), "value" | "primary" | "label") {
                return Err(invalid(&format!("{p}.{k}"), "unknown property"));
            }
        }
        let value = obj
            .get("value")
            .ok_or_else(|| invalid(&format!("{p}.value"), "required"))?;
        let value = expect_str(value, &format!("{p}.value"))?.trim().to_string();
        if value.is_empty() {
            return Err(invalid(&format!("{p}.value"), "must not be empty"));
        }
        let primary = match obj.get("primary") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(
                    &format!("{p}.primary"),
                    &format!("expected boolean, got {}", type_name(other)),
                ));
            }
        };
        let label = match obj.get("label") {
            None | Some(Value::Null) => "work".to_string(),
            Some(l) => expect_str(l, &format!("{p}.label"))?.to_string(),
        };
        out.push(Channel {
            value,
            primary,
            label,
        });
    }
    let primaries = out.iter().filter(|c| c.primary).count();
    if primaries > 1 {
        return Err(invalid(path, "only one value can be marked as primary"));
    }
    if primaries == 0
        && let Some(first) = out.first_mut()
    {
        first.primary = true;
    }
    Ok(out)
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()
}

/// Parses an RFC 3339 body timestamp (`…Z` or `….000Z`).
pub(crate) fn parse_body_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Validates one custom-field value (v2 encoding) and returns the normalised stored form.
pub(crate) fn validate_custom_value(
    field: &CustomField,
    v: &Value,
    path: &str,
) -> Result<Option<Value>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let t = field.field_type.as_str();
    let stored = match t {
        "varchar" | "varchar_auto" | "phone" | "text" => {
            let s = expect_str(v, path)?;
            let max = if t == "text" { 65_535 } else { 255 };
            if s.chars().count() > max {
                return Err(invalid(path, &format!("longer than {max} characters")));
            }
            Value::String(s.to_string())
        }
        "double" => {
            if !v.is_number() {
                return Err(invalid(
                    path,
                    &format!("expected number, got {}", type_name(v)),
                ));
            }
            v.clone()
        }
        "monetary" => {
            let obj = v.as_object().ok_or_else(|| {
                invalid(
                    path,
                    "expected object {\"value\": number, \"currency\": string}",
                )
            })?;
            let value = obj
                .get("value")
                .filter(|x| x.is_number())
                .ok_or_else(|| invalid(&format!("{path}.value"), "expected number"))?;
            let currency = match obj.get("currency") {
                None | Some(Value::Null) => "EUR".to_string(),
                Some(c) => {
                    let c = expect_str(c, &format!("{path}.currency"))?;
                    if c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
                        return Err(invalid(
                            &format!("{path}.currency"),
                            "invalid currency code",
                        ));
                    }
                    c.to_ascii_uppercase()
                }
            };
            json!({"value": value, "currency": currency})
        }
        "enum" => {
            let id = expect_id(v, path)?;
            if field.option_label(id).is_none() {
                return Err(invalid(path, &format!("option {id} does not exist")));
            }
            json!(id)
        }
        "set" => {
            let arr = v
                .as_array()
                .ok_or_else(|| invalid(path, "expected array of option ids"))?;
            if arr.is_empty() {
                return Err(invalid(
                    path,
                    "empty array is not supported, use null to clear the selection",
                ));
            }
            let mut ids = Vec::new();
            for (i, x) in arr.iter().enumerate() {
                let id = expect_id(x, &format!("{path}[{i}]"))?;
                if field.option_label(id).is_none() {
                    return Err(invalid(path, &format!("option {id} does not exist")));
                }
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            json!(ids)
        }
        "org" | "people" | "user" => json!(expect_id(v, path)?),
        "date" => {
            let s = expect_str(v, path)?;
            if parse_date(s).is_none() {
                return Err(invalid(path, "expected date YYYY-MM-DD"));
            }
            Value::String(s.to_string())
        }
        "daterange" => {
            let obj = v
                .as_object()
                .ok_or_else(|| invalid(path, "expected object {\"value\", \"until\"}"))?;
            let from = obj
                .get("value")
                .and_then(Value::as_str)
                .and_then(parse_date);
            let until = obj
                .get("until")
                .and_then(Value::as_str)
                .and_then(parse_date);
            match (from, until) {
                (Some(f), Some(u)) if f <= u => {
                    json!({"value": obj["value"], "until": obj["until"]})
                }
                _ => return Err(invalid(path, "expected dates value <= until (YYYY-MM-DD)")),
            }
        }
        "time" | "timerange" => {
            let (value, until, tz) = match v {
                Value::String(s) if t == "time" => (Some(s.as_str()), None, None),
                Value::Object(o) => (
                    o.get("value").and_then(Value::as_str),
                    o.get("until").and_then(Value::as_str),
                    o.get("timezone_id").cloned(),
                ),
                _ => return Err(invalid(path, "expected time object")),
            };
            let value = value
                .filter(|s| parse_time(s).is_some())
                .ok_or_else(|| invalid(&format!("{path}.value"), "expected HH:MM:SS"))?;
            let tz = tz.filter(|x| !x.is_null());
            if let Some(tz) = &tz
                && !tz.is_u64()
            {
                return Err(invalid(&format!("{path}.timezone_id"), "expected integer"));
            }
            let mut out = json!({"value": value, "timezone_id": tz});
            if t == "timerange" {
                let until = until
                    .filter(|s| parse_time(s).is_some())
                    .ok_or_else(|| invalid(&format!("{path}.until"), "expected HH:MM:SS"))?;
                out["until"] = json!(until);
            }
            out
        }
        "address" => match v {
            Value::String(s) => json!({"value": s}),
            Value::Object(o) => {
                let value = o
                    .get("value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&format!("{path}.value"), "expected string"))?;
                let mut out = Map::new();
                out.insert("value".into(), json!(value));
                for (k, x) in o {
                    if k == "value" {
                        continue;
                    }
                    if !ADDRESS_PARTS.contains(&k.as_str()) {
                        return Err(invalid(&format!("{path}.{k}"), "unknown property"));
                    }
                    out.insert(k.clone(), json!(opt_string(x, &format!("{path}.{k}"))?));
                }
                Value::Object(out)
            }
            _ => return Err(invalid(path, "expected address object")),
        },
        other => return Err(invalid(path, &format!("unsupported field type {other}"))),
    };
    Ok(Some(stored))
}

const ADDRESS_PARTS: &[&str] = &[
    "country",
    "admin_area_level_1",
    "admin_area_level_2",
    "locality",
    "sublocality",
    "route",
    "street_number",
    "subpremise",
    "postal_code",
    "formatted_address",
];

const CONTACT_SYNC_KEYS: &[&str] = &[
    "notes",
    "im",
    "ims",
    "birthday",
    "job_title",
    "postal_address",
];

/// Validates a v2 person body. Unknown properties, wrong types and unknown custom field keys
/// are rejected with a message for the 400 response.
pub(crate) fn parse_person_input(
    body: &Value,
    mode: Mode,
    customs: &[CustomField],
    contact_sync: bool,
) -> Result<PersonInput, String> {
    let obj = body
        .as_object()
        .ok_or_else(|| "Validation failed: request body must be a JSON object".to_string())?;
    let mut input = PersonInput::default();
    for (k, v) in obj {
        let key = k.as_str();
        if CONTACT_SYNC_KEYS.contains(&key) && !contact_sync {
            return Err(invalid(
                key,
                "field does not exist (it is only created when contact sync is set up)",
            ));
        }
        match key {
            "name" => {
                let s = expect_str(v, key)?.trim().to_string();
                if s.is_empty() {
                    return Err(invalid(key, "must not be empty"));
                }
                input.name = Some(s);
            }
            "first_name" | "last_name" => {
                let s = expect_str(v, key)?.trim().to_string();
                if key == "first_name" {
                    input.first_name = Some(s);
                } else {
                    input.last_name = Some(s);
                }
            }
            "owner_id" => input.owner_id = Some(expect_id(v, key)?),
            "org_id" => {
                input.org_id = Some(if v.is_null() {
                    None
                } else {
                    Some(expect_id(v, key)?)
                })
            }
            "add_time" => {
                if mode == Mode::Update {
                    return Err(invalid(key, "cannot be updated"));
                }
                let s = expect_str(v, key)?;
                let t = parse_body_time(s)
                    .ok_or_else(|| invalid(key, "expected RFC 3339 date-time"))?;
                input.add_time = Some(t);
            }
            "emails" => input.emails = Some(parse_channels(v, key)?),
            "phones" => input.phones = Some(parse_channels(v, key)?),
            "im" | "ims" => input.im = Some(parse_channels(v, key)?),
            "visible_to" => {
                let n = v.as_u64().ok_or_else(|| {
                    invalid(key, &format!("expected integer, got {}", type_name(v)))
                })?;
                if ![1, 3, 5, 7].contains(&n) {
                    return Err(invalid(key, "must be one of 1, 3, 5, 7"));
                }
                input.visible_to = Some(n);
            }
            "label_ids" => {
                let arr = v
                    .as_array()
                    .ok_or_else(|| invalid(key, "expected array of integers"))?;
                let mut ids = Vec::new();
                for (i, x) in arr.iter().enumerate() {
                    let id = expect_id(x, &format!("label_ids[{i}]"))?;
                    if !PERSON_LABELS.iter().any(|(l, _)| *l == id) {
                        return Err(invalid(key, &format!("label {id} does not exist")));
                    }
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                input.label_ids = Some(ids);
            }
            "marketing_status" => {
                let s = expect_str(v, key)?;
                if !MARKETING_STATUSES.contains(&s) {
                    return Err(invalid(key, "invalid marketing status"));
                }
                input.marketing_status = Some(s.to_string());
            }
            "notes" => {
                let s = opt_string(v, key)?;
                if s.as_ref().is_some_and(|s| s.chars().count() > 10_000) {
                    return Err(invalid(key, "longer than 10000 characters"));
                }
                input.notes = Some(s);
            }
            "job_title" => input.job_title = Some(opt_string(v, key)?),
            "birthday" => {
                let s = opt_string(v, key)?;
                if let Some(s) = &s
                    && parse_date(s).is_none()
                {
                    return Err(invalid(key, "expected date YYYY-MM-DD"));
                }
                input.birthday = Some(s);
            }
            "postal_address" => {
                let addr = match v {
                    Value::Null => None,
                    Value::Object(o) => {
                        for (ak, av) in o {
                            if ak != "value" && !ADDRESS_PARTS.contains(&ak.as_str()) {
                                return Err(invalid(&format!("{key}.{ak}"), "unknown property"));
                            }
                            opt_string(av, &format!("{key}.{ak}"))?;
                        }
                        Some(v.clone())
                    }
                    _ => return Err(invalid(key, "expected object")),
                };
                input.postal_address = Some(addr);
            }
            "custom_fields" => {
                let cf = v
                    .as_object()
                    .ok_or_else(|| invalid(key, "expected object keyed by field key"))?;
                for (ck, cv) in cf {
                    let field = customs.iter().find(|f| &f.key == ck).ok_or_else(|| {
                        format!("Validation failed: custom_fields: unknown custom field key '{ck}'")
                    })?;
                    let stored = validate_custom_value(field, cv, &format!("custom_fields.{ck}"))?;
                    input.custom_fields.push((ck.clone(), stored));
                }
            }
            other => {
                return Err(format!(
                    "Validation failed: '{other}' is not a valid person property"
                ));
            }
        }
    }
    Ok(input)
}

/// Splits a full name into first name (first word) and last name (the rest).
pub(crate) fn split_name(name: &str) -> (Option<String>, Option<String>) {
    let name = name.trim();
    match name.split_once(char::is_whitespace) {
        Some((first, rest)) => {
            let rest = rest.trim();
            (
                Some(first.to_string()),
                (!rest.is_empty()).then(|| rest.to_string()),
            )
        }
        None if name.is_empty() => (None, None),
        None => (Some(name.to_string()), None),
    }
}

fn join_name(first: &str, last: &str) -> String {
    format!("{} {}", first.trim(), last.trim())
        .trim()
        .to_string()
}

/// Builds a new person from a validated create body.
pub(crate) fn new_person(
    id: u64,
    input: PersonInput,
    default_owner: u64,
    now: DateTime<Utc>,
) -> Result<Person, String> {
    let (name, first_name, last_name) = if let Some(name) = input.name.clone() {
        let (f, l) = split_name(&name);
        (name, f, l)
    } else {
        match (&input.first_name, &input.last_name) {
            (Some(f), Some(l)) if !(f.is_empty() && l.is_empty()) => {
                (join_name(f, l), Some(f.clone()), Some(l.clone()))
            }
            (Some(_), Some(_)) => {
                return Err(
                    "Validation failed: first_name and last_name can not both be empty".into(),
                );
            }
            _ => {
                return Err(
                    "Validation failed: name: required (or both first_name and last_name)".into(),
                );
            }
        }
    };
    let mut p = Person {
        id,
        name,
        first_name,
        last_name,
        owner_id: input.owner_id.unwrap_or(default_owner),
        org_id: None,
        add_time: input.add_time.unwrap_or(now),
        update_time: now,
        emails: Vec::new(),
        phones: Vec::new(),
        im: Vec::new(),
        visible_to: 3,
        label_ids: Vec::new(),
        notes: None,
        birthday: None,
        job_title: None,
        postal_address: None,
        marketing_status: None,
        custom_fields: BTreeMap::new(),
        deleted_at: None,
        merged_into: None,
    };
    apply_common(&mut p, input);
    Ok(p)
}

/// Applies a validated update body. Returns whether anything changed.
pub(crate) fn apply_update(p: &mut Person, input: PersonInput) -> Result<bool, String> {
    let before = p.clone();
    if let Some(name) = input.name.clone() {
        let (f, l) = split_name(&name);
        p.name = name;
        p.first_name = f;
        p.last_name = l;
    } else if input.first_name.is_some() || input.last_name.is_some() {
        let f = input
            .first_name
            .clone()
            .or_else(|| p.first_name.clone())
            .unwrap_or_default();
        let l = input
            .last_name
            .clone()
            .or_else(|| p.last_name.clone())
            .unwrap_or_default();
        if f.is_empty() && l.is_empty() {
            return Err("Validation failed: first_name and last_name can not both be empty".into());
        }
        p.name = join_name(&f, &l);
        p.first_name = Some(f);
        p.last_name = Some(l);
    }
    apply_common(p, input);
    Ok(*p != before)
}

fn apply_common(p: &mut Person, input: PersonInput) {
    if let Some(o) = input.owner_id {
        p.owner_id = o;
    }
    if let Some(o) = input.org_id {
        p.org_id = o;
    }
    if let Some(e) = input.emails {
        p.emails = e;
    }
    if let Some(e) = input.phones {
        p.phones = e;
    }
    if let Some(e) = input.im {
        p.im = e;
    }
    if let Some(v) = input.visible_to {
        p.visible_to = v;
    }
    if let Some(v) = input.label_ids {
        p.label_ids = v;
    }
    if let Some(v) = input.notes {
        p.notes = v;
    }
    if let Some(v) = input.birthday {
        p.birthday = v;
    }
    if let Some(v) = input.job_title {
        p.job_title = v;
    }
    if let Some(v) = input.postal_address {
        p.postal_address = v;
    }
    if let Some(v) = input.marketing_status {
        p.marketing_status = Some(v);
    }
    for (k, v) in input.custom_fields {
        match v {
            Some(v) => {
                p.custom_fields.insert(k, v);
            }
            None => {
                p.custom_fields.remove(&k);
            }
        }
    }
}

/// Merges `merged` into `survivor` the way Pipedrive documents it: the survivor's data wins on
/// conflicts, its empty fields are filled from the merged person, and multi-value
/// emails/phones are combined.
pub(crate) fn merge_into(survivor: &mut Person, merged: &Person) {
    fn union(into: &mut Vec<Channel>, from: &[Channel]) {
        for c in from {
            if !into.iter().any(|x| x.value.eq_ignore_ascii_case(&c.value)) {
                let primary = into.is_empty();
                into.push(Channel {
                    primary,
                    ..c.clone()
                });
            }
        }
    }
    union(&mut survivor.emails, &merged.emails);
    union(&mut survivor.phones, &merged.phones);
    union(&mut survivor.im, &merged.im);
    if survivor.org_id.is_none() {
        survivor.org_id = merged.org_id;
    }
    if survivor.label_ids.is_empty() {
        survivor.label_ids = merged.label_ids.clone();
    }
    if survivor.notes.is_none() {
        survivor.notes = merged.notes.clone();
    }
    if survivor.birthday.is_none() {
        survivor.birthday = merged.birthday.clone();
    }
    if survivor.job_title.is_none() {
        survivor.job_title = merged.job_title.clone();
    }
    if survivor.postal_address.is_none() {
        survivor.postal_address = merged.postal_address.clone();
    }
    if survivor.marketing_status.is_none() {
        survivor.marketing_status = merged.marketing_status.clone();
    }
    for (k, v) in &merged.custom_fields {
        survivor
            .custom_fields
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
}

/// Options for rendering a person in the v2 API shape.
#[derive(Clone, Debug, Default)]
pub(crate) struct RenderOpts {
    pub contact_sync: bool,
    /// `custom_fields` query parameter: only these keys.
    pub custom_keys: Option<Vec<String>>,
    pub include_fields: Vec<String>,
    pub include_option_labels: bool,
    pub include_labels: bool,
}

fn channels(c: &[Channel]) -> Value {
    Value::Array(c.iter().map(Channel::to_json).collect())
}

/// The v2 API person object.
pub(crate) fn render_v2(p: &Person, customs: &[CustomField], opts: &RenderOpts) -> Value {
    let mut cf = Map::new();
    for f in customs {
        if let Some(keys) = &opts.custom_keys
            && !keys.contains(&f.key)
        {
            continue;
        }
        let v = p.custom_fields.get(&f.key).cloned().unwrap_or(Value::Null);
        let v = if opts.include_option_labels {
            match (f.field_type.as_str(), &v) {
                ("enum", Value::Number(n)) => {
                    let id = n.as_u64().unwrap_or_default();
                    json!({"id": id, "label": f.option_label(id)})
                }
                ("set", Value::Array(ids)) => Value::Array(
                    ids.iter()
                        .map(|x| {
                            let id = x.as_u64().unwrap_or_default();
                            json!({"id": id, "label": f.option_label(id)})
                        })
                        .collect(),
                ),
                _ => v,
            }
        } else {
            v
        };
        cf.insert(f.key.clone(), v);
    }
    let mut out = json!({
        "id": p.id,
        "name": p.name,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "owner_id": p.owner_id,
        "org_id": p.org_id,
        "add_time": ts(p.add_time),
        "update_time": ts(p.update_time),
        "emails": channels(&p.emails),
        "phones": channels(&p.phones),
        "is_deleted": p.is_deleted(),
        "visible_to": p.visible_to,
        "label_ids": p.label_ids,
        "picture_id": null,
        "custom_fields": cf,
    });
    if opts.contact_sync {
        out["notes"] = json!(p.notes);
        out["im"] = channels(&p.im);
        out["birthday"] = json!(p.birthday);
        out["job_title"] = json!(p.job_title);
        out["postal_address"] = json!(p.postal_address);
    }
    if opts.include_labels {
        out["labels"] = Value::Array(
            p.label_ids
                .iter()
                .map(|id| {
                    let label = PERSON_LABELS.iter().find(|(l, _)| l == id).map(|(_, n)| *n);
                    json!({"id": id, "label": label})
                })
                .collect(),
        );
    }
    for f in &opts.include_fields {
        let v = match f.as_str() {
            "marketing_status" => json!(p.marketing_status.as_deref().unwrap_or("no_consent")),
            "doi_status"
            | "smart_bcc_email"
            | "last_incoming_mail_time"
            | "last_outgoing_mail_time"
            | "next_activity_id"
            | "last_activity_id" => Value::Null,
            _ => json!(0),
        };
        out[f.as_str()] = v;
    }
    out
}

/// A custom field value in the webhooks-v2 typed-object encoding.
fn webhook_custom_value(f: &CustomField, v: Option<&Value>) -> Value {
    let Some(v) = v else {
        return Value::Null;
    };
    let t = f.field_type.as_str();
    match t {
        "varchar" | "varchar_auto" | "text" | "phone" | "date" | "double" => {
            json!({"type": t, "value": v})
        }
        "monetary" => json!({"currency": v["currency"], "type": t, "value": v["value"]}),
        "people" | "org" | "user" | "enum" => json!({"id": v, "type": t}),
        "set" => {
            let values: Vec<Value> = v
                .as_array()
                .map(|a| a.iter().map(|id| json!({"id": id})).collect())
                .unwrap_or_default();
            json!({"values": values, "type": t})
        }
        "time" => json!({"timezone_id": v["timezone_id"], "type": t, "value": v["value"]}),
        "daterange" => json!({"from": v["value"], "until": v["until"], "type": t}),
        "timerange" => json!({
            "timezone_id": v["timezone_id"], "from": v["value"], "until": v["until"], "type": t
        }),
        "address" => {
            let mut out = v.as_object().cloned().unwrap_or_default();
            out.insert("type".into(), json!(t));
            Value::Object(out)
        }
        _ => json!({"type": t, "value": v}),
    }
}

/// The person object as webhooks v2 carry it in `data` / `previous`.
pub(crate) fn render_webhook_v2(p: &Person, customs: &[CustomField]) -> Value {
    let mut cf = Map::new();
    for f in customs {
        cf.insert(
            f.key.clone(),
            webhook_custom_value(f, p.custom_fields.get(&f.key)),
        );
    }
    json!({
        "id": p.id,
        "name": p.name,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "org_id": p.org_id,
        "owner_id": p.owner_id,
        "label": p.label_ids.first(),
        "label_ids": p.label_ids,
        "visible_to": p.visible_to.to_string(),
        "add_time": ts(p.add_time),
        "update_time": ts(p.update_time),
        "emails": channels(&p.emails),
        "phones": channels(&p.phones),
        "custom_fields": cf,
    })
}

/// `previous` of a webhooks-v2 `change`: the old values of the fields that changed
/// (custom fields: only the changed keys). `update_time` is not reported as a change.
pub(crate) fn diff_previous(old: &Value, new: &Value) -> Value {
    let mut prev = Map::new();
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Value::Object(prev);
    };
    for (k, ov) in old {
        if k == "update_time" || k == "id" {
            continue;
        }
        let nv = new.get(k).unwrap_or(&Value::Null);
        if k == "custom_fields" {
            let mut cf = Map::new();
            if let (Some(oc), Some(nc)) = (ov.as_object(), nv.as_object()) {
                for (ck, cov) in oc {
                    if nc.get(ck).unwrap_or(&Value::Null) != cov {
                        cf.insert(ck.clone(), cov.clone());
                    }
                }
            }
            if !cf.is_empty() {
                prev.insert(k.clone(), Value::Object(cf));
            }
        } else if ov != nv {
            prev.insert(k.clone(), ov.clone());
        }
    }
    Value::Object(prev)
}

/// The v1 person object (merge response, v1 webhooks): singular `email`/`phone`,
/// `YYYY-MM-DD HH:MM:SS` times, string `visible_to`, custom fields as top-level keys.
pub(crate) fn render_v1(p: &Person, customs: &[CustomField], company_id: u64) -> Value {
    let mut out = json!({
        "id": p.id,
        "company_id": company_id,
        "owner_id": p.owner_id,
        "org_id": p.org_id,
        "name": p.name,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "active_flag": !p.is_deleted(),
        "phone": channels(&p.phones),
        "email": channels(&p.emails),
        "primary_email": p.emails.iter().find(|c| c.primary).map(|c| c.value.clone()),
        "first_char": p.name.chars().next().map(|c| c.to_lowercase().to_string()),
        "add_time": ts_v1(p.add_time),
        "update_time": ts_v1(p.update_time),
        "visible_to": p.visible_to.to_string(),
        "picture_id": null,
        "label": p.label_ids.first(),
        "label_ids": p.label_ids,
        "open_deals_count": 0,
        "closed_deals_count": 0,
        "activities_count": 0,
    });
    for f in customs {
        let key = f.key.as_str();
        let v = p.custom_fields.get(key);
        let Some(v) = v else {
            out[key] = Value::Null;
            continue;
        };
        match f.field_type.as_str() {
            "monetary" => {
                out[key] = v["value"].clone();
                out[format!("{key}_currency")] = v["currency"].clone();
            }
            "enum" => out[key] = json!(v.to_string()),
            "set" => {
                let ids: Vec<String> = v
                    .as_array()
                    .map(|a| a.iter().map(|x| x.to_string()).collect())
                    .unwrap_or_default();
                out[key] = json!(ids.join(","));
            }
            "daterange" | "timerange" => {
                out[key] = v["value"].clone();
                out[format!("{key}_until")] = v["until"].clone();
            }
            "time" => {
                out[key] = v["value"].clone();
                out[format!("{key}_timezone_id")] = v["timezone_id"].clone();
            }
            "address" => {
                out[key] = v["value"].clone();
                if let Some(o) = v.as_object() {
                    for (sk, sv) in o {
                        if sk != "value" {
                            out[format!("{key}_{sk}")] = sv.clone();
                        }
                    }
                }
            }
            _ => out[key] = v.clone(),
        }
    }
    out
}

/// Search fields (`fields` query parameter of `GET /api/v2/persons/search`).
pub(crate) const SEARCH_FIELDS: &[&str] = &["custom_fields", "email", "notes", "phone", "name"];

/// The strings of a person that a search on `field` looks at.
pub(crate) fn search_values(p: &Person, customs: &[CustomField], field: &str) -> Vec<String> {
    match field {
        "name" => vec![p.name.clone()],
        "email" => p.emails.iter().map(|c| c.value.clone()).collect(),
        "phone" => p.phones.iter().map(|c| c.value.clone()).collect(),
        "notes" => p.notes.iter().cloned().collect(),
        "custom_fields" => customs
            .iter()
            .filter(|f| SEARCHABLE_CUSTOM_TYPES.contains(&f.field_type.as_str()))
            .filter_map(|f| p.custom_fields.get(&f.key).map(|v| (f, v)))
            .map(|(f, v)| match f.field_type.as_str() {
                "monetary" | "address" => value_to_plain(&v["value"]),
                _ => value_to_plain(v),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn value_to_plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A built-in person field (listed by `GET /api/v2/personFields`).
pub(crate) struct BuiltinField {
    pub code: &'static str,
    pub name: &'static str,
    pub field_type: &'static str,
    pub contact_sync_only: bool,
}

pub(crate) const BUILTIN_FIELDS: &[BuiltinField] = &[
    BuiltinField {
        code: "id",
        name: "ID",
        field_type: "int",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "name",
        name: "Name",
        field_type: "varchar",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "first_name",
        name: "First name",
        field_type: "varchar",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "last_name",
        name: "Last name",
        field_type: "varchar",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "owner_id",
        name: "Owner",
        field_type: "user",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "org_id",
        name: "Organization",
        field_type: "org",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "email",
        name: "Email",
        field_type: "varchar",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "phone",
        name: "Phone",
        field_type: "phone",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "label_ids",
        name: "Labels",
        field_type: "set",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "visible_to",
        name: "Visible to",
        field_type: "visible_to",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "picture_id",
        name: "Profile picture",
        field_type: "picture",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "add_time",
        name: "Person created",
        field_type: "date",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "update_time",
        name: "Update time",
        field_type: "date",
        contact_sync_only: false,
    },
    BuiltinField {
        code: "notes",
        name: "Notes",
        field_type: "text",
        contact_sync_only: true,
    },
    BuiltinField {
        code: "job_title",
        name: "Job title",
        field_type: "varchar",
        contact_sync_only: true,
    },
    BuiltinField {
        code: "birthday",
        name: "Birthday",
        field_type: "date",
        contact_sync_only: true,
    },
    BuiltinField {
        code: "postal_address",
        name: "Postal address",
        field_type: "address",
        contact_sync_only: true,
    },
    BuiltinField {
        code: "im",
        name: "Instant messenger",
        field_type: "varchar",
        contact_sync_only: true,
    },
];

fn field_extras(
    out: &mut Value,
    ui: &Value,
    important: &Value,
    required: &Value,
    include: &[String],
) {
    if include.iter().any(|s| s == "ui_visibility") {
        out["ui_visibility"] = ui.clone();
    }
    if include.iter().any(|s| s == "important_fields") {
        out["important_fields"] = important.clone();
    }
    if include.iter().any(|s| s == "required_fields") {
        out["required_fields"] = required.clone();
    }
}

pub(crate) fn render_builtin_field(f: &BuiltinField, include: &[String]) -> Value {
    let options = if f.code == "label_ids" {
        json!(
            PERSON_LABELS
                .iter()
                .map(|(id, label)| json!({"id": id, "label": label, "color": null}))
                .collect::<Vec<_>>()
        )
    } else {
        Value::Null
    };
    let mut out = json!({
        "field_name": f.name,
        "field_code": f.code,
        "description": null,
        "field_type": f.field_type,
        "options": options,
        "subfields": null,
        "is_custom_field": false,
        "is_optional_response_field": f.contact_sync_only,
    });
    field_extras(
        &mut out,
        &json!({"add_visible_flag": true, "details_visible_flag": true,
                "show_in_add_deal_dialog": {"show": f.code == "name", "order": null}}),
        &json!({"enabled": false, "stage_ids": []}),
        &json!({"enabled": f.code == "name"}),
        include,
    );
    out
}

pub(crate) fn render_custom_field(f: &CustomField, include: &[String]) -> Value {
    let options = if f.options.is_empty() {
        Value::Null
    } else {
        Value::Array(
            f.options
                .iter()
                .map(|o| {
                    json!({"id": o.id, "label": o.label, "color": null,
                           "add_time": ts(o.add_time), "update_time": ts(o.add_time)})
                })
                .collect(),
        )
    };
    let subfields = match f.field_type.as_str() {
        "monetary" => json!([{"field_code": format!("{}_currency", f.key),
                              "field_name": format!("Currency of {}", f.name),
                              "field_type": "varchar"}]),
        "daterange" | "timerange" => json!([{"field_code": format!("{}_until", f.key),
                              "field_name": format!("{} (until)", f.name),
                              "field_type": f.field_type.trim_end_matches("range")}]),
        _ => Value::Null,
    };
    let mut out = json!({
        "field_name": f.name,
        "field_code": f.key,
        "description": null,
        "field_type": f.field_type,
        "options": options,
        "subfields": subfields,
        "is_custom_field": true,
        "is_optional_response_field": false,
    });
    field_extras(
        &mut out,
        &f.ui_visibility,
        &f.important_fields,
        &f.required_fields,
        include,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(key: &str, t: &str) -> CustomField {
        CustomField {
            key: key.into(),
            name: key.into(),
            field_type: t.into(),
            options: vec![
                FieldOption {
                    id: 11,
                    label: "A".into(),
                    add_time: Utc::now(),
                },
                FieldOption {
                    id: 12,
                    label: "B".into(),
                    add_time: Utc::now(),
                },
            ],
            ui_visibility: json!({}),
            important_fields: json!({}),
            required_fields: json!({}),
        }
    }

    fn create(body: Value, customs: &[CustomField]) -> Result<Person, String> {
        let input = parse_person_input(&body, Mode::Create, customs, false)?;
        new_person(1, input, 9001, Utc::now())
    }

    #[test]
    fn name_is_split_into_first_and_last() {
        let p = create(json!({"name": "Ada King Lovelace"}), &[]).unwrap();
        assert_eq!(p.first_name.as_deref(), Some("Ada"));
        assert_eq!(p.last_name.as_deref(), Some("King Lovelace"));
        let p = create(json!({"first_name": "Ada", "last_name": "Lovelace"}), &[]).unwrap();
        assert_eq!(p.name, "Ada Lovelace");
        assert!(create(json!({"first_name": "", "last_name": ""}), &[]).is_err());
        assert!(create(json!({"first_name": "Ada"}), &[]).is_err());
        assert!(create(json!({"emails": []}), &[]).is_err());
        assert!(create(json!({"name": ""}), &[]).is_err());
    }

    #[test]
    fn channels_default_label_and_primary() {
        let p = create(
            json!({"name": "A", "emails": [{"value": "a@x.io"}, {"value": "b@x.io", "label": "home"}]}),
            &[],
        )
        .unwrap();
        assert_eq!(
            p.emails,
            vec![
                Channel {
                    value: "a@x.io".into(),
                    primary: true,
                    label: "work".into()
                },
                Channel {
                    value: "b@x.io".into(),
                    primary: false,
                    label: "home".into()
                },
            ]
        );
        let two_primary = json!({"name": "A", "emails": [
            {"value": "a@x.io", "primary": true}, {"value": "b@x.io", "primary": true}]});
        assert!(create(two_primary, &[]).is_err());
        assert!(create(json!({"name": "A", "emails": ["a@x.io"]}), &[]).is_err());
        assert!(
            create(
                json!({"name": "A", "emails": [{"value": "a@x.io", "primary": 1}]}),
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn types_are_not_coerced_and_unknown_properties_rejected() {
        assert!(create(json!({"name": "A", "owner_id": "5"}), &[]).is_err());
        assert!(create(json!({"name": "A", "visible_to": "3"}), &[]).is_err());
        assert!(create(json!({"name": "A", "visible_to": 2}), &[]).is_err());
        assert!(create(json!({"name": "A", "email": "a@x.io"}), &[]).is_err());
        assert!(create(json!({"name": "A", "job_title": "CTO"}), &[]).is_err());
        assert!(create(json!({"name": "A", "label_ids": [99]}), &[]).is_err());
        let input =
            parse_person_input(&json!({"job_title": "CTO"}), Mode::Update, &[], true).unwrap();
        assert_eq!(input.job_title, Some(Some("CTO".into())));
        assert!(
            parse_person_input(
                &json!({"add_time": "2024-01-01T00:00:00Z"}),
                Mode::Update,
                &[],
                false
            )
            .is_err()
        );
    }

    #[test]
    fn custom_field_values_are_validated_by_type() {
        let key = "a".repeat(40);
        let customs = vec![field(&key, "enum")];
        assert!(
            create(
                json!({"name": "A", "custom_fields": {key.clone(): 11}}),
                &customs
            )
            .is_ok()
        );
        assert!(
            create(
                json!({"name": "A", "custom_fields": {key.clone(): 13}}),
                &customs
            )
            .is_err()
        );
        assert!(
            create(
                json!({"name": "A", "custom_fields": {key.clone(): "11"}}),
                &customs
            )
            .is_err()
        );
        assert!(
            create(
                json!({"name": "A", "custom_fields": {"b".repeat(40): 1}}),
                &customs
            )
            .is_err()
        );
        let set = vec![field(&key, "set")];
        assert!(
            create(
                json!({"name": "A", "custom_fields": {key.clone(): []}}),
                &set
            )
            .is_err()
        );
        let p = create(
            json!({"name": "A", "custom_fields": {key.clone(): [12, 11]}}),
            &set,
        )
        .unwrap();
        assert_eq!(p.custom_fields[&key], json!([12, 11]));
        let money = vec![field(&key, "monetary")];
        assert!(
            create(
                json!({"name": "A", "custom_fields": {key.clone(): 5}}),
                &money
            )
            .is_err()
        );
        let p = create(
            json!({"name": "A", "custom_fields": {key.clone(): {"value": 5, "currency": "usd"}}}),
            &money,
        )
        .unwrap();
        assert_eq!(
            p.custom_fields[&key],
            json!({"value": 5, "currency": "USD"})
        );
        let date = vec![field(&key, "date")];
        assert!(
            create(
                json!({"name": "A", "custom_fields": {key.clone(): "2024-13-01"}}),
                &date
            )
            .is_err()
        );
    }

    #[test]
    fn webhook_encoding_and_previous_diff() {
        let k1 = "1".repeat(40);
        let k2 = "2".repeat(40);
        let customs = vec![field(&k1, "varchar"), field(&k2, "enum")];
        let mut p = create(
            json!({"name": "Ada Lovelace", "emails": [{"value": "old@x.io"}],
                   "custom_fields": {k1.clone(): "x", k2.clone(): 11}}),
            &customs,
        )
        .unwrap();
        let before = render_webhook_v2(&p, &customs);
        assert_eq!(
            before["custom_fields"][&k1],
            json!({"type": "varchar", "value": "x"})
        );
        assert_eq!(
            before["custom_fields"][&k2],
            json!({"id": 11, "type": "enum"})
        );
        assert_eq!(before["visible_to"], json!("3"));
        let input = parse_person_input(
            &json!({"emails": [{"value": "new@x.io"}], "custom_fields": {k2.clone(): null}}),
            Mode::Update,
            &customs,
            false,
        )
        .unwrap();
        assert!(apply_update(&mut p, input).unwrap());
        let after = render_webhook_v2(&p, &customs);
        assert_eq!(after["custom_fields"][&k2], Value::Null);
        let prev = diff_previous(&before, &after);
        assert_eq!(
            prev,
            json!({"emails": [{"value": "old@x.io", "primary": true, "label": "work"}],
                   "custom_fields": {k2.clone(): {"id": 11, "type": "enum"}}})
        );
    }

    #[test]
    fn merge_keeps_survivor_and_fills_gaps() {
        let k = "c".repeat(40);
        let customs = vec![field(&k, "varchar")];
        let mut s = create(
            json!({"name": "Keep", "emails": [{"value": "k@x.io"}]}),
            &customs,
        )
        .unwrap();
        let m = create(
            json!({"name": "Gone", "org_id": 4, "emails": [{"value": "K@x.io"}, {"value": "g@x.io"}],
                   "custom_fields": {k.clone(): "v"}}),
            &customs,
        )
        .unwrap();
        merge_into(&mut s, &m);
        assert_eq!(s.name, "Keep");
        assert_eq!(s.org_id, Some(4));
        let emails: Vec<_> = s
            .emails
            .iter()
            .map(|c| (c.value.as_str(), c.primary))
            .collect();
        assert_eq!(emails, vec![("k@x.io", true), ("g@x.io", false)]);
        assert_eq!(s.custom_fields[&k], json!("v"));
    }

    #[test]
    fn v1_rendering_flattens_custom_fields() {
        let k = "d".repeat(40);
        let customs = vec![field(&k, "monetary")];
        let p = create(
            json!({"name": "A", "custom_fields": {k.clone(): {"value": 7, "currency": "EUR"}}}),
            &customs,
        )
        .unwrap();
        let v1 = render_v1(&p, &customs, 7001);
        assert_eq!(v1[&k], json!(7));
        assert_eq!(v1[format!("{k}_currency")], json!("EUR"));
        assert_eq!(v1["visible_to"], json!("3"));
        assert!(v1["add_time"].as_str().unwrap().contains(' '));
    }
}

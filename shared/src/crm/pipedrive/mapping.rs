//! The one Pipedrive mapping: universal contact ⇄ Pipedrive v2 person, both directions.
//!
//! - `email` / `phone` are the person's **primary** entry of `emails` / `phones` (arrays of
//!   `{value, primary, label}`). A PATCH replaces a whole array, so an update rewrites only the
//!   primary entry and sends the other entries back unchanged.
//! - Names go as `first_name` + `last_name` (Pipedrive builds `name` from them). Pipedrive needs a
//!   name; a contact without one is created with its email as `name`, and such a placeholder is
//!   read back as "no name".
//! - `pronouns` is a custom field (40-character key); `job_title` is the standard `job_title`
//!   field when the account has it (contact sync set up) or else a custom field. Custom values
//!   live in `custom_fields`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

use crate::domain::{ContactFields, Field, FieldPatch};

/// Key of Pipedrive's standard job title field (only present in accounts with contact sync).
pub const STANDARD_JOB_TITLE: &str = "job_title";
/// Label Pipedrive gives an entry when none is sent.
const DEFAULT_LABEL: &str = "work";
/// Name of a person whose contact has no name and no email.
const NO_NAME: &str = "(no name)";

/// Where our two non-standard fields live for one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots<'a> {
    /// Key of the pronouns custom field; `None` = not set up (pronouns are not synced).
    pub pronouns: Option<&'a str>,
    /// `job_title` (standard field) or the key of the job title custom field.
    pub job_title: Option<&'a str>,
}

impl Slots<'_> {
    fn job_title_custom(&self) -> Option<&str> {
        self.job_title.filter(|k| *k != STANDARD_JOB_TITLE)
    }
}

/// One entry of `emails` / `phones`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub value: String,
    pub primary: bool,
    pub label: String,
}

impl Channel {
    fn to_json(&self) -> Value {
        json!({"value": self.value, "primary": self.primary, "label": self.label})
    }
}

/// A v2 person as far as we read it (lenient: unknown or odd-typed values are skipped).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Person {
    pub id: u64,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub emails: Vec<Channel>,
    pub phones: Vec<Channel>,
    /// The standard field (absent without contact sync).
    pub job_title: Option<String>,
    pub custom_fields: Map<String, Value>,
    pub update_time: Option<DateTime<Utc>>,
    pub is_deleted: bool,
}

fn opt_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// An id Pipedrive may send as a number or a numeric string.
pub fn parse_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// RFC 3339 (`2025-01-01T10:20:00Z`, fractions allowed) or v1's `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn channels(v: Option<&Value>) -> Vec<Channel> {
    let Some(items) = v.and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out: Vec<Channel> = items
        .iter()
        .filter_map(|item| match item {
            // Search results and some older payloads carry plain strings.
            Value::String(s) => Some(Channel {
                value: s.clone(),
                primary: false,
                label: DEFAULT_LABEL.into(),
            }),
            Value::Object(o) => {
                let value = o.get("value")?.as_str()?.trim().to_string();
                (!value.is_empty()).then(|| Channel {
                    value,
                    primary: o.get("primary").and_then(Value::as_bool).unwrap_or(false),
                    label: opt_str(o.get("label")).unwrap_or_else(|| DEFAULT_LABEL.into()),
                })
            }
            _ => None,
        })
        .collect();
    if !out.iter().any(|c| c.primary)
        && let Some(first) = out.first_mut()
    {
        first.primary = true;
    }
    out
}

impl Person {
    /// Reads a v2 API person object; `None` when it has no usable id.
    pub fn from_json(v: &Value) -> Option<Person> {
        let id = parse_id(v.get("id")?)?;
        Some(Person {
            id,
            name: opt_str(v.get("name")),
            first_name: opt_str(v.get("first_name")),
            last_name: opt_str(v.get("last_name")),
            emails: channels(v.get("emails").or_else(|| v.get("email"))),
            phones: channels(v.get("phones").or_else(|| v.get("phone"))),
            job_title: opt_str(v.get("job_title")),
            custom_fields: v
                .get("custom_fields")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            update_time: v.get("update_time").and_then(parse_time),
            is_deleted: v.get("is_deleted").and_then(Value::as_bool) == Some(true),
        })
    }

    fn primary(list: &[Channel]) -> Option<&Channel> {
        list.iter().find(|c| c.primary).or_else(|| list.first())
    }

    pub fn primary_email(&self) -> Option<&str> {
        Self::primary(&self.emails).map(|c| c.value.as_str())
    }

    pub fn primary_phone(&self) -> Option<&str> {
        Self::primary(&self.phones).map(|c| c.value.as_str())
    }

    /// Whether any entry of `emails` is `email` (case-insensitive).
    pub fn has_email(&self, email: &str) -> bool {
        self.emails
            .iter()
            .any(|c| c.value.trim().eq_ignore_ascii_case(email.trim()))
    }

    /// Whether the primary entry of `emails` is `email` (case-insensitive).
    pub fn has_primary_email(&self, email: &str) -> bool {
        self.emails
            .iter()
            .any(|c| c.primary && c.value.trim().eq_ignore_ascii_case(email.trim()))
    }

    /// First and last name, with our placeholder (the email as the whole name) read as none.
    fn names(&self) -> (Option<String>, Option<String>) {
        let first = self.first_name.clone().filter(|s| !s.trim().is_empty());
        let last = self.last_name.clone().filter(|s| !s.trim().is_empty());
        let placeholder = last.is_none()
            && first.as_deref().is_some_and(|f| {
                f.trim() == NO_NAME
                    || self
                        .emails
                        .iter()
                        .any(|e| e.value.eq_ignore_ascii_case(f.trim()))
            });
        if placeholder {
            (None, None)
        } else {
            (first, last)
        }
    }
}

/// A custom field value as a string: plain values, or the typed objects of webhooks v2.
fn custom_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => custom_text(o.get("value")),
        _ => None,
    }
}

/// The field a person field key holds, as a changelog names it: a standard key (`email`,
/// `phone`, `first_name`, `last_name`, the standard `job_title` where it is ours), or the
/// key of one of our custom fields (`slots`).
pub fn field_of_key(key: &str, slots: Slots<'_>) -> Option<Field> {
    match key {
        "email" => Some(Field::Email),
        "phone" => Some(Field::Phone),
        "first_name" => Some(Field::FirstName),
        "last_name" => Some(Field::LastName),
        k if slots.job_title == Some(k) => Some(Field::JobTitle),
        k if slots.pronouns == Some(k) => Some(Field::Pronouns),
        _ => None,
    }
}

/// Pipedrive person → universal fields.
pub fn to_fields(p: &Person, slots: Slots<'_>) -> ContactFields {
    let mut f = ContactFields::default();
    let (first, last) = p.names();
    f.set(Field::Email, p.primary_email().map(str::to_owned));
    f.set(Field::FirstName, first);
    f.set(Field::LastName, last);
    f.set(Field::Phone, p.primary_phone().map(str::to_owned));
    let job_title = match slots.job_title {
        Some(STANDARD_JOB_TITLE) => p.job_title.clone(),
        Some(key) => custom_text(p.custom_fields.get(key)),
        None => None,
    };
    f.set(Field::JobTitle, job_title);
    if let Some(key) = slots.pronouns {
        f.set(Field::Pronouns, custom_text(p.custom_fields.get(key)));
    }
    f
}

fn name_fields(
    first: Option<&str>,
    last: Option<&str>,
    email: Option<&str>,
    body: &mut Map<String, Value>,
) {
    if first.is_none() && last.is_none() {
        // Pipedrive requires a name: the email stands in (read back as "no name").
        body.insert("name".into(), json!(email.unwrap_or(NO_NAME)));
    } else {
        body.insert("first_name".into(), json!(first.unwrap_or("")));
        body.insert("last_name".into(), json!(last.unwrap_or("")));
    }
}

/// Universal fields → `POST /api/v2/persons` body (only values that are set).
pub fn create_body(f: &ContactFields, slots: Slots<'_>) -> Value {
    let mut body = Map::new();
    name_fields(
        f.first_name.as_deref(),
        f.last_name.as_deref(),
        f.email.as_deref(),
        &mut body,
    );
    if let Some(e) = &f.email {
        body.insert(
            "emails".into(),
            json!([{"value": e, "primary": true, "label": DEFAULT_LABEL}]),
        );
    }
    if let Some(p) = &f.phone {
        body.insert(
            "phones".into(),
            json!([{"value": p, "primary": true, "label": DEFAULT_LABEL}]),
        );
    }
    let mut custom = Map::new();
    if let Some(jt) = &f.job_title {
        match slots.job_title_custom() {
            Some(key) => {
                custom.insert(key.to_string(), json!(jt));
            }
            None if slots.job_title.is_some() => {
                body.insert(STANDARD_JOB_TITLE.into(), json!(jt));
            }
            None => {}
        }
    }
    if let (Some(key), Some(pr)) = (slots.pronouns, &f.pronouns) {
        custom.insert(key.to_string(), json!(pr));
    }
    if !custom.is_empty() {
        body.insert("custom_fields".into(), Value::Object(custom));
    }
    Value::Object(body)
}

/// Whether writing `patch` needs the person's current state (the other name part, the other
/// emails/phones that a PATCH would otherwise drop).
pub fn needs_current(patch: &FieldPatch) -> bool {
    patch.fields().any(|f| {
        matches!(
            f,
            Field::FirstName | Field::LastName | Field::Email | Field::Phone
        )
    })
}

/// Sets the primary entry to `value`: an existing entry with that value becomes primary,
/// otherwise the primary entry's value is replaced (its label kept). `None` removes the
/// primary entry; the next one becomes primary.
pub fn with_primary(list: &[Channel], value: Option<&str>) -> Vec<Channel> {
    let mut out = list.to_vec();
    let primary_idx = out
        .iter()
        .position(|c| c.primary)
        .or((!out.is_empty()).then_some(0));
    match value {
        None => {
            if let Some(i) = primary_idx {
                out.remove(i);
            }
        }
        Some(v) => {
            let v = v.trim();
            if let Some(i) = out
                .iter()
                .position(|c| c.value.trim().eq_ignore_ascii_case(v))
            {
                out[i].value = v.to_string();
                let keep = out.remove(i);
                out.insert(0, keep);
            } else if let Some(i) = primary_idx {
                let mut entry = out.remove(i);
                entry.value = v.to_string();
                out.insert(0, entry);
            } else {
                out.insert(
                    0,
                    Channel {
                        value: v.to_string(),
                        primary: true,
                        label: DEFAULT_LABEL.into(),
                    },
                );
            }
        }
    }
    for (i, c) in out.iter_mut().enumerate() {
        c.primary = i == 0;
    }
    out
}

/// A patch → `PATCH /api/v2/persons/{id}` body. `current` is required when
/// [`needs_current`] says so. A cleared custom value is `null`; a cleared standard job title
/// is `""` (the spec types it as a non-nullable string).
pub fn patch_body(patch: &FieldPatch, current: Option<&Person>, slots: Slots<'_>) -> Value {
    let mut body = Map::new();
    let value = |f: Field| patch.0.get(&f).map(|v| v.as_deref());
    if value(Field::FirstName).is_some() || value(Field::LastName).is_some() {
        let (cur_first, cur_last) = current.map(Person::names).unwrap_or_default();
        let first = value(Field::FirstName).unwrap_or(cur_first.as_deref());
        let last = value(Field::LastName).unwrap_or(cur_last.as_deref());
        let email = value(Field::Email)
            .flatten()
            .or_else(|| current.and_then(Person::primary_email));
        name_fields(first, last, email, &mut body);
    }
    let current_list = |pick: fn(&Person) -> &Vec<Channel>| -> Vec<Channel> {
        current.map(|p| pick(p).clone()).unwrap_or_default()
    };
    if let Some(v) = value(Field::Email) {
        let list = with_primary(&current_list(|p| &p.emails), v);
        body.insert(
            "emails".into(),
            Value::Array(list.iter().map(Channel::to_json).collect()),
        );
    }
    if let Some(v) = value(Field::Phone) {
        let list = with_primary(&current_list(|p| &p.phones), v);
        body.insert(
            "phones".into(),
            Value::Array(list.iter().map(Channel::to_json).collect()),
        );
    }
    let mut custom = Map::new();
    if let Some(v) = value(Field::JobTitle) {
        match slots.job_title_custom() {
            Some(key) => {
                custom.insert(key.to_string(), json!(v));
            }
            None if slots.job_title.is_some() => {
                body.insert(STANDARD_JOB_TITLE.into(), json!(v.unwrap_or("")));
            }
            None => {}
        }
    }
    if let (Some(key), Some(v)) = (slots.pronouns, value(Field::Pronouns)) {
        custom.insert(key.to_string(), json!(v));
    }
    if !custom.is_empty() {
        body.insert("custom_fields".into(), Value::Object(custom));
    }
    Value::Object(body)
}

/// The fields of `wanted` (set values only) that differ from `current`: what a backfill upsert
/// has to write to an existing person.
pub fn diff_patch(current: &ContactFields, wanted: &ContactFields, slots: Slots<'_>) -> FieldPatch {
    let mut patch = FieldPatch::default();
    for f in Field::ALL {
        if f == Field::Pronouns && slots.pronouns.is_none() {
            continue;
        }
        if let Some(v) = wanted.get(f)
            && current.get(f) != Some(v)
        {
            patch.insert(f, Some(v.to_string()));
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRONOUNS: &str = "d4de1c1518b4531717c676029a45911c340390a6";
    const JOB: &str = "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd";

    fn slots() -> Slots<'static> {
        Slots {
            pronouns: Some(PRONOUNS),
            job_title: Some(JOB),
        }
    }

    fn person(v: Value) -> Person {
        Person::from_json(&v).unwrap()
    }

    #[test]
    fn round_trip_both_directions() {
        let fields = ContactFields {
            email: Some("ada@example.com".into()),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            phone: Some("+44 20 7946 0000".into()),
            job_title: Some("Analyst".into()),
            pronouns: Some("she/her".into()),
        };
        let body = create_body(&fields, slots());
        assert_eq!(body["first_name"], "Ada");
        assert_eq!(body["emails"][0]["primary"], true);
        assert_eq!(body["custom_fields"][PRONOUNS], "she/her");
        assert_eq!(body["custom_fields"][JOB], "Analyst");
        assert!(body.get("name").is_none());
        assert!(body.get("job_title").is_none());
        // What Pipedrive answers for that body.
        let mut answered = body.clone();
        answered["id"] = json!(8);
        answered["name"] = json!("Ada Lovelace");
        assert_eq!(to_fields(&person(answered), slots()), fields);
        // Standard job title (contact sync accounts) and no pronouns field.
        let std = Slots {
            pronouns: None,
            job_title: Some(STANDARD_JOB_TITLE),
        };
        let body = create_body(&fields, std);
        assert_eq!(body["job_title"], "Analyst");
        assert!(body.get("custom_fields").is_none());
    }

    #[test]
    fn nameless_contacts_use_the_email_as_name_and_read_back_without_name() {
        let fields = ContactFields {
            email: Some("x@example.com".into()),
            ..Default::default()
        };
        let body = create_body(&fields, slots());
        assert_eq!(body["name"], "x@example.com");
        let p = person(
            json!({"id": 1, "name": "x@example.com", "first_name": "x@example.com",
            "last_name": null, "emails": [{"value": "X@example.com", "primary": true}]}),
        );
        let read = to_fields(&p, slots());
        assert_eq!(read.first_name, None);
        assert_eq!(read.last_name, None);
        assert_eq!(read.email.as_deref(), Some("x@example.com"));
    }

    #[test]
    fn primary_entries_and_lenient_reading() {
        let p = person(json!({"id": "5", "emails": [
            {"value": "home@x.io", "primary": false, "label": "home"},
            {"value": "Work@X.io", "primary": true, "label": "work"},
            {"value": "", "primary": false}, 7],
            "phones": null, "custom_fields": {PRONOUNS: {"type": "varchar", "value": "they"}},
            "update_time": "2025-06-02T10:18:35Z", "is_deleted": true}));
        assert_eq!(p.id, 5);
        assert_eq!(p.emails.len(), 2);
        let f = to_fields(&p, slots());
        assert_eq!(f.email.as_deref(), Some("work@x.io"));
        assert_eq!(f.phone, None);
        assert_eq!(f.pronouns.as_deref(), Some("they"));
        assert!(p.is_deleted);
        assert_eq!(
            p.update_time.unwrap().to_rfc3339(),
            "2025-06-02T10:18:35+00:00"
        );
        assert!(Person::from_json(&json!({"name": "no id"})).is_none());
        assert_eq!(
            parse_time(&json!("2025-01-01 10:20:00"))
                .unwrap()
                .to_rfc3339(),
            "2025-01-01T10:20:00+00:00"
        );
    }

    #[test]
    fn updating_the_primary_email_keeps_the_others() {
        let list = vec![
            Channel {
                value: "old@x.io".into(),
                primary: true,
                label: "work".into(),
            },
            Channel {
                value: "home@x.io".into(),
                primary: false,
                label: "home".into(),
            },
        ];
        let out = with_primary(&list, Some("new@x.io"));
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].value.as_str(), out[0].primary, out[0].label.as_str()),
            ("new@x.io", true, "work")
        );
        assert_eq!(
            (out[1].value.as_str(), out[1].primary),
            ("home@x.io", false)
        );
        // An existing secondary value is promoted instead of duplicated.
        let out = with_primary(&list, Some("HOME@x.io"));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value, "HOME@x.io");
        assert_eq!(out[0].label, "home");
        assert!(!out[1].primary);
        // Clearing removes only the primary entry.
        let out = with_primary(&list, None);
        assert_eq!(out.len(), 1);
        assert!(out[0].primary);
        assert_eq!(with_primary(&[], Some("a@x.io"))[0].label, "work");
    }

    #[test]
    fn patch_bodies() {
        let current = person(json!({"id": 9, "first_name": "Ada", "last_name": "Byron",
            "emails": [{"value": "ada@x.io", "primary": true, "label": "work"},
                       {"value": "ada@home.io", "primary": false, "label": "home"}],
            "phones": [{"value": "1", "primary": true, "label": "mobile"}]}));
        let mut patch = FieldPatch::default();
        patch.insert(Field::LastName, Some("Lovelace".into()));
        patch.insert(Field::Email, Some("ada@new.io".into()));
        patch.insert(Field::Pronouns, None);
        patch.insert(Field::JobTitle, None);
        assert!(needs_current(&patch));
        let body = patch_body(&patch, Some(&current), slots());
        assert_eq!(body["first_name"], "Ada");
        assert_eq!(body["last_name"], "Lovelace");
        assert_eq!(body["emails"].as_array().unwrap().len(), 2);
        assert_eq!(body["emails"][0]["value"], "ada@new.io");
        assert_eq!(body["emails"][1]["value"], "ada@home.io");
        assert!(body.get("phones").is_none());
        assert_eq!(body["custom_fields"][PRONOUNS], Value::Null);
        assert_eq!(body["custom_fields"][JOB], Value::Null);
        // Standard job title is cleared with "" (non-nullable in the spec).
        let mut patch = FieldPatch::default();
        patch.insert(Field::JobTitle, None);
        assert!(!needs_current(&patch));
        let std = Slots {
            pronouns: None,
            job_title: Some(STANDARD_JOB_TITLE),
        };
        assert_eq!(patch_body(&patch, None, std), json!({"job_title": ""}));
        // Clearing both names falls back to the email as the name.
        let mut patch = FieldPatch::default();
        patch.insert(Field::FirstName, None);
        patch.insert(Field::LastName, None);
        assert_eq!(
            patch_body(&patch, Some(&current), slots()),
            json!({"name": "ada@x.io"})
        );
    }

    #[test]
    fn diff_patch_writes_only_what_differs() {
        let cur = ContactFields {
            email: Some("a@x.io".into()),
            first_name: Some("A".into()),
            pronouns: Some("x".into()),
            ..Default::default()
        };
        let wanted = ContactFields {
            email: Some("a@x.io".into()),
            first_name: Some("B".into()),
            pronouns: Some("y".into()),
            ..Default::default()
        };
        let p = diff_patch(&cur, &wanted, Slots::default());
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[&Field::FirstName].as_deref(), Some("B"));
        assert_eq!(diff_patch(&cur, &wanted, slots()).0.len(), 2);
    }
}

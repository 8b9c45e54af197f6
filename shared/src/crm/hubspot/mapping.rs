//! The one HubSpot mapping: universal contact ⇄ HubSpot contact properties, both directions.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::domain::{ContactFields, Field, FieldPatch, Reported};

/// HubSpot's property name for a field (`None` for pronouns when the property is not set up).
pub fn property_name(field: Field, pronouns_key: Option<&str>) -> Option<String> {
    Some(
        match field {
            Field::Email => "email",
            Field::FirstName => "firstname",
            Field::LastName => "lastname",
            Field::Phone => "phone",
            Field::JobTitle => "jobtitle",
            Field::Pronouns => return pronouns_key.map(str::to_owned),
        }
        .to_string(),
    )
}

/// The field a standard HubSpot property holds (pronouns live in a property of ours whose name
/// only the tenant's settings know).
pub fn standard_field(property: &str) -> Option<Field> {
    Field::ALL
        .into_iter()
        .find(|f| property_name(*f, None).as_deref() == Some(property))
}

/// Properties to request when reading contacts.
pub fn read_properties(pronouns_key: Option<&str>) -> Vec<String> {
    let mut props: Vec<String> = Field::ALL
        .iter()
        .filter_map(|f| property_name(*f, pronouns_key))
        .collect();
    props.push("lastmodifieddate".into());
    props
}

/// HubSpot properties → universal fields. Values may be missing or `null`.
pub fn from_properties(
    props: &serde_json::Map<String, Value>,
    pronouns_key: Option<&str>,
) -> ContactFields {
    let mut fields = ContactFields::default();
    for field in Field::ALL {
        if let Some(name) = property_name(field, pronouns_key) {
            let value = props.get(&name).and_then(Value::as_str).map(str::to_owned);
            fields.set(field, value);
        }
    }
    fields
}

/// `propertiesWithHistory` → the values `fields` were set to at or after `since`, oldest first.
/// Each entry is `{value, timestamp, sourceType, …}`; an empty value is a cleared field.
pub fn history(
    with_history: &serde_json::Map<String, Value>,
    pronouns_key: Option<&str>,
    fields: &[Field],
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<Reported> {
    let mut out = Vec::new();
    for &field in fields {
        let Some(name) = property_name(field, pronouns_key) else {
            continue;
        };
        // Newest first as HubSpot lists them: taken oldest first, so that of two values set in
        // the same millisecond the later stays later.
        for entry in with_history
            .get(&name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .rev()
        {
            let at = entry
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
            let Some(at) = at.filter(|at| *at >= since) else {
                continue;
            };
            let value = entry
                .get("value")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            let via_api = matches!(
                entry.get("sourceType").and_then(Value::as_str),
                Some("INTEGRATION" | "API")
            );
            out.push(Reported::set(field, value, at).via_api(via_api));
        }
    }
    out.sort_by_key(|r| r.at);
    out
}

/// Universal fields → HubSpot properties (only values that are set).
pub fn to_properties(
    fields: &ContactFields,
    pronouns_key: Option<&str>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for field in Field::ALL {
        if let (Some(name), Some(v)) = (property_name(field, pronouns_key), fields.get(field)) {
            out.insert(name, v.to_string());
        }
    }
    out
}

/// A patch → HubSpot properties; a cleared value is sent as `""` (HubSpot's way to clear).
pub fn patch_properties(
    patch: &FieldPatch,
    pronouns_key: Option<&str>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (field, value) in &patch.0 {
        if let Some(name) = property_name(*field, pronouns_key) {
            out.insert(name, value.clone().unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_both_directions() {
        let fields = ContactFields {
            email: Some("a@x.io".into()),
            first_name: Some("Ann".into()),
            last_name: None,
            phone: Some("+1 555".into()),
            job_title: Some("CTO".into()),
            pronouns: Some("she/her".into()),
        };
        let props = to_properties(&fields, Some("pronouns"));
        assert_eq!(props["firstname"], "Ann");
        assert!(!props.contains_key("lastname"));
        let map: serde_json::Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        assert_eq!(from_properties(&map, Some("pronouns")), fields);
        // Without the pronouns property, pronouns are neither sent nor read.
        assert!(!to_properties(&fields, None).contains_key("pronouns"));
        assert_eq!(from_properties(&map, None).pronouns, None);
    }

    #[test]
    fn nulls_and_empty_strings_are_no_value_and_clears_are_empty_strings() {
        let props = json!({"email": "A@X.io", "firstname": null, "lastname": ""});
        let f = from_properties(props.as_object().unwrap(), None);
        assert_eq!(f.email.as_deref(), Some("a@x.io"));
        assert_eq!(f.first_name, None);
        assert_eq!(f.last_name, None);
        let mut patch = FieldPatch::default();
        patch.insert(Field::LastName, None);
        patch.insert(Field::Pronouns, Some("they".into()));
        let p = patch_properties(&patch, None);
        assert_eq!(p.get("lastname").map(String::as_str), Some(""));
        assert!(!p.contains_key("pronouns"));
    }
}

//! Contact property definitions: the built-ins, custom properties created through
//! `POST /crm/v3/properties/contacts`, and the per-type validation of values written to them.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::error::{ApiError, PropIssue};
use super::store::fmt_ts;

/// `type` values accepted by the properties API (HubSpot's properties API
/// guide).
pub(crate) const PROPERTY_TYPES: [&str; 7] = [
    "bool",
    "date",
    "datetime",
    "enumeration",
    "number",
    "phone_number",
    "string",
];

/// `fieldType` values accepted by the properties API (HubSpot's properties API
/// guide).
pub(crate) const FIELD_TYPES: [&str; 12] = [
    "booleancheckbox",
    "calculation_equation",
    "checkbox",
    "date",
    "file",
    "html",
    "number",
    "phonenumber",
    "radio",
    "select",
    "text",
    "textarea",
];

/// Property groups that exist on a fresh portal's contact object.
pub(crate) const PROPERTY_GROUPS: [&str; 8] = [
    "analyticsinformation",
    "contact_activity",
    "contactinformation",
    "conversioninformation",
    "emailinformation",
    "facebook_ads_properties",
    "sales_properties",
    "socialmediainformation",
];

/// Which `fieldType`s HubSpot pairs with each `type`.
fn field_type_allowed(kind: &str, field_type: &str) -> bool {
    match kind {
        "bool" => matches!(field_type, "booleancheckbox" | "calculation_equation"),
        "enumeration" => matches!(
            field_type,
            "booleancheckbox" | "checkbox" | "radio" | "select" | "calculation_equation"
        ),
        "date" | "datetime" => matches!(field_type, "date" | "calculation_equation"),
        "number" => matches!(field_type, "number" | "calculation_equation"),
        "phone_number" => matches!(field_type, "phonenumber" | "text"),
        "string" => matches!(
            field_type,
            "text" | "textarea" | "html" | "file" | "phonenumber" | "calculation_equation"
        ),
        _ => false,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PropertyDef {
    pub name: String,
    pub label: String,
    pub kind: String,
    pub field_type: String,
    pub group_name: String,
    pub description: String,
    pub options: Vec<Value>,
    pub display_order: i64,
    pub hidden: bool,
    pub form_field: bool,
    pub has_unique_value: bool,
    pub hubspot_defined: bool,
    pub read_only_value: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PropertyDef {
    fn builtin(
        name: &str,
        label: &str,
        kind: &str,
        field_type: &str,
        read_only: bool,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            name: name.into(),
            label: label.into(),
            kind: kind.into(),
            field_type: field_type.into(),
            group_name: "contactinformation".into(),
            description: String::new(),
            options: Vec::new(),
            display_order: -1,
            hidden: false,
            form_field: !read_only,
            has_unique_value: false,
            hubspot_defined: true,
            read_only_value: read_only,
            created_at: now,
            updated_at: now,
        }
    }

    /// Values are compared as numbers (epoch ms for dates) in search filters and sorts.
    pub fn is_numeric(&self) -> bool {
        matches!(self.kind.as_str(), "number" | "date" | "datetime")
    }

    pub fn is_date(&self) -> bool {
        matches!(self.kind.as_str(), "date" | "datetime")
    }

    pub fn is_enumeration(&self) -> bool {
        self.kind == "enumeration"
    }

    fn option_values(&self) -> Vec<&str> {
        self.options
            .iter()
            .filter_map(|o| o.get("value").and_then(Value::as_str))
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "label": self.label,
            "type": self.kind,
            "fieldType": self.field_type,
            "groupName": self.group_name,
            "description": self.description,
            "options": self.options,
            "displayOrder": self.display_order,
            "hidden": self.hidden,
            "formField": self.form_field,
            "hasUniqueValue": self.has_unique_value,
            "hubspotDefined": self.hubspot_defined,
            "calculated": false,
            "externalOptions": false,
            "archived": false,
            "createdAt": fmt_ts(self.created_at),
            "updatedAt": fmt_ts(self.updated_at),
            "modificationMetadata": {
                "archivable": !self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only_value,
            },
            "dataSensitivity": "non_sensitive",
        })
    }

    /// Validates one written value and returns it as stored. `""` clears the property.
    pub fn check_value(&self, raw: &str) -> Result<String, PropIssue> {
        let name = self.name.as_str();
        if self.read_only_value {
            return Err(PropIssue::new(
                name,
                "READ_ONLY_VALUE",
                format!("\"{name}\" is a read only property; its value cannot be set."),
            ));
        }
        if raw.is_empty() {
            return Ok(String::new());
        }
        if name == "email" {
            let email = raw.trim().to_lowercase();
            if !is_valid_email(&email) {
                return Err(PropIssue::new(
                    name,
                    "INVALID_EMAIL",
                    format!("Email address {raw} is invalid"),
                ));
            }
            return Ok(email);
        }
        match self.kind.as_str() {
            "number" => {
                let t = raw.trim();
                if t.parse::<f64>().map(f64::is_finite).unwrap_or(false) {
                    Ok(t.to_string())
                } else {
                    Err(PropIssue::new(
                        name,
                        "INVALID_NUMBER",
                        format!("{raw} is not a valid number for property \"{name}\""),
                    ))
                }
            }
            "bool" => match raw.trim().to_ascii_lowercase().as_str() {
                v @ ("true" | "false") => Ok(v.to_string()),
                _ => Err(PropIssue::new(
                    name,
                    "INVALID_BOOLEAN",
                    format!("{raw} is not a valid boolean for property \"{name}\""),
                )),
            },
            "enumeration" => {
                let allowed = self.option_values();
                let parts: Vec<&str> = if self.field_type == "checkbox" {
                    raw.split(';').filter(|p| !p.is_empty()).collect()
                } else {
                    vec![raw]
                };
                for part in parts {
                    if !allowed.contains(&part) {
                        return Err(PropIssue::new(
                            name,
                            "INVALID_OPTION",
                            format!(
                                "{part} was not one of the allowed options: [{}]",
                                allowed.join(", ")
                            ),
                        ));
                    }
                }
                Ok(raw.to_string())
            }
            "date" => {
                let ok = match raw.trim().parse::<i64>() {
                    Ok(ms) => ms.rem_euclid(86_400_000) == 0,
                    Err(_) => NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").is_ok(),
                };
                if ok {
                    Ok(raw.trim().to_string())
                } else {
                    Err(PropIssue::new(
                        name,
                        "INVALID_DATE",
                        format!(
                            "{raw} is not a valid date for property \"{name}\": use midnight UTC in epoch milliseconds or YYYY-MM-DD"
                        ),
                    ))
                }
            }
            "datetime" => {
                if parse_epoch_ms(raw).is_some() {
                    Ok(raw.trim().to_string())
                } else {
                    Err(PropIssue::new(
                        name,
                        "INVALID_DATE",
                        format!("{raw} is not a valid datetime for property \"{name}\""),
                    ))
                }
            }
            _ => Ok(raw.to_string()),
        }
    }
}

/// A deliberately simple address check: one `@`, a non-empty local part, a dotted domain,
/// no whitespace.
pub(crate) fn is_valid_email(email: &str) -> bool {
    if email.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// Epoch milliseconds from an integer string, an RFC 3339 timestamp or a `YYYY-MM-DD` date.
pub(crate) fn parse_epoch_ms(raw: &str) -> Option<i64> {
    let t = raw.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|n| n.and_utc().timestamp_millis());
    }
    None
}

/// The contact properties a fresh portal has. Custom ones (e.g. `pronouns`) do not exist yet.
pub(crate) fn builtin_properties(now: DateTime<Utc>) -> BTreeMap<String, PropertyDef> {
    let defs = [
        PropertyDef::builtin("email", "Email", "string", "text", false, now),
        PropertyDef::builtin("firstname", "First Name", "string", "text", false, now),
        PropertyDef::builtin("lastname", "Last Name", "string", "text", false, now),
        PropertyDef::builtin("phone", "Phone Number", "string", "phonenumber", false, now),
        PropertyDef::builtin("jobtitle", "Job Title", "string", "text", false, now),
        PropertyDef::builtin("company", "Company Name", "string", "text", false, now),
        PropertyDef::builtin("createdate", "Create Date", "datetime", "date", true, now),
        PropertyDef::builtin(
            "lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
            true,
            now,
        ),
        PropertyDef::builtin("hs_object_id", "Record ID", "number", "number", true, now),
        PropertyDef::builtin(
            "hs_merged_object_ids",
            "Merged Contact IDs",
            "string",
            "text",
            true,
            now,
        ),
        PropertyDef::builtin(
            "hs_additional_emails",
            "Additional email addresses",
            "string",
            "textarea",
            true,
            now,
        ),
    ];
    let mut map: BTreeMap<String, PropertyDef> =
        defs.into_iter().map(|d| (d.name.clone(), d)).collect();
    if let Some(email) = map.get_mut("email") {
        email.has_unique_value = true;
    }
    if let Some(id) = map.get_mut("hs_object_id") {
        id.has_unique_value = true;
    }
    map
}

fn is_valid_property_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 100
}

/// Validates a `PropertyCreate` body and builds the definition.
pub(crate) fn property_from_create_body(
    body: &Value,
    now: DateTime<Utc>,
) -> Result<PropertyDef, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid_json(
            "Cannot deserialize PropertyCreate from a non-object value",
        ));
    };
    let required = ["name", "label", "type", "fieldType", "groupName"];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !obj.get(*k).is_some_and(|v| v.is_string()))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::invalid_json(format!(
            "Some required fields were not set: [{}]",
            missing.join(", ")
        )));
    }
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
    let (name, label, kind, field_type, group) = (
        s("name"),
        s("label"),
        s("type"),
        s("fieldType"),
        s("groupName"),
    );
    if !PROPERTY_TYPES.contains(&kind) {
        return Err(ApiError::invalid_json(format!(
            "Cannot deserialize value of type `PropertyType` from String \"{kind}\": not one of the values accepted for Enum class: [{}]",
            PROPERTY_TYPES.join(", ")
        )));
    }
    if !FIELD_TYPES.contains(&field_type) {
        return Err(ApiError::invalid_json(format!(
            "Cannot deserialize value of type `FieldType` from String \"{field_type}\": not one of the values accepted for Enum class: [{}]",
            FIELD_TYPES.join(", ")
        )));
    }
    if !is_valid_property_name(name) {
        return Err(ApiError::validation(format!(
            "Property name \"{name}\" is invalid: it must start with a lowercase letter and contain only lowercase letters, numbers and underscores"
        )));
    }
    if label.trim().is_empty() {
        return Err(ApiError::validation("Property label must not be empty"));
    }
    if !field_type_allowed(kind, field_type) {
        return Err(ApiError::validation(format!(
            "Invalid fieldType \"{field_type}\" for property type \"{kind}\""
        )));
    }
    if !PROPERTY_GROUPS.contains(&group) {
        return Err(ApiError::validation(format!(
            "Property group \"{group}\" does not exist for object type contacts"
        )));
    }
    let mut options = Vec::new();
    match obj.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let label = item.get("label").and_then(Value::as_str);
                let value = item.get("value").and_then(Value::as_str);
                let (Some(label), Some(value)) = (label, value) else {
                    return Err(ApiError::invalid_json(format!(
                        "Some required fields were not set on options[{i}]: [label, value]"
                    )));
                };
                let mut opt = Map::new();
                opt.insert("label".into(), json!(label));
                opt.insert("value".into(), json!(value));
                opt.insert(
                    "displayOrder".into(),
                    item.get("displayOrder").cloned().unwrap_or(json!(i)),
                );
                opt.insert(
                    "hidden".into(),
                    item.get("hidden").cloned().unwrap_or(json!(false)),
                );
                if let Some(d) = item.get("description") {
                    opt.insert("description".into(), d.clone());
                }
                options.push(Value::Object(opt));
            }
        }
        Some(_) => return Err(ApiError::invalid_json("options must be an array")),
    }
    if kind == "enumeration" && options.is_empty() {
        return Err(ApiError::validation(format!(
            "Enumeration property \"{name}\" requires at least one option"
        )));
    }
    let flag = |k: &str| -> Result<bool, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::invalid_json(format!("{k} must be a boolean"))),
        }
    };
    Ok(PropertyDef {
        name: name.into(),
        label: label.into(),
        kind: kind.into(),
        field_type: field_type.into(),
        group_name: group.into(),
        description: obj
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into(),
        options,
        display_order: obj
            .get("displayOrder")
            .and_then(Value::as_i64)
            .unwrap_or(-1),
        hidden: flag("hidden")?,
        form_field: flag("formField")?,
        has_unique_value: flag("hasUniqueValue")?,
        hubspot_defined: false,
        read_only_value: false,
        created_at: now,
        updated_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> BTreeMap<String, PropertyDef> {
        builtin_properties(Utc::now())
    }

    #[test]
    fn read_only_builtins_reject_writes() {
        let d = defs();
        for name in ["createdate", "lastmodifieddate", "hs_object_id"] {
            let err = d[name].check_value("1").unwrap_err();
            assert_eq!(err.code, "READ_ONLY_VALUE");
        }
        assert!(d["firstname"].check_value("Ann").is_ok());
    }

    #[test]
    fn email_is_normalised_and_checked() {
        let d = defs();
        assert_eq!(
            d["email"].check_value("  Jane@Example.COM ").unwrap(),
            "jane@example.com"
        );
        assert_eq!(
            d["email"].check_value("not-an-email").unwrap_err().code,
            "INVALID_EMAIL"
        );
        assert_eq!(d["email"].check_value("").unwrap(), "");
    }

    #[test]
    fn create_body_validation() {
        let now = Utc::now();
        let ok = json!({"name":"pronouns","label":"Pronouns","type":"string","fieldType":"text","groupName":"contactinformation"});
        assert_eq!(
            property_from_create_body(&ok, now).unwrap().name,
            "pronouns"
        );
        let missing = json!({"name":"x","label":"X","type":"string"});
        let err = property_from_create_body(&missing, now).unwrap_err();
        assert!(err.body["message"].as_str().unwrap().contains("fieldType"));
        let bad_type = json!({"name":"x","label":"X","type":"text","fieldType":"text","groupName":"contactinformation"});
        assert_eq!(
            property_from_create_body(&bad_type, now)
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
        let bad_pair = json!({"name":"x","label":"X","type":"bool","fieldType":"text","groupName":"contactinformation"});
        assert!(property_from_create_body(&bad_pair, now).is_err());
        let enum_no_options = json!({"name":"x","label":"X","type":"enumeration","fieldType":"select","groupName":"contactinformation"});
        assert!(property_from_create_body(&enum_no_options, now).is_err());
    }

    #[test]
    fn typed_values() {
        let now = Utc::now();
        let body = json!({"name":"tier","label":"Tier","type":"enumeration","fieldType":"checkbox","groupName":"contactinformation",
            "options":[{"label":"Gold","value":"gold"},{"label":"Silver","value":"silver"}]});
        let tier = property_from_create_body(&body, now).unwrap();
        assert!(tier.check_value("gold;silver").is_ok());
        assert_eq!(
            tier.check_value("bronze").unwrap_err().code,
            "INVALID_OPTION"
        );
        let num = property_from_create_body(
            &json!({"name":"n","label":"N","type":"number","fieldType":"number","groupName":"contactinformation"}),
            now,
        )
        .unwrap();
        assert!(num.check_value("12.5").is_ok());
        assert_eq!(
            num.check_value("twelve").unwrap_err().code,
            "INVALID_NUMBER"
        );
    }

    #[test]
    fn epoch_parsing() {
        assert_eq!(parse_epoch_ms("1767225600000"), Some(1_767_225_600_000));
        assert_eq!(
            parse_epoch_ms("2026-01-01T00:00:00.000Z"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_epoch_ms("2026-01-01"), Some(1_767_225_600_000));
        assert_eq!(parse_epoch_ms("soon"), None);
    }
}

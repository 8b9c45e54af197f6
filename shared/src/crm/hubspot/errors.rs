//! HubSpot's error answers, mapped to [`CrmError`]s.

use reqwest::StatusCode;
use serde_json::Value;

use super::P;
use crate::domain::CustomField;
use crate::error::CrmError;

pub(super) fn error_message(body: &Value) -> String {
    body.get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string())
}

/// Maps an error response to a [`CrmError`].
pub fn error_for(status: StatusCode, body: &Value) -> CrmError {
    let message = error_message(body);
    match status.as_u16() {
        401 | 403 => CrmError::Auth {
            provider: P,
            message,
        },
        409 => match parse_existing_id(&message) {
            Some(existing_id) => CrmError::AlreadyExists {
                provider: P,
                existing_id,
            },
            None => CrmError::Rejected {
                provider: P,
                status: 409,
                message,
            },
        },
        s if s >= 500 => CrmError::Unavailable {
            provider: P,
            message: format!("{status}: {message}"),
        },
        s => CrmError::Rejected {
            provider: P,
            status: s,
            message,
        },
    }
}

/// `Contact already exists. Existing ID: 37765128953` → `37765128953`.
pub fn parse_existing_id(message: &str) -> Option<String> {
    let rest = &message[message.find("Existing ID:")? + "Existing ID:".len()..];
    let id: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// HubSpot has standard properties for every synced field but pronouns.
pub(super) fn not_a_custom_field(field: CustomField) -> CrmError {
    CrmError::Rejected {
        provider: P,
        status: 400,
        message: format!("HubSpot keeps {} in a standard property", field.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn existing_id_is_parsed_from_the_409_message() {
        assert_eq!(
            parse_existing_id("Contact already exists. Existing ID: 37765128953").as_deref(),
            Some("37765128953")
        );
        assert_eq!(parse_existing_id("Contact already exists."), None);
        let e = error_for(
            StatusCode::CONFLICT,
            &json!({"status":"error","message":"Contact already exists. Existing ID: 42","category":"CONFLICT"}),
        );
        assert_eq!(
            e,
            CrmError::AlreadyExists {
                provider: P,
                existing_id: "42".into()
            }
        );
    }

    #[test]
    fn error_mapping() {
        assert!(matches!(
            error_for(StatusCode::UNAUTHORIZED, &Value::Null),
            CrmError::Auth { .. }
        ));
        assert!(error_for(StatusCode::SERVICE_UNAVAILABLE, &Value::Null).is_transient());
        let e = error_for(
            StatusCode::BAD_REQUEST,
            &json!({"message": "Property values were not valid"}),
        );
        assert!(!e.is_transient());
        assert!(e.to_string().contains("Property values were not valid"));
    }
}

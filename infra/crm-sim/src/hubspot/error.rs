//! HubSpot-shaped error bodies.
//!
//! Every API error carries `status:"error"`, `message`, a fresh `correlationId` (UUID) and a
//! `category`, plus `errors[]` / `context` where HubSpot sends them (HubSpot's
//! "Error handling" guide).

use axum::{
    Json,
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

/// An error response in HubSpot's shape.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

pub(crate) fn correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl ApiError {
    pub fn new(status: StatusCode, category: &str, message: impl Into<String>) -> Self {
        let body = json!({
            "status": "error",
            "message": message.into(),
            "correlationId": correlation_id(),
            "category": category,
        });
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// A body that is not of the standard shape (OAuth and rate-limit errors).
    pub fn raw(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub fn with_field(mut self, key: &str, value: Value) -> Self {
        if let Some(obj) = self.body.as_object_mut() {
            obj.insert(key.to_string(), value);
        }
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    /// HubSpot's wording for a body that could not be read as the expected JSON.
    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::validation(format!("Invalid input JSON: {detail}"))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", message)
    }

    pub fn object_not_found() -> Self {
        Self::not_found("Object not found.  objectId are usually numeric.")
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "The service is temporarily unavailable. Please try again later.",
        )
    }

    pub fn status_u16(&self) -> u16 {
        self.status.as_u16()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// One invalid property value, as listed in a `VALIDATION_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PropIssue {
    pub name: String,
    pub code: &'static str,
    pub message: String,
}

impl PropIssue {
    pub fn new(name: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            code,
            message: message.into(),
        }
    }
}

/// `message` and `errors[]` for "Property values were not valid".
pub(crate) fn invalid_properties_parts(issues: &[PropIssue], portal_id: u64) -> (String, Value) {
    let inner: Vec<Value> = issues
        .iter()
        .map(|i| {
            json!({
                "isValid": false,
                "message": i.message,
                "error": i.code,
                "name": i.name,
                "localizedErrorMessage": i.message,
                "portalId": portal_id,
            })
        })
        .collect();
    let message = format!("Property values were not valid: {}", Value::Array(inner));
    let errors: Vec<Value> = issues
        .iter()
        .map(|i| {
            json!({
                "message": i.message,
                "code": i.code,
                "context": {"propertyName": [i.name]},
            })
        })
        .collect();
    (message, Value::Array(errors))
}

/// A failure of one write operation, before it is shaped into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteError {
    InvalidProperties(Vec<PropIssue>),
    ContactExists {
        existing_id: u64,
    },
    UniqueValueTaken {
        property: String,
        value: String,
        existing_id: u64,
    },
    NotFound {
        id: String,
    },
    Invalid(String),
}

impl WriteError {
    fn status(&self) -> StatusCode {
        match self {
            WriteError::InvalidProperties(_) | WriteError::Invalid(_) => StatusCode::BAD_REQUEST,
            WriteError::ContactExists { .. } | WriteError::UniqueValueTaken { .. } => {
                StatusCode::CONFLICT
            }
            WriteError::NotFound { .. } => StatusCode::NOT_FOUND,
        }
    }

    fn category(&self) -> &'static str {
        match self {
            WriteError::InvalidProperties(_) | WriteError::Invalid(_) => "VALIDATION_ERROR",
            WriteError::ContactExists { .. } | WriteError::UniqueValueTaken { .. } => "CONFLICT",
            WriteError::NotFound { .. } => "OBJECT_NOT_FOUND",
        }
    }

    /// `(message, errors[])`.
    fn parts(&self, portal_id: u64) -> (String, Option<Value>) {
        match self {
            WriteError::InvalidProperties(issues) => {
                let (m, e) = invalid_properties_parts(issues, portal_id);
                (m, Some(e))
            }
            WriteError::ContactExists { existing_id } => (
                format!("Contact already exists. Existing ID: {existing_id}"),
                None,
            ),
            WriteError::UniqueValueTaken {
                property,
                value,
                existing_id,
            } => (
                format!(
                    "A contact with the value \"{value}\" for the unique property \"{property}\" already exists. Existing ID: {existing_id}"
                ),
                None,
            ),
            WriteError::NotFound { id } => (
                format!("Object not found. No contact with id {id}. objectId are usually numeric."),
                None,
            ),
            WriteError::Invalid(m) => (m.clone(), None),
        }
    }

    pub fn to_api(&self, portal_id: u64) -> ApiError {
        let (message, errors) = self.parts(portal_id);
        let mut err = ApiError::new(self.status(), self.category(), message);
        if let Some(errors) = errors {
            err = err.with_field("errors", errors);
        }
        err
    }

    /// A `StandardError` as listed in a 207 body.
    pub fn standard_error(&self, portal_id: u64, context: Value) -> Value {
        let (message, errors) = self.parts(portal_id);
        let mut obj = Map::new();
        obj.insert("status".into(), json!("error"));
        obj.insert("category".into(), json!(self.category()));
        obj.insert("message".into(), json!(message));
        obj.insert("context".into(), context);
        obj.insert("errors".into(), errors.unwrap_or_else(|| json!([])));
        obj.insert("links".into(), json!({}));
        Value::Object(obj)
    }
}

//! JSON error bodies: `{"error": {"code": ..., "message": ...}}`. Never a 500 for bad input.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::{QueueError, StoreError, SyncError};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The body of every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for programs: `bad_request`, `unauthorized`, `not_found`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `method_not_allowed`, `retry`,
    /// `queue_unavailable`, `crm_error` or `internal`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Duplicate(m) => ApiError::conflict(m),
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Backend(m) => {
                tracing::error!(error = %m, "store failure");
                ApiError::internal("storage is unavailable")
            }
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::error!(error = %e, "queue failure");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            "the sync queue is unavailable",
        )
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Store(s) => s.into(),
            SyncError::Queue(q) => q.into(),
            SyncError::UnknownTenant(t) => ApiError::not_found(format!("unknown tenant {t}")),
            SyncError::Crm(c) => ApiError::new(StatusCode::BAD_GATEWAY, "crm_error", c.to_string()),
            busy @ (SyncError::Busy { .. } | SyncError::CheckDue { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "retry", busy.to_string())
            }
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is too large")
        } else {
            ApiError::bad_request(r.body_text())
        }
    }
}

/// A body on a JSON route must say it is JSON (`application/json`, or a `+json` type): 415
/// otherwise. An empty body is left to the parser (a 400).
pub fn require_json(headers: &axum::http::HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let declared = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(declared) = declared else {
        return Err(ApiError::unsupported_media_type(
            "no content-type; send the body as application/json",
        ));
    };
    let essence = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(format!(
            "content-type {essence:?} is not JSON; send application/json"
        )))
    }
}

/// [`parse_json`] of a body whose content type must be JSON ([`require_json`]).
pub fn json_body<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    require_json(headers, body)?;
    parse_json(body)
}

/// Parses a JSON body, turning every problem into a 400 with a readable message.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; JSON expected",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (GET /openapi.json lists every route)",
    )
}

//! The HTTP error type: every handler returns `Result<T, Error>`, and this is the
//! one place errors become responses.
//!
//! Body shape, everywhere: `{"error": {"code": "...", "message": "..."}}`. Codes
//! are stable strings clients may match on. 5xx bodies are generic; the cause is
//! logged once here, inside the request's span (so with its request id).

use axum::body::Bytes;
use axum::extract::FromRequest;
use axum::extract::Request;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::llm::LlmError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a 503 tells the client to wait before retrying: outages we answer 503
/// for (a saturated pool, a restarting database, a slow S3) usually pass in seconds.
const RETRY_AFTER_SECS: &str = "2";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// It existed and is gone for good.
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Storage(#[from] crate::infra::blob::StorageError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `unauthorized`, `invalid_json`, `not_found`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// With `budget_exceeded`: the limit that was reached and when it resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::llm::accounting::budget::Exceeded>,
}

impl Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest { code: "bad_request", message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Unprocessable { code: "invalid_request", message: message.into() }
    }

    /// Caller text with a NUL (U+0000) in it.
    pub fn nul_character() -> Self {
        Error::Unprocessable {
            code: "invalid_character",
            message: "text must not contain NUL (U+0000) characters".into(),
        }
    }

    /// What the caller is told: the whole message for client errors; for
    /// server errors only what says nothing internal (the cause is logged).
    pub fn public_message(&self) -> String {
        let (status, _) = self.status_and_code();
        if !status.is_server_error() {
            return self.to_string();
        }
        match self {
            // These say nothing internal and tell the caller what to do.
            Error::Unavailable(_) | Error::Llm(_) => self.to_string(),
            // Which dependency failed goes to the log, not to the caller.
            Error::Database(_) | Error::Storage(_) if status == StatusCode::SERVICE_UNAVAILABLE => {
                "a dependency is temporarily unavailable; try again shortly".to_string()
            }
            Error::Database(_) if status == StatusCode::GATEWAY_TIMEOUT => {
                "the request ran past DATABASE_STATEMENT_TIMEOUT_SECS in the database; narrow it".to_string()
            }
            _ => "internal server error".to_string(),
        }
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Gone { code, .. } => (StatusCode::GONE, code),
            Error::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Error::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Llm(LlmError::RateLimited { .. }) => (StatusCode::TOO_MANY_REQUESTS, "model_rate_limited"),
            Error::Llm(LlmError::QuotaExhausted(_)) => (StatusCode::SERVICE_UNAVAILABLE, "model_quota_exhausted"),
            Error::Llm(LlmError::InputTooLong { .. }) => (StatusCode::UNPROCESSABLE_ENTITY, "input_too_long"),
            Error::Llm(LlmError::Provider(_) | LlmError::Refused(_)) => (StatusCode::BAD_GATEWAY, "model_error"),
            Error::Llm(LlmError::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Llm(LlmError::BudgetExceeded(_)) => (StatusCode::TOO_MANY_REQUESTS, "budget_exceeded"),
            // An outage or a saturated pool is the caller's cue to come back, not a bug.
            Error::Database(err) if crate::store::is_unavailable(err) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Error::Database(err) if crate::store::is_statement_timeout(err) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Error::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Database(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// A JSON error response with a given status; also used for errors raised by
/// middleware (body limit, timeout, unknown route).
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: code.to_string(), message: message.into(), budget: None } };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body) = self.reported("request failed");
        let retry_after = match &body.error.budget {
            Some(exceeded) => Some(HeaderValue::from(exceeded.retry_after_secs())),
            None if status == StatusCode::SERVICE_UNAVAILABLE => Some(HeaderValue::from_static(RETRY_AFTER_SECS)),
            None => None,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(retry_after) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

impl Error {
    /// The `{"error": {...}}` body for a failure that happens after a stream's
    /// 200 was sent (an SSE `error` event); server errors are logged here.
    pub fn event_body(self) -> serde_json::Value {
        let (_, body) = self.reported("stream failed");
        serde_json::to_value(body).unwrap_or_default()
    }

    /// The status and the body the caller sees; a server error's cause is logged once, here.
    fn reported(&self, what: &'static str) -> (StatusCode, ErrorBody) {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = ?self, "{what}");
        }
        let budget = match self {
            Error::Llm(LlmError::BudgetExceeded(exceeded)) => Some((**exceeded).clone()),
            _ => None,
        };
        (status, ErrorBody { error: ErrorDetail { code: code.to_string(), message: self.public_message(), budget } })
    }
}

impl From<crate::domain::error::DomainError> for Error {
    fn from(err: crate::domain::error::DomainError) -> Self {
        use crate::domain::error::DomainError;
        match err {
            DomainError::Invalid(message) => Error::invalid(message),
            DomainError::NotFound(what) => Error::NotFound(what),
            DomainError::Forbidden(message) => Error::Forbidden(message),
            DomainError::Conflict(message) => Error::Conflict(message),
            DomainError::TooLarge => Error::PayloadTooLarge,
            DomainError::Unsupported(message) => Error::UnsupportedMediaType(message),
            DomainError::Gone { code, message } => Error::Gone { code, message },
            DomainError::Unavailable(message) => Error::Unavailable(message),
            DomainError::Storage(err) => Error::Storage(err),
            DomainError::Llm(err) => Error::Llm(err),
            DomainError::Database(err) => Error::Database(err),
        }
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Error::Unprocessable { code: "invalid_body", message: e.body_text() },
            JsonRejection::JsonSyntaxError(e) => Error::BadRequest { code: "invalid_json", message: e.body_text() },
            JsonRejection::MissingJsonContentType(_) => {
                Error::UnsupportedMediaType("expected `Content-Type: application/json`".into())
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
            other => Error::bad_request(other.body_text()),
        }
    }
}

/// `Json` whose rejections come back in our error format, and which refuses
/// NUL characters (`\u0000`) anywhere in the body: Postgres text cannot hold
/// them, and no honest caller sends them.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Error::UnsupportedMediaType("expected `Content-Type: application/json`".into()));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge
            } else {
                Error::bad_request(e.body_text())
            }
        })?;
        if contains_escaped_nul(&bytes) {
            return Err(Error::nul_character());
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(AppJson(value))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Whether JSON text holds an escaped NUL. A raw NUL byte is already a syntax
/// error, so the escape is the only way one arrives. Backslashes only occur
/// inside strings, where each starts a two-character escape (`\\` included),
/// so skipping pairs never misreads `\\u0000` (a backslash, then `u0000`).
pub fn contains_escaped_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status_and_stable_code() {
        let cases: Vec<(Error, StatusCode, &str)> = vec![
            (Error::bad_request("x"), StatusCode::BAD_REQUEST, "bad_request"),
            (Error::Unauthorized, StatusCode::UNAUTHORIZED, "unauthorized"),
            (Error::Forbidden("x".into()), StatusCode::FORBIDDEN, "forbidden"),
            (Error::NotFound("document"), StatusCode::NOT_FOUND, "not_found"),
            (Error::PayloadTooLarge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            (Error::UnsupportedMediaType("x".into()), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            (Error::invalid("x"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            (Error::Llm(LlmError::RateLimited { attempts: 3 }), StatusCode::TOO_MANY_REQUESTS, "model_rate_limited"),
            (Error::Unavailable("db".into()), StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            (Error::Internal(anyhow::anyhow!("secret detail")), StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status_and_code(), (status, code), "{error:?}");
        }
    }

    #[test]
    fn escaped_nul_is_found_and_escaped_backslashes_are_not_mistaken_for_it() {
        assert!(contains_escaped_nul(br#"{"q": "a\u0000b"}"#));
        assert!(contains_escaped_nul(br#"{"a\u0000": 1}"#));
        assert!(contains_escaped_nul(br#"{"q": "\\\u0000"}"#));
        assert!(!contains_escaped_nul(br#"{"q": "\\u0000"}"#));
        assert!(!contains_escaped_nul(br#"{"q": "\u0001"}"#));
        assert!(!contains_escaped_nul(br#"{"q": "plain \"quoted\" \n"}"#));
    }

    #[tokio::test]
    async fn unavailable_dependencies_answer_503_with_retry_after_and_no_detail() {
        let response = Error::Database(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("\"code\":\"unavailable\"") && !text.contains("pool"), "{text}");
    }

    #[tokio::test]
    async fn server_errors_hide_their_cause() {
        let response = Error::Internal(anyhow::anyhow!("password=hunter2")).into_response();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("\"code\":\"internal\""), "{text}");
    }
}

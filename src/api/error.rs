//! The API's errors and their JSON bodies: every failure answers `{"detail": ...}` with the
//! status upstream clients expect, and a client's mistake is never a 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An API failure.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON (or a query string is malformed).
    BadRequest(String),
    /// 401: no API key was sent.
    MissingKey,
    /// 403: a wrong API key was sent.
    WrongKey,
    /// 404: unknown engine or stream.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    RequestTimeout(String),
    /// 413: body above the limit.
    TooLarge(String),
    /// 415: not JSON content.
    Unsupported(String),
    /// 422: JSON of the wrong shape, or invalid values.
    Unprocessable(String),
    /// 429: a limit on what clients may make acevisor hold (active streams).
    TooMany(String),
    /// 503 with a plain message: an actor did not answer in time, or is gone.
    Unavailable(String),
    /// 503 with a structured detail object (provisioning blocked).
    Blocked(Value),
    /// Any other status, with a message.
    Other(StatusCode, String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingKey => StatusCode::UNAUTHORIZED,
            ApiError::WrongKey => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Blocked(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Other(status, _) => *status,
        }
    }

    fn detail(&self) -> Value {
        match self {
            ApiError::MissingKey => json!("missing API key"),
            ApiError::WrongKey => json!("invalid API key"),
            ApiError::MethodNotAllowed => json!("Method Not Allowed"),
            ApiError::Blocked(v) => v.clone(),
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::RequestTimeout(m)
            | ApiError::TooMany(m)
            | ApiError::TooLarge(m)
            | ApiError::Unsupported(m)
            | ApiError::Unprocessable(m)
            | ApiError::Unavailable(m)
            | ApiError::Other(_, m) => json!(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(json!({ "detail": self.detail() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // The rest of an unread body is not waited for: the connection closes after the answer.
        if matches!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

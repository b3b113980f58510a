//! The HTTP API's one error type: a status, a stable code and a message, always answered as
//! `{"error":{"code":"…","message":"…"}}`.
//!
//! Module errors (names, cursors, the hub) convert into it, so a handler uses `?` and the mapping from cause to
//! status code lives here and nowhere else.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_proto::{CursorError, NameError};

use crate::auth::AuthError;
use crate::engine::EngineError;
use crate::hub::{HubError, PresenceError};
use crate::limits::LimitError;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
    /// Extra headers (`Allow`, `Retry-After`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with no extra header.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), headers: Vec::new() }
    }

    /// `400` with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `400 invalid_parameter`.
    pub fn parameter(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_parameter", message)
    }

    /// `404 not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route; see docs/API.md")
    }

    /// `404 transport_disabled`.
    pub fn transport_disabled(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "transport_disabled",
            format!("the {name} transport is disabled on this server"),
        )
    }

    /// `503 shutting_down`.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; retry on another node",
        )
    }

    /// Adds a header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl From<NameError> for ApiError {
    fn from(err: NameError) -> Self {
        let code = if err.to_string().starts_with("event") { "invalid_event" } else { "invalid_channel" };
        Self::bad_request(code, err.to_string())
    }
}

impl From<CursorError> for ApiError {
    fn from(err: CursorError) -> Self {
        Self::bad_request("invalid_cursor", err.to_string())
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        match err {
            HubError::Engine(e @ EngineError::Full(_)) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", e.to_string())
            }
            HubError::Engine(e) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable", e.to_string()),
        }
    }
}

impl From<PresenceError> for ApiError {
    fn from(err: PresenceError) -> Self {
        let status = match &err {
            PresenceError::Engine(_) => StatusCode::SERVICE_UNAVAILABLE,
            PresenceError::Full { .. } | PresenceError::AlreadyJoined(_) => StatusCode::CONFLICT,
            PresenceError::NotSubscribed(_) | PresenceError::InvalidUserId(_) | PresenceError::InvalidUserInfo(_) => {
                StatusCode::BAD_REQUEST
            }
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        if err.is_unauthenticated() {
            // RFC 6750 §3: a 401 names the scheme, and for a bad token says so.
            let challenge = match err {
                AuthError::Token(_) => r#"Bearer realm="herald", error="invalid_token""#,
                _ => r#"Bearer realm="herald""#,
            };
            Self::new(StatusCode::UNAUTHORIZED, err.code(), err.to_string())
                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
        } else {
            Self::new(StatusCode::FORBIDDEN, err.code(), err.to_string())
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(err: LimitError) -> Self {
        // Whole seconds, rounded up, so a client that waits as told is let in.
        let secs = err.retry_after().as_secs_f64().ceil().max(1.0) as u64;
        Self::new(StatusCode::TOO_MANY_REQUESTS, err.code(), err.to_string())
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(64 + self.message.len());
        body.extend_from_slice(b"{\"error\":{\"code\":");
        herald_proto::json::push_string(&mut body, self.code);
        body.extend_from_slice(b",\"message\":");
        herald_proto::json::push_string(&mut body, &self.message);
        body.extend_from_slice(b"}}");
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

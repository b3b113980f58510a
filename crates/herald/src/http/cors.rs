//! CORS for every endpoint: browsers on the configured origins may call Herald from another origin.
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here with `204`; other requests get
//! `Access-Control-Allow-Origin` when their `Origin` is allowed. A disallowed origin gets no CORS header, which
//! makes the browser refuse the answer.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const EXPOSED: &str = "ETag, X-Herald-Event, X-Herald-Offset";
const ALLOWED_HEADERS: &str = "Content-Type, If-None-Match, Last-Event-ID, Authorization";

/// Whether a WebSocket handshake's `Origin` may connect: `*`, a listed origin, or the server's own origin
/// (`Host` under either scheme), so a page served through the same host always works. A handshake without
/// `Origin` does not come from a browser page and cannot be a cross-site hijack, so it is allowed.
pub fn websocket_origin_allowed(origins: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    if origins.iter().any(|o| o == "*" || o == origin) {
        return true;
    }
    let own = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    own.is_some_and(|authority| host.is_some_and(|host| authority.eq_ignore_ascii_case(host)))
}

fn allowed(origins: &[String], origin: &str) -> Option<HeaderValue> {
    if origins.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    origins.iter().any(|o| o == origin).then(|| HeaderValue::from_str(origin).ok()).flatten()
}

pub(crate) async fn cors(origins: Arc<Vec<String>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let allow = origin.as_deref().and_then(|o| allowed(&origins, o));
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };
    let headers = response.headers_mut();
    if origin.is_some() {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(allow) = allow {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
        if preflight {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
    response
}

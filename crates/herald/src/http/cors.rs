//! CORS for every endpoint: browsers on the configured origins may call Herald from another origin.
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here with `204`; other requests get
//! `Access-Control-Allow-Origin` when their `Origin` is allowed. A disallowed origin gets no CORS header, which
//! makes the browser refuse the answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

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

/// CORS over the whole router, as a tower layer: it allocates nothing for a request but the header value of an
/// allowed origin, where a middleware of `axum::middleware::from_fn` boxed the inner service and the future of
/// every request.
#[derive(Clone)]
pub(crate) struct CorsLayer {
    origins: Arc<Vec<String>>,
}

impl CorsLayer {
    /// CORS for `origins` (`*` for any).
    pub(crate) fn new(origins: Arc<Vec<String>>) -> Self {
        Self { origins }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors { inner, origins: self.origins.clone() }
    }
}

/// The service of [`CorsLayer`].
#[derive(Clone)]
pub(crate) struct Cors<S> {
    inner: S,
    origins: Arc<Vec<String>>,
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let added = Added {
            vary: origin.is_some(),
            allow: origin.and_then(|o| allowed(&self.origins, o)),
            preflight: request.method() == Method::OPTIONS
                && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD),
        };
        // A preflight is answered here, without the route.
        let inner = (!added.preflight).then(|| self.inner.call(request));
        CorsFuture { inner, added: Some(added) }
    }
}

/// What CORS adds to a response.
struct Added {
    /// The request named an `Origin`: the answer depends on it.
    vary: bool,
    allow: Option<HeaderValue>,
    preflight: bool,
}

impl Added {
    fn apply(self, response: &mut Response) {
        let headers = response.headers_mut();
        if self.vary {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
            if self.preflight {
                headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
                headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Cors`]: the route's answer (none for a preflight), and what CORS adds to it.
    pub(crate) struct CorsFuture<F> {
        #[pin]
        inner: Option<F>,
        added: Option<Added>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for CorsFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.as_pin_mut() {
            Some(inner) => match inner.poll(cx) {
                Poll::Ready(Ok(response)) => response,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            None => StatusCode::NO_CONTENT.into_response(),
        };
        if let Some(added) = this.added.take() {
            added.apply(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

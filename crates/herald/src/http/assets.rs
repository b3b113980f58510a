//! The demo page and the browser client, compiled into the binary so `herald demo` needs nothing on disk and
//! nothing from a CDN.
//!
//! The client is native ES modules with nothing to build: `herald.js` imports its modules by relative URL, so
//! they are served beside it, at `/v1/herald/<path>`, from a fixed table.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX: &str = include_str!("../../assets/demo/index.html");
const DEMO_JS: &str = include_str!("../../assets/demo/demo.js");
const DEMO_CSS: &str = include_str!("../../assets/demo/demo.css");
/// The browser client, `herald.js`, also served at `/v1/herald.js`.
pub const CLIENT_JS: &str = include_str!("../../../../clients/js/herald.js");

/// One module of the client: its path under `clients/js/herald/` (and `/v1/herald/`), and its text.
macro_rules! client_module {
    ($path:literal) => {
        ($path, include_str!(concat!("../../../../clients/js/herald/", $path)))
    };
}

/// Every module `herald.js` imports, directly or not. Nothing else under `/v1/herald/` answers, and nothing is
/// read from disk at run time; a module the client imports without a line here fails tests/browser_client.rs.
/// `sharing/worker.js` is the SharedWorker the client starts by URL: it must come from the page's origin.
const CLIENT_MODULES: [(&str, &str); 17] = [
    client_module!("backoff.js"),
    client_module!("channel-book.js"),
    client_module!("connection.js"),
    client_module!("error.js"),
    client_module!("http.js"),
    client_module!("presence.js"),
    client_module!("refusals.js"),
    client_module!("runtime.js"),
    client_module!("sharing/hub.js"),
    client_module!("sharing/links.js"),
    client_module!("sharing/tab.js"),
    client_module!("sharing/worker.js"),
    client_module!("tokens.js"),
    client_module!("transports.js"),
    client_module!("transports/poll.js"),
    client_module!("transports/sse.js"),
    client_module!("transports/websocket.js"),
];

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

fn file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub(crate) async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn client() -> Response {
    file(JAVASCRIPT, CLIENT_JS)
}

pub(crate) async fn client_module(Path(path): Path<String>) -> Result<Response, ApiError> {
    let (_, body) = CLIENT_MODULES.iter().find(|(name, _)| *name == path).ok_or_else(ApiError::not_found)?;
    Ok(file(JAVASCRIPT, body))
}

pub(crate) async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "demo.js" => Ok(file(JAVASCRIPT, DEMO_JS)),
        "demo.css" => Ok(file("text/css; charset=utf-8", DEMO_CSS)),
        _ => Err(ApiError::not_found()),
    }
}

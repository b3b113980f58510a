//! The demo page and the browser client, compiled into the binary so `herald demo` needs nothing on disk and
//! nothing from a CDN.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX: &str = include_str!("../../assets/demo/index.html");
const DEMO_JS: &str = include_str!("../../assets/demo/demo.js");
const DEMO_CSS: &str = include_str!("../../assets/demo/demo.css");
/// The browser client, `herald.js`, also served at `/v1/herald.js`.
pub const CLIENT_JS: &str = include_str!("../../../../clients/js/herald.js");

fn file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub(super) async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub(super) async fn client() -> Response {
    file("text/javascript; charset=utf-8", CLIENT_JS)
}

pub(super) async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "demo.js" => Ok(file("text/javascript; charset=utf-8", DEMO_JS)),
        "demo.css" => Ok(file("text/css; charset=utf-8", DEMO_CSS)),
        _ => Err(ApiError::not_found()),
    }
}

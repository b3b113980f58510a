//! Operations endpoints: `/healthz` for load balancers and `/metrics` for Prometheus.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;

pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    let engine = state.hub.engine_name();
    let (status, text) = if state.shutdown.is_triggered() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if !state.hub.healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = match state.hub.cluster() {
        None => format!(r#"{{"status":"{text}","engine":"{engine}"}}"#),
        Some(c) => format!(
            r#"{{"status":"{text}","engine":"{engine}","cluster":{{"shards":{},"reachable":{},"failovers":{}}}}}"#,
            c.shards, c.reachable, c.failovers
        ),
    };
    (status, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.hub.stats();
    let body = state.hub.metrics().render(stats.channels, stats.messages, stats.bytes);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

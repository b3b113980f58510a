//! The admin page (`/admin`) and its API, for an operator watching one node: connections by transport, the
//! busiest channels, subscriptions and messages by namespace, refusals, history memory and engine health.
//!
//! Off unless `admin_keys` are configured: then every path here answers `404 not_found`, like any unknown route.
//! The page itself holds no data and is served to anyone; it asks for a key, keeps it in the tab
//! (`sessionStorage`) and reads everything from the API with `Authorization: Bearer <admin key>`:
//! `GET /admin/api/snapshot` (one JSON snapshot) and `GET /admin/api/events` (Server-Sent Events: a `snapshot`
//! event every [`EVERY`] until the client leaves or the server shuts down). A missing or wrong key is
//! `401`, counted in `herald_refusals_total{reason="invalid_admin_key"}`. Like the demo, the page is compiled
//! into the binary and loads nothing from anywhere else.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use herald_proto::sse;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::credentials::authorization;
use super::AppState;
use crate::auth::bearer;
use crate::error::ApiError;
use crate::metrics::{Refusal, Transport, BUSIEST_WINDOW};

/// How often the event stream sends a snapshot.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// Channels listed as the busiest.
const BUSIEST_SHOWN: usize = 10;

const INDEX: &str = include_str!("../../assets/admin/index.html");
const ADMIN_JS: &str = include_str!("../../assets/admin/admin.js");
const ADMIN_CSS: &str = include_str!("../../assets/admin/admin.css");

/// The admin routes; each answers `404` while no admin key is configured.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/assets/{file}", get(asset))
        .route("/admin/api/snapshot", get(snapshot))
        .route("/admin/api/events", get(events))
}

/// This node's name: the machine's host name and the port it listens on.
pub(crate) fn node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_string());
    format!("{host}:{port}")
}

fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.hub.config().admin_keys.is_empty() {
        Err(ApiError::not_found())
    } else {
        Ok(())
    }
}

/// Lets the request through if it carries a configured admin key; compared in constant time, every key every time.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    enabled(state)?;
    let presented = authorization(headers).and_then(bearer);
    let found = presented.is_some_and(|presented| {
        let presented = Sha256::digest(presented.as_bytes());
        let mut found = false;
        for key in &state.hub.config().admin_keys {
            found |= bool::from(Sha256::digest(key.0.as_bytes()).ct_eq(&presented));
        }
        found
    });
    if found {
        return Ok(());
    }
    let (code, message) = match presented {
        None => ("admin_key_required", "send an admin key: `Authorization: Bearer <admin key>`"),
        Some(_) => ("invalid_admin_key", "the admin key is not valid"),
    };
    state.limits.refused(Refusal::AdminKey, || format!("admin API: {code}"));
    Err(ApiError::new(StatusCode::UNAUTHORIZED, code, message))
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(file("text/html; charset=utf-8", INDEX))
}

async fn asset(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    enabled(&state)?;
    match name.as_str() {
        "admin.js" => Ok(file("text/javascript; charset=utf-8", ADMIN_JS)),
        "admin.css" => Ok(file("text/css; charset=utf-8", ADMIN_CSS)),
        _ => Err(ApiError::not_found()),
    }
}

/// Everything the page shows about this node, now.
pub(crate) fn node_snapshot(state: &AppState) -> Value {
    let hub = &state.hub;
    let metrics = hub.metrics();
    let config = hub.config();
    let stats = hub.stats();
    let per_transport = |value: &dyn Fn(Transport) -> u64| {
        Value::Object(Transport::ALL.iter().map(|t| (t.label().to_string(), json!(value(*t)))).collect())
    };
    let busiest: Vec<Value> = metrics
        .busiest()
        .top(BUSIEST_SHOWN, Instant::now())
        .into_iter()
        .map(|(channel, rate)| json!({ "channel": channel.as_str(), "rate": (rate * 100.0).round() / 100.0 }))
        .collect();
    let namespaces: Vec<Value> = metrics
        .namespaces()
        .into_iter()
        .map(|(namespace, published, queued, subscriptions)| {
            json!({ "namespace": namespace, "published": published, "queued": queued, "subscriptions": subscriptions })
        })
        .collect();
    let refusals =
        Value::Object(Refusal::ALL.iter().map(|r| (r.label().to_string(), json!(metrics.refusals(*r)))).collect());
    json!({
        "node": &*state.node,
        "version": env!("CARGO_PKG_VERSION"),
        "time_ms": herald_proto::time::now_millis(),
        "engine": { "name": hub.engine_name(), "healthy": hub.healthy() },
        "shutting_down": state.shutdown.is_triggered(),
        "connections": per_transport(&|t| metrics.connections(t)),
        "delivered": per_transport(&|t| metrics.delivered_total(t)),
        "slow_consumers": per_transport(&|t| metrics.slow_consumers(t)),
        "published": metrics.published_total(),
        "busiest": busiest,
        "busiest_window_secs": BUSIEST_WINDOW.as_secs(),
        "namespaces": namespaces,
        "refusals": refusals,
        "history": {
            "channels": stats.channels,
            "messages": stats.messages,
            "bytes": stats.bytes,
            "max_bytes": config.max_history_bytes,
        },
    })
}

async fn snapshot(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = node_snapshot(&state).to_string();
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}

/// A `snapshot` event with `data:` the snapshot's JSON.
fn snapshot_event(state: &AppState) -> bytes::Bytes {
    bytes::Bytes::from(sse::event(None, Some("snapshot"), node_snapshot(state).to_string().as_bytes()))
}

async fn events(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let first = snapshot_event(&state);
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    let body = futures_util::stream::unfold((state, ticks, Some(first)), |(state, mut ticks, first)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), (state, ticks, None)));
        }
        tokio::select! {
            () = state.shutdown.cancelled() => None,
            _ = ticks.tick() => {
                let event = snapshot_event(&state);
                Some((Ok(event), (state, ticks, None)))
            }
        }
    });
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}

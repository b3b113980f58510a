//! Whether a new Pusher connection is served, decided before any byte of the protocol: its `protocol` version,
//! its app, its `Origin`, and the server's and the app's connection limits. A refusal is a close code, which the
//! transport (the WebSocket, an HTTP fallback's first answer) reports after a `pusher:error` with the same code:
//! an unknown key 4001, a disabled app 4003, an app at its connection quota 4004, a missing, malformed or
//! unsupported `protocol` 4008/4006/4007, a foreign `Origin` 4009 and a server at its connection limits 4100, each
//! counted in `herald_refusals_total`.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderValue};

use super::session::{Admissions, Session};
use super::wire::Close;
use super::PusherState;
use crate::http::cors::websocket_origin_allowed;
use crate::refusal::Refusal;

/// The protocol versions Herald speaks (pusher-js 8 speaks 7).
const PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

/// Decides whether the connection is served: its session, or the close that refuses it.
pub fn admit(
    state: &PusherState,
    key: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<Session, Close> {
    let protocol = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).find(|(k, _)| k == "protocol");
    match protocol.map(|(_, v)| v.parse::<u32>()) {
        None => return Err(Close::NoProtocol),
        Some(Err(_)) => return Err(Close::InvalidVersionFormat),
        Some(Ok(version)) if !PROTOCOLS.contains(&version) => return Err(Close::UnsupportedProtocol),
        Some(Ok(_)) => {}
    }
    let limits = &state.app.limits;
    let Some(app) = state.pusher.apps.by_key(key) else {
        limits.refused(Refusal::PusherUnknownApp, || format!("{ip}: a Pusher connection for an unknown key"));
        return Err(Close::UnknownApp);
    };
    if !app.enabled {
        return Err(Close::AppDisabled);
    }
    let text_header = |name| headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or("?"));
    let origin = text_header(header::ORIGIN);
    if !websocket_origin_allowed(&state.app.hub.config().cors_origins, origin, text_header(header::HOST)) {
        let origin = origin.unwrap_or_default().to_owned();
        limits.refused(Refusal::OriginForbidden, || format!("{ip}: a Pusher connection from origin {origin:?}"));
        return Err(Close::Unauthorized);
    }
    let server = limits.admit(ip).map_err(|_| Close::OverCapacity)?;
    let Some(app_admission) = app.admit() else {
        let (id, max) = (&app.id, app.limits.max_connections);
        limits.refused(Refusal::PusherConnections, || format!("{ip}: app {id} has its {max} connections"));
        return Err(Close::OverConnectionQuota);
    };
    let admissions = Admissions { server, app: app_admission };
    Ok(Session::new(state.app.clone(), state.pusher.clone(), app.clone(), ip, admissions))
}

//! What every HTTP handler shares, below them all: the state ([`AppState`]: the hub, the shutdown signal, the
//! access rules and the limits), extractors (the channel path, the client's address, its credentials, the
//! query), CORS, and the handlers that are not transports (publishing, channels' presence and occupancy,
//! `/healthz` and `/metrics`, the demo and the browser client's files). The routes that wire all of them to paths are in `server/routes.rs`, above both
//! this module and `transport/`; neither imports the other's importers.

pub(crate) mod admin;
pub mod assets;
pub(crate) mod channels;
pub mod client_ip;
pub mod cors;
pub mod credentials;
pub(crate) mod ops;
pub(crate) mod publish;
pub mod query;
pub mod websocket;
pub mod ws_socket;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use herald_proto::ChannelName;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::{Config, ConfigError, TransportKind};
use crate::error::ApiError;
use crate::heartbeat::Heartbeats;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::refusal::Refusals;
use crate::shutdown::Shutdown;
use crate::webhooks::Webhooks;

/// What every handler shares: one pointer, so that a connection keeps one word for it, not a handle of each part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
pub struct Shared {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The server's shutdown signal.
    pub shutdown: Shutdown,
    /// Who may publish and subscribe.
    pub auth: Arc<Auth>,
    /// How much anyone may take.
    pub limits: Arc<Limits>,
    /// This node's name on the admin page: its host name and port.
    pub node: Arc<str>,
    /// Who hears of channels' lifecycle.
    pub webhooks: Arc<Webhooks>,
    /// The one clock of every connection's heartbeat.
    pub heartbeats: Arc<Heartbeats>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The state of a server on `hub`, with the access rules, limits and webhooks of its configuration; a key, a
    /// proxy range or a webhook of the configuration that cannot be used is refused here.
    pub fn new(hub: Arc<Hub>, shutdown: Shutdown) -> Result<Self, ConfigError> {
        let port = hub.config().listen.port();
        Self::on_port(hub, shutdown, port)
    }

    /// [`AppState::new`] for a server that listens on `port` (the configured one may be 0).
    pub fn on_port(hub: Arc<Hub>, shutdown: Shutdown, port: u16) -> Result<Self, ConfigError> {
        let refusals = Arc::new(Refusals::new(hub.metrics().clone()));
        let auth = Arc::new(Auth::new(hub.config().clone(), refusals.clone())?);
        let limits = Arc::new(Limits::new(hub.config().clone(), refusals)?);
        let node = admin::node_name(port).into();
        let webhooks = Webhooks::new(hub.clone())?;
        let heartbeats = Arc::new(Heartbeats::new(heartbeat_horizon(hub.config()), shutdown.clone()));
        Ok(Self(Arc::new(Shared { hub, shutdown, auth, limits, node, webhooks, heartbeats })))
    }

    /// Refuses what [`AppState::new`] would refuse of `config`, without a hub.
    pub fn check(config: Arc<Config>) -> Result<(), ConfigError> {
        let refusals = Arc::new(Refusals::new(Arc::new(crate::metrics::Metrics::default())));
        Auth::new(config.clone(), refusals.clone())?;
        Limits::new(config.clone(), refusals)?;
        Webhooks::check(&config)
    }

    /// Fails with `404 transport_disabled` unless `kind` is enabled.
    pub fn require(&self, kind: TransportKind, name: &str) -> Result<(), ApiError> {
        if self.hub.config().enabled(kind) {
            Ok(())
        } else {
            Err(ApiError::transport_disabled(name))
        }
    }
}

/// The longest wait a connection puts on the heartbeat clock: its slots cover it, so none is woken early.
fn heartbeat_horizon(config: &Config) -> std::time::Duration {
    let pusher = &config.pusher;
    [config.ws_ping, config.sse_heartbeat, pusher.activity_timeout, pusher.pong_timeout]
        .into_iter()
        .max()
        .unwrap_or_default()
}

/// The `{channel}` path segment, percent-decoded and validated.
pub struct ChannelPath(pub ChannelName);

impl<S: Send + Sync> FromRequestParts<S> for ChannelPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_channel", e.body_text()))?;
        Ok(Self(ChannelName::new(&name)?))
    }
}

/// A response extension of a stream (SSE) whose writes may block on a peer that stopped reading: once the token
/// is cancelled (the subscriber fell behind its queue) the server stops writing and closes the connection,
/// rather than wait on the peer forever, since the body is not asked for its next chunk while a write is stuck.
#[derive(Clone)]
pub(crate) struct StopWriting(pub(crate) CancellationToken);

/// A request extension of an SSE request the server answers straight on its plain-TCP socket
/// (`server/event_stream.rs`): the socket, for the stream to lend to the hub's fan-out (`direct_writes`). The
/// server writes a chunk of the body only once it asked for it, so while the stream waits for its next chunk
/// everything it gave is written.
#[derive(Clone)]
pub struct SseSocket(pub(crate) std::sync::Arc<tokio::net::TcpStream>);

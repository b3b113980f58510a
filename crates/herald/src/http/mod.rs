//! The HTTP surface: routes, CORS, JSON errors for unknown routes and methods, and the shared state.
//!
//! Each transport is its own module under `transport/`; this module only wires them to paths. Handlers get an
//! [`AppState`] holding the hub and the shutdown signal.

pub mod assets;
pub mod client_ip;
pub mod cors;
pub mod credentials;
mod ops;
mod publish;
pub mod query;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use herald_proto::ChannelName;

use crate::auth::Auth;
use crate::config::TransportKind;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::refusal::Refusals;
use crate::shutdown::Shutdown;
use crate::transport::{latest, poll, sse, ws};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The server's shutdown signal.
    pub shutdown: Shutdown,
    /// Who may publish and subscribe.
    pub auth: Arc<Auth>,
    /// How much anyone may take.
    pub limits: Arc<Limits>,
}

impl AppState {
    /// The state of a server on `hub`, with the access rules and limits of its configuration.
    pub fn new(hub: Arc<Hub>, shutdown: Shutdown) -> Self {
        let refusals = Arc::new(Refusals::new(hub.metrics().clone()));
        let auth = Arc::new(Auth::new(hub.config().clone(), refusals.clone()));
        let limits = Arc::new(Limits::new(hub.config().clone(), refusals));
        Self { hub, shutdown, auth, limits }
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

/// All routes.
pub fn router(state: AppState) -> Router {
    let cors = Arc::new(state.hub.config().cors_origins.clone());
    Router::new()
        .route("/v1/channels/{channel}/messages", post(publish::publish).get(poll::channel_messages))
        .route("/v1/channels/{channel}/latest", get(latest::latest))
        .route("/v1/poll", get(poll::poll))
        .route("/v1/sse", get(sse::sse))
        .route("/v1/ws", get(ws::ws))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .route("/v1/herald.js", get(assets::client))
        .route("/v1/herald/{*module}", get(assets::client_module))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
        })
        .layer(axum::middleware::from_fn(move |req, next| cors::cors(cors.clone(), req, next)))
        .with_state(state)
}

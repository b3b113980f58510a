//! Binding, serving and stopping: the one place that owns the listener, the background sweeper and the
//! shutdown sequence.
//!
//! Every accepted connection is a task on the shutdown tracker. In the clear it is served by [`connection`]:
//! hyper's HTTP/1 connection for requests and WebSocket upgrades, or, for an SSE stream, [`event_stream`]
//! straight on the socket. With TLS (`tls_cert_file` or `acme_domains`) [`secure`] performs the handshake and
//! serves the protocol ALPN chose: HTTP/1.1 on hyper's connection, or HTTP/2 ([`http2`]). The ACME task and
//! the plain-HTTP redirect listener ([`redirect`]) are tasks on the same tracker.
//!
//! Shutdown: the token is cancelled (by a signal or by the caller), the listener stops accepting, held polls
//! answer at once, SSE streams end, WebSockets close with 1001, idle keep-alive connections close, and the
//! server waits up to `shutdown_grace` for the rest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::auth::Auth;
use crate::config::{Config, ConfigError};
use crate::engine::EngineError;
use crate::http::AppState;
use crate::hub::Hub;
use crate::pusher::Pusher;
use crate::shutdown::Shutdown;
use crate::tls::acme::Acme;
use crate::tls::{Tls, TlsError};
pub use routes::router;

mod connection;
mod event_stream;
mod head_errors;
mod http2;
mod redirect;
mod routes;
mod secure;

/// How often expired history is dropped and idle channels are freed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The pause after an accept that failed for want of resources (file descriptors, memory).
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// Connections waiting to be accepted, at most. A Rust listener gets 128 by default: a burst of clients
/// connecting at once (a restart, 2,000 long polls re-polling after one message) overflows it, and every
/// connection dropped that way waits a whole second for its SYN to be sent again. The kernel caps the
/// value at `net.core.somaxconn` (4096 by default), as it does for nginx's `backlog`.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, like `TcpListener::bind`).
fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine's store could not be reached.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A key or a proxy range of the configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// HTTPS could not be set up (a certificate file, the ACME cache).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Checks what starting with `config` would refuse beyond its values (which [`Config::load`] checked): its keys,
/// token key files and proxy ranges. Binds nothing and reaches no engine.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    AppState::check(Arc::new(config.clone()))
}

/// A bound, not yet running, server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    tls: Option<Arc<Tls>>,
    acme: Option<Acme>,
    redirect: Option<TcpListener>,
    pusher: Arc<Pusher>,
    /// Routes added by the binary (the demo's), beside Herald's own.
    extra: Option<axum::Router<AppState>>,
}

impl Server {
    /// Starts the configured engine, reads the access rules and limits of `config` (its keys and proxy ranges,
    /// which stop the start if one cannot be used) and binds `config.listen`.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let listen = config.listen;
        let (tls, acme) = match Tls::from_config(&config)? {
            Some((tls, acme)) => (Some(Arc::new(tls)), acme),
            None => (None, None),
        };
        let redirect_listen = config.redirect_listen;
        let config = Arc::new(config);
        let hub = Hub::new(config.clone(), |deliver, metrics| crate::engine::start(config, deliver, metrics)).await?;
        let listener = listen_on(listen).map_err(|source| StartError::Bind { addr: listen, source })?;
        let port = listener.local_addr().map_or(listen.port(), |bound| bound.port());
        let state = AppState::on_port(hub, Shutdown::new(), port)?;
        crate::pusher::register_webhooks(state.hub.config(), &state.webhooks)?;
        let pusher = Pusher::new(state.hub.config());
        let redirect = match redirect_listen {
            Some(addr) => Some(listen_on(addr).map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        Ok(Self { listener, state, tls, acme, redirect, pusher, extra: None })
    }

    /// The plain-HTTP redirect listener's address, when there is one.
    pub fn redirect_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.redirect.as_ref().map(TcpListener::local_addr)
    }

    /// The TLS side, when `listen` speaks HTTPS (to read the certificate files again on SIGHUP).
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// Serves `routes` too, with the same state (the demo's own endpoints); none may be a path Herald serves.
    pub fn add_routes(&mut self, routes: axum::Router<AppState>) {
        self.extra = Some(match self.extra.take() {
            Some(extra) => extra.merge(routes),
            None => routes,
        });
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The hub, e.g. for an embedded publisher.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.state.hub
    }

    /// Who may publish and subscribe, as read from the configuration.
    pub fn auth(&self) -> &Auth {
        &self.state.auth
    }

    /// The webhooks: where another protocol registers its own endpoints (Pusher apps) and emits its events.
    pub fn webhooks(&self) -> &Arc<crate::webhooks::Webhooks> {
        &self.state.webhooks
    }

    /// The shutdown signal: trigger it to stop the server.
    pub fn shutdown(&self) -> &Shutdown {
        &self.state.shutdown
    }

    /// Serves until shutdown is triggered, then drains for at most `shutdown_grace`. Returns whether every
    /// request and connection finished within that time.
    pub async fn run(self) -> std::io::Result<bool> {
        let Self { listener, state, tls, acme, redirect, pusher, extra } = self;
        let (hub, shutdown) = (state.hub.clone(), state.shutdown.clone());
        let config = hub.config().clone();
        let sweeper = shutdown.tracker().spawn(sweep(hub.clone(), shutdown.clone()));
        if let Some(acme) = acme {
            shutdown.tracker().spawn(acme.run(shutdown.clone()));
        }
        shutdown.tracker().spawn(pusher.follow_signals(&state));
        state.webhooks.start(&shutdown);
        let app = match extra {
            Some(extra) => extra.with_state(state.clone()).merge(router(state, pusher)),
            None => router(state, pusher),
        };
        let metrics = hub.metrics().clone();
        let serving =
            connection::Serving { app, shutdown: shutdown.clone(), head_timeout: config.request_head_timeout, metrics };
        if let Some(redirect) = redirect {
            let challenges = tls.as_ref().and_then(|tls| tls.challenges().cloned());
            let https_port = listener.local_addr()?.port();
            shutdown.tracker().spawn(redirect::serve(redirect, https_port, challenges, serving.clone()));
        }
        let secure = tls.map(|tls| secure::Secure {
            tls,
            hsts: (config.hsts_max_age_secs > 0)
                .then(|| axum::http::HeaderValue::from_str(&format!("max-age={}", config.hsts_max_age_secs)).ok())
                .flatten(),
            http2_max_streams: config.http2_max_streams,
            http2_ping: config.ws_ping,
        });
        accept(&listener, &serving, secure.as_ref()).await;
        drop(listener);
        // One grace period for everything, counted from the shutdown signal.
        let deadline = tokio::time::Instant::now() + config.shutdown_grace;
        let drained = shutdown.drain_until(deadline).await;
        sweeper.abort();
        // Connections that were members went without their leaves: the engine lets them go after the grace.
        hub.retire().await;
        hub.close().await;
        Ok(drained)
    }
}

/// Accepts connections until shutdown, each served by its own task on the shutdown tracker.
async fn accept(listener: &TcpListener, serving: &connection::Serving, secure: Option<&secure::Secure>) {
    let shutdown = &serving.shutdown;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Frames are batched before each write; waiting for an ACK (Nagle) only adds latency.
                let _ = stream.set_nodelay(true);
                match secure {
                    None => shutdown.tracker().spawn(connection::serve(stream, peer, serving.clone())),
                    Some(secure) => {
                        shutdown.tracker().spawn(secure::serve(stream, peer, serving.clone(), secure.clone()))
                    }
                };
            }
            Err(error) => accept_failed(error).await,
        }
    }
}

/// A failed accept: a connection that went away before it was accepted is nobody's concern; anything else
/// (out of file descriptors, above all) is logged and retried after a pause rather than in a busy loop.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "cannot accept connections; retrying in {ACCEPT_RETRY:?}");
    tokio::time::sleep(ACCEPT_RETRY).await;
}

async fn sweep(hub: Arc<Hub>, shutdown: Shutdown) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => hub.sweep(),
        }
    }
}

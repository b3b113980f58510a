//! Binding, serving and stopping: the one place that owns the listener, the background sweeper and the
//! shutdown sequence.
//!
//! Shutdown: the token is cancelled (by a signal or by the caller), the listener stops accepting, held polls
//! answer at once, SSE streams end, WebSockets close with 1001, and the server waits up to
//! `shutdown_grace` for the rest.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::config::Config;
use crate::engine::EngineError;
use crate::http::{router, AppState};
use crate::hub::Hub;
use crate::shutdown::Shutdown;

/// How often expired history is dropped and idle channels are freed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound, not yet running, server.
pub struct Server {
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: Shutdown,
}

impl Server {
    /// Starts the configured engine and binds `config.listen`.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let listen = config.listen;
        let hub = Hub::start(Arc::new(config)).await?;
        let listener = listen_on(listen).map_err(|source| StartError::Bind { addr: listen, source })?;
        Ok(Self { listener, hub, shutdown: Shutdown::new() })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The hub, e.g. for an embedded publisher.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The shutdown signal: trigger it to stop the server.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Serves until shutdown is triggered, then drains for at most `shutdown_grace`. Returns whether every
    /// request and connection finished within that time.
    pub async fn run(self) -> std::io::Result<bool> {
        let Self { listener, hub, shutdown } = self;
        let grace = hub.config().shutdown_grace;
        let sweeper = shutdown.tracker().spawn(sweep(hub.clone(), shutdown.clone()));
        let app = router(AppState::new(hub, shutdown.clone()));
        let stop = shutdown.clone();
        // The peer's address feeds the per-address connection limit.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve =
            axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).into_future();
        tokio::pin!(serve);
        let ended = tokio::select! {
            served = &mut serve => Some(served),
            () = shutdown.cancelled() => None,
        };
        // One grace period for everything, counted from the shutdown signal.
        let deadline = tokio::time::Instant::now() + grace;
        let served_in_time = match ended {
            Some(served) => served.map(|()| true),
            None => match tokio::time::timeout_at(deadline, serve).await {
                Ok(served) => served.map(|()| true),
                // Connections that outlive the grace period are not waited for.
                Err(_elapsed) => Ok(false),
            },
        };
        shutdown.trigger();
        let drained = shutdown.drain_until(deadline).await;
        sweeper.abort();
        served_in_time.map(|in_time| in_time && drained)
    }
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

//! One shutdown signal for the whole server.
//!
//! Every long-lived task (a WebSocket, an SSE stream, a held poll, the sweeper) selects on
//! [`Shutdown::cancelled`] and is spawned on, or tracked by, the same [`TaskTracker`], so stopping is: cancel
//! the token, then wait for the tracker with a deadline.

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's shutdown token and the tracker of its long-lived tasks. Cheap to clone.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A new, not yet triggered, shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts shutting down.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when shutdown starts.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// The token, for APIs that take one.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The tracker of long-lived tasks.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Waits for every tracked task until `deadline`. Returns whether all finished in time.
    pub async fn drain_until(&self, deadline: Instant) -> bool {
        self.tracker.close();
        tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_ok()
    }
}

//! Refusals: every request turned away for its credentials or for a limit is counted in
//! `herald_refusals_total{reason}` and logged.
//!
//! Logging is throttled per reason: the first refusal is logged at once, then at most one line every
//! [`LOG_EVERY`], which says how many more refusals of that reason there were in between. A flood of bad requests
//! thus costs one line per reason every ten seconds, not one per request, and the operator still learns about it.
//! Log lines never carry a key or a token.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Metrics;
pub use crate::metrics::Refusal;

/// At most one log line per reason this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// When the next line of one reason may be logged, and how many refusals were not logged since the last one.
#[derive(Default)]
struct Gate {
    next: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

/// Counts and logs refusals.
pub struct Refusals {
    metrics: Arc<Metrics>,
    gates: [Gate; Refusal::ALL.len()],
}

impl Refusals {
    /// Refusals counted on `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics, gates: Default::default() }
    }

    /// Records one refusal; `detail` (which must not contain a secret) is built only when a line is logged.
    pub fn record(&self, reason: Refusal, detail: impl FnOnce() -> String) {
        self.metrics.refused(reason);
        let gate = &self.gates[reason.index()];
        let now = Instant::now();
        {
            let mut next = gate.next.lock().unwrap_or_else(PoisonError::into_inner);
            if next.is_some_and(|at| now < at) {
                gate.unlogged.fetch_add(1, Relaxed);
                return;
            }
            *next = Some(now + LOG_EVERY);
        }
        let more = gate.unlogged.swap(0, Relaxed);
        let detail = detail();
        if reason.is_limit() {
            tracing::warn!(reason = reason.label(), unlogged_since_last_line = more, "limit reached: {detail}");
        } else {
            tracing::info!(reason = reason.label(), unlogged_since_last_line = more, "refused: {detail}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_counted_in_full_but_logged_once_per_interval() {
        let metrics = Arc::new(Metrics::default());
        let refusals = Refusals::new(metrics.clone());
        let logged = std::cell::Cell::new(0);
        for _ in 0..1000 {
            refusals.record(Refusal::Connections, || {
                logged.set(logged.get() + 1);
                String::new()
            });
        }
        assert_eq!((metrics.refusals(Refusal::Connections), logged.get()), (1000, 1));
        tokio::time::advance(LOG_EVERY).await;
        refusals.record(Refusal::Connections, || {
            logged.set(logged.get() + 1);
            String::new()
        });
        assert_eq!(logged.get(), 2);
        assert_eq!(refusals.gates[Refusal::Connections.index()].unlogged.load(Relaxed), 0);
    }
}

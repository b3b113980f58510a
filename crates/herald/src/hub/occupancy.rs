//! This node's subscriber counts, reported to the engine's presence store, which adds up every node's.
//!
//! A subscribe or an unsubscribe only marks its channel as changed ([`Reports::changed`], no waiting, no I/O);
//! one task per hub reports the counts of the changed channels, so a thousand clients arriving at once cost a
//! few writes to Redis, not a thousand. A count that falls to zero is reported only once it has stayed zero for
//! `presence_grace`: a long poll between two requests, or a page that reloads, does not vacate its channel. A
//! report that fails (Redis unreachable) is tried again a second later.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use herald_proto::ChannelName;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Hub;

/// How long a failed report waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The channels whose count changed since the task last looked.
#[derive(Default)]
pub(super) struct Reports {
    changed: Mutex<HashSet<ChannelName>>,
    wake: Notify,
}

impl Reports {
    /// `channel` gained or lost a subscriber on this node.
    pub(super) fn changed(&self, channel: &ChannelName) {
        let first = self.changed.lock().unwrap_or_else(PoisonError::into_inner).insert(channel.clone());
        if first {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> HashSet<ChannelName> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Reports the hub's counts until the hub is gone.
pub(super) async fn report(hub: Weak<Hub>) {
    // What the store was last told, per channel it was told something of.
    let mut reported: HashMap<ChannelName, u64> = HashMap::new();
    // Channels whose count is zero here, with when to report it.
    let mut vacating: HashMap<ChannelName, Instant> = HashMap::new();
    let mut retry_at: Option<Instant> = None;
    loop {
        let next = vacating.values().copied().chain(retry_at).min();
        let wake = match hub.upgrade() {
            Some(hub) => hub.occupancy.clone(),
            None => return,
        };
        tokio::select! {
            () = wake.wake.notified() => {}
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
        }
        let Some(hub) = hub.upgrade() else { return };
        let now = Instant::now();
        let mut due = hub.occupancy.take();
        due.extend(vacating.iter().filter(|(_, at)| **at <= now).map(|(channel, _)| channel.clone()));
        if retry_at.is_some_and(|at| at <= now) {
            retry_at = None;
        }
        let grace = hub.config.presence_grace;
        for channel in due {
            let count = hub.subscribers.count(&channel) as u64;
            let report = match (count, reported.get(&channel)) {
                (0, None) => None,
                (0, Some(_)) => match vacating.get(&channel) {
                    None if !grace.is_zero() => {
                        vacating.insert(channel.clone(), now + grace);
                        None
                    }
                    Some(at) if *at > now => None,
                    _ => Some(0),
                },
                (n, Some(&last)) if n == last => None,
                (n, _) => Some(n),
            };
            if count > 0 || report.is_some() {
                vacating.remove(&channel);
            }
            let Some(n) = report else { continue };
            match hub.presence.set_subscribers(&channel, n).await {
                Ok(()) if n == 0 => {
                    reported.remove(&channel);
                }
                Ok(()) => {
                    reported.insert(channel, n);
                }
                Err(err) => {
                    tracing::warn!(%err, %channel, "reporting a subscriber count failed; retrying");
                    hub.occupancy.changed.lock().unwrap_or_else(PoisonError::into_inner).insert(channel);
                    retry_at = Some(now + RETRY);
                }
            }
        }
    }
}

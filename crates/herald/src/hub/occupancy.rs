//! This node's subscriber counts, reported to the engine's presence store, which adds up every node's.
//!
//! A subscribe or an unsubscribe only marks its channel as changed ([`Reports::changed`], no waiting, no I/O);
//! one task per hub reports the counts of the changed channels, so a thousand clients arriving at once cost a
//! few writes to Redis, not a thousand. A count that falls to zero is reported only once it has stayed zero for
//! `presence_grace`: a long poll between two requests, or a page that reloads, does not vacate its channel. A
//! report that fails (Redis unreachable) is tried again a second later.
//!
//! Two rules keep a channel's transitions in a sensible order for whoever hears of them (webhooks): a join first
//! reports its channel's count ([`Hub::report_before_join`]), so a channel is occupied before it has members; and
//! a zero is not reported while a leave of the channel is still to run (the grace of both ends together), so a
//! channel's last members are removed before it is vacated.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use herald_proto::ChannelName;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Hub, HubError};

/// How long a failed report waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a zero waits for the channel's leaves to have run.
const AFTER_LEAVES: Duration = Duration::from_millis(50);

/// The channels whose count changed since the task last looked, what the store was told, and the leaves to come.
#[derive(Default)]
pub(super) struct Reports {
    changed: Mutex<HashSet<ChannelName>>,
    wake: Notify,
    /// What the store was last told, per channel it was told something of.
    reported: Mutex<HashMap<ChannelName, u64>>,
    /// Leaves of presence scheduled and not run yet, per channel.
    leaving: Mutex<HashMap<ChannelName, usize>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Map insertions and removals only: consistent whenever they stop.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reports {
    /// `channel` gained or lost a subscriber on this node.
    pub(super) fn changed(&self, channel: &ChannelName) {
        if lock(&self.changed).insert(channel.clone()) {
            self.wake.notify_one();
        }
    }

    /// A leave of `channel` is scheduled (`true`) or has run (`false`).
    pub(super) fn leaving(&self, channel: &ChannelName, scheduled: bool) {
        let mut leaving = lock(&self.leaving);
        let count = leaving.entry(channel.clone()).or_default();
        if scheduled {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                leaving.remove(channel);
            }
        }
    }

    fn take(&self) -> HashSet<ChannelName> {
        std::mem::take(&mut *lock(&self.changed))
    }
}

impl Hub {
    /// Tells the store `count` subscribers of `channel` here, and remembers it.
    async fn report(&self, channel: &ChannelName, count: u64) -> Result<(), HubError> {
        self.presence.set_subscribers(channel, count).await?;
        let mut reported = lock(&self.occupancy.reported);
        if count == 0 {
            reported.remove(channel);
        } else {
            reported.insert(channel.clone(), count);
        }
        Ok(())
    }

    /// Before a join on `channel`: its count, unless the store has it already (a channel is occupied before it
    /// has members).
    pub(super) async fn report_before_join(&self, channel: &ChannelName) -> Result<(), HubError> {
        let count = self.subscribers.count(channel) as u64;
        let known = lock(&self.occupancy.reported).get(channel).copied();
        if count == 0 || known == Some(count) {
            return Ok(());
        }
        self.report(channel, count).await
    }
}

/// Reports the hub's counts until the hub is gone.
pub(super) async fn report(hub: Weak<Hub>) {
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
            let known = lock(&hub.occupancy.reported).get(&channel).copied();
            let report = match (count, known) {
                (0, None) => None,
                (0, Some(_)) => match vacating.get(&channel) {
                    None if !grace.is_zero() => {
                        vacating.insert(channel.clone(), now + grace);
                        None
                    }
                    Some(at) if *at > now => None,
                    _ if lock(&hub.occupancy.leaving).contains_key(&channel) => {
                        vacating.insert(channel.clone(), now + AFTER_LEAVES);
                        None
                    }
                    _ => Some(0),
                },
                (n, Some(last)) if n == last => None,
                (n, _) => Some(n),
            };
            if count > 0 || report.is_some() {
                vacating.remove(&channel);
            }
            let Some(n) = report else { continue };
            if let Err(err) = hub.report(&channel, n).await {
                tracing::warn!(%err, %channel, "reporting a subscriber count failed; retrying");
                lock(&hub.occupancy.changed).insert(channel);
                retry_at = Some(now + RETRY);
            }
        }
    }
}

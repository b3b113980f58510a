//! Following Redis Pub/Sub: one subscription per watched channel on this node, and catch-up after a drop.
//!
//! Transports register interest through [`Watches`] (a count per channel); one task owns the Pub/Sub connection
//! and makes Redis's subscriptions match the wanted set whenever it changes. `watch` returns once the channel's
//! subscription is confirmed, so a transport that reads history afterwards cannot miss a message in between.
//! When the connection drops, the task reconnects with backoff, subscribes again, and for each channel it had,
//! hands the retained history to the delivery callback: subscribers' trackers drop what they already have and
//! deliver what they missed, or report a reset when Redis lost it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use herald_proto::ChannelName;
use redis::aio::PubSub;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{scripts, Inner};
use crate::encoded::EncodedMessage;
use crate::engine::Start;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The channels this node wants to follow, and which of them Redis confirmed.
#[derive(Default)]
pub(super) struct Watches {
    state: Mutex<State>,
    /// Wakes the Pub/Sub task when `wanted` changes.
    changed: Notify,
    /// Bumped whenever `live` or `connected` changes, to wake waiting `watch` calls.
    progress: watch::Sender<u64>,
    connected: AtomicBool,
}

#[derive(Default)]
struct State {
    wanted: HashMap<ChannelName, usize>,
    live: HashSet<ChannelName>,
}

impl Watches {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(super) fn len(&self) -> usize {
        self.lock().wanted.len()
    }

    pub(super) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Adds one subscriber of `channel`; completes when Redis confirmed the subscription, or at once while
    /// Redis is unreachable (catch-up covers what happens until it is back).
    pub(super) async fn watch(&self, channel: &ChannelName) {
        let mut progress = self.progress.subscribe();
        let first = {
            let mut state = self.lock();
            let count = state.wanted.entry(channel.clone()).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            self.changed.notify_one();
        }
        loop {
            if self.lock().live.contains(channel) || !self.connected() {
                return;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    }

    pub(super) fn unwatch(&self, channel: &ChannelName) {
        let mut state = self.lock();
        if let Some(count) = state.wanted.get_mut(channel) {
            *count -= 1;
            if *count == 0 {
                state.wanted.remove(channel);
                drop(state);
                self.changed.notify_one();
            }
        }
    }

    pub(super) fn set_connected(&self, connected: bool) {
        if self.connected.swap(connected, Ordering::Relaxed) != connected {
            if connected {
                tracing::info!("redis pub/sub connected");
            } else {
                tracing::error!("redis pub/sub lost: live messages from other nodes wait until it is back");
                self.lock().live.clear();
            }
            self.bump();
        }
    }
}

/// Runs until `stop`: keeps a Pub/Sub connection, its subscriptions, and delivers what arrives. `first` is the
/// connection made at start (so the engine starts connected and `watch` waits for real confirmations).
pub(super) async fn follow(
    client: redis::Client,
    first: PubSub,
    inner: Arc<Inner>,
    watches: Arc<Watches>,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut connection = Some(first);
    loop {
        let resumed = connection.is_none();
        let connection = match connection.take() {
            Some(connection) => connection,
            None => {
                let attempt = tokio::select! {
                    () = stop.cancelled() => return,
                    attempt = client.get_async_pubsub() => attempt,
                };
                match attempt {
                    Ok(connection) => connection,
                    Err(_) => {
                        watches.set_connected(false);
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        backoff = FIRST_BACKOFF;
        if resumed {
            inner.ping().await;
        }
        watches.set_connected(true);
        let (mut sink, mut stream) = connection.split();
        let mut subscribed: HashSet<ChannelName> = HashSet::new();
        // After a drop, every channel subscribed again is caught up: messages may have been stored while this
        // node was not listening.
        let mut catching_up = resumed;
        'session: loop {
            let wanted: Vec<ChannelName> = watches.lock().wanted.keys().cloned().collect();
            let new: Vec<&ChannelName> = wanted.iter().filter(|c| !subscribed.contains(*c)).collect();
            for channel in new {
                if sink.subscribe(inner.live_channel(channel)).await.is_err() {
                    break 'session;
                }
                subscribed.insert(channel.clone());
                watches.lock().live.insert(channel.clone());
                watches.bump();
                if catching_up {
                    catch_up(&inner, channel).await;
                }
            }
            catching_up = false;
            let gone: Vec<ChannelName> = subscribed.iter().filter(|c| !wanted.contains(c)).cloned().collect();
            for channel in gone {
                if sink.unsubscribe(inner.live_channel(&channel)).await.is_err() {
                    break 'session;
                }
                subscribed.remove(&channel);
                watches.lock().live.remove(&channel);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = watches.changed.notified() => {}
                message = stream.next() => {
                    let Some(message) = message else { break 'session };
                    announce(&inner, message.get_channel_name(), message.get_payload_bytes());
                }
            }
        }
        watches.set_connected(false);
    }
}

/// Delivers one Pub/Sub announcement.
fn announce(inner: &Inner, live: &str, payload: &[u8]) {
    let Some(channel) = inner.channel_of(live) else { return };
    match scripts::decode_announcement(&channel, payload) {
        Ok(message) => (inner.deliver)(&EncodedMessage::new(message)),
        Err(err) => tracing::warn!(%err, %channel, "skipping an unreadable announcement"),
    }
}

/// Hands `channel`'s retained history to the delivery callback after Pub/Sub was down.
async fn catch_up(inner: &Inner, channel: &ChannelName) {
    let size = inner.config.namespace(channel).history_size;
    match inner.read(channel, Start::Newest(size), size).await {
        Ok(read) => read.messages.iter().for_each(|m| (inner.deliver)(m)),
        Err(err) => tracing::warn!(%err, %channel, "catch-up after a pub/sub drop failed; the next message will"),
    }
}

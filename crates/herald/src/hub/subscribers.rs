//! Who listens to which channel on this node, and the fan-out of a stored message to them. (The hub keeps a
//! second registry of the same kind for those who follow channels' presence, fed with changes of members.)
//!
//! Fan-out never waits: each subscriber has one bounded queue per connection and gets the message with
//! `try_send`. A full queue marks the connection as a slow consumer (its token is cancelled, it disconnects and
//! resumes from its cursor); a closed queue belongs to a connection that is going away and is skipped.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock};

use herald_proto::ChannelName;
use tokio_util::sync::CancellationToken;

use super::queue::{QueueSender, Queued, TrySendError};
use crate::encoded::EncodedMessage;
use crate::engine::presence::PresenceEvent;
use crate::metrics::{Metrics, Transport};

const SHARDS: usize = 64;

/// One connection's registration on a channel.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) connection: u64,
    pub(crate) queue: QueueSender,
    pub(crate) slow: CancellationToken,
    pub(crate) transport: Transport,
}

type Shard = RwLock<HashMap<ChannelName, Vec<Subscriber>>>;

/// The registry of local subscribers, sharded by channel.
pub(crate) struct Subscribers {
    shards: Vec<Shard>,
    hasher: RandomState,
    metrics: Arc<Metrics>,
}

impl Subscribers {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::default()).collect(), hasher: RandomState::new(), metrics }
    }

    fn shard(&self, channel: &ChannelName) -> &Shard {
        &self.shards[(self.hasher.hash_one(channel.as_str()) % SHARDS as u64) as usize]
    }

    pub(crate) fn add(&self, channel: &ChannelName, subscriber: Subscriber) {
        let mut shard = self.shard(channel).write().unwrap_or_else(PoisonError::into_inner);
        shard.entry(channel.clone()).or_default().push(subscriber);
    }

    pub(crate) fn remove(&self, channel: &ChannelName, connection: u64) {
        let mut shard = self.shard(channel).write().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = shard.get_mut(channel) {
            list.retain(|s| s.connection != connection);
            if list.is_empty() {
                shard.remove(channel);
            }
        }
    }

    pub(crate) fn is_watched(&self, channel: &ChannelName) -> bool {
        self.shard(channel).read().unwrap_or_else(PoisonError::into_inner).contains_key(channel)
    }

    /// How many subscribers `channel` has on this node.
    pub(crate) fn count(&self, channel: &ChannelName) -> usize {
        self.shard(channel).read().unwrap_or_else(PoisonError::into_inner).get(channel).map_or(0, Vec::len)
    }

    /// Hands `message` to every subscriber of its channel without waiting (timed, unless nobody subscribes).
    pub(crate) fn deliver(&self, message: &Arc<EncodedMessage>) {
        let channel = &message.message.channel;
        match self.offer(channel, || Queued::Message(message.clone())) {
            None => self.metrics.fanned_out(channel, 0, None),
            // Timed from the message's own instant: one clock reading per fan-out, not two.
            Some(queued) => self.metrics.fanned_out(channel, queued, Some(message.stored_at)),
        }
    }

    /// Hands a change of members to every subscriber of its channel without waiting.
    pub(crate) fn deliver_presence(&self, event: &Arc<PresenceEvent>) {
        self.offer(&event.channel, || Queued::Presence(event.clone()));
    }

    /// Offers `item()` to every subscriber of `channel`: how many took it (`None`: nobody subscribes here). The
    /// first subscriber found too slow is logged, after the lock, with how many more there were.
    fn offer(&self, channel: &ChannelName, item: impl Fn() -> Queued) -> Option<u64> {
        let shard = self.shard(channel).read().unwrap_or_else(PoisonError::into_inner);
        let list = shard.get(channel)?;
        let mut queued = 0;
        let mut slow: Option<(u64, Transport, u64)> = None;
        for subscriber in list {
            match subscriber.queue.try_send(item()) {
                Ok(()) => queued += 1,
                Err(TrySendError::Closed) => {}
                Err(TrySendError::Full) => {
                    if !subscriber.slow.is_cancelled() {
                        subscriber.slow.cancel();
                        self.metrics.slow_consumer(subscriber.transport);
                        match slow.as_mut() {
                            Some((_, _, more)) => *more += 1,
                            None => slow = Some((subscriber.connection, subscriber.transport, 0)),
                        }
                    }
                }
            }
        }
        drop(shard);
        if let Some((connection, transport, more)) = slow {
            tracing::info!(
                connection,
                transport = transport.label(),
                channel = %channel,
                reason = "slow_consumer",
                more_on_this_message = more,
                "disconnecting a subscriber whose queue is full"
            );
        }
        Some(queued)
    }
}

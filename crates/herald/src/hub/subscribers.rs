//! Who listens to which channel on this node, and the fan-out of a stored message to them. (The hub keeps a
//! second registry of the same kind for those who follow channels' presence, fed with changes of members.)
//!
//! Fan-out never waits: each subscriber has one bounded queue per connection and gets the message with
//! `offer` (or, with `direct_writes`, has it written straight into its lent socket, `direct.rs`). A full queue
//! marks the connection as a slow consumer (its token is cancelled, it disconnects and resumes from its cursor); a
//! closed queue belongs to a connection that is going away and is skipped.
//!
//! A channel's subscribers are a plain `Vec`, which the fan-out walks, beside an index from connection to place:
//! a removal swaps the last subscriber into the leaver's place, so a disconnect storm of n subscribers costs O(n),
//! not the O(n²) of searching the list for each, and the fan-out's walk is what it was.
//!
//! The fan-out walks a snapshot of that `Vec` (an `Arc` cloned under the shard's read lock), not the `Vec` under
//! the lock: with direct writes a walk is one `write` per subscriber, 10–70 ms at 10,000 subscribers, and a
//! subscribe or unsubscribe of any channel of the same shard would otherwise block its runtime thread that long.
//! A change made while a walk holds the snapshot copies the `Vec` first (`Arc::make_mut`), and only then.
//! Exactly-once is unchanged: a message is stored before its fan-out takes the snapshot, so a subscriber added
//! after the snapshot finds the message in the history it reads after registering, as it did when its
//! registration waited for the walk; one removed after the snapshot may still be offered the message, as it was
//! when the walk came first, and its subscription drops it (a channel it no longer follows) or its queue is closed.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock};

use herald_proto::ChannelName;
use tokio_util::sync::CancellationToken;

use super::queue::{Offered, QueueSender, Queued, TrySendError};
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

/// One channel's subscribers: the list the fan-out walks, and where each connection is in it.
#[derive(Default)]
struct Listeners {
    /// Shared with the fan-outs walking it; copied on change only while one does.
    list: Arc<Vec<Subscriber>>,
    at: HashMap<u64, usize>,
}

impl Listeners {
    /// Adds `subscriber`, or replaces the registration its connection already had (one per channel).
    fn add(&mut self, subscriber: Subscriber) {
        let list = Arc::make_mut(&mut self.list);
        match self.at.get(&subscriber.connection) {
            Some(&i) => list[i] = subscriber,
            None => {
                self.at.insert(subscriber.connection, list.len());
                list.push(subscriber);
            }
        }
    }

    /// Removes `connection`'s registration, moving the last one into its place.
    fn remove(&mut self, connection: u64) {
        let Some(i) = self.at.remove(&connection) else { return };
        let list = Arc::make_mut(&mut self.list);
        list.swap_remove(i);
        if let Some(moved) = list.get(i) {
            self.at.insert(moved.connection, i);
        }
    }
}

type Shard = RwLock<HashMap<ChannelName, Listeners>>;

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
        shard.entry(channel.clone()).or_default().add(subscriber);
    }

    pub(crate) fn remove(&self, channel: &ChannelName, connection: u64) {
        let mut shard = self.shard(channel).write().unwrap_or_else(PoisonError::into_inner);
        if let Some(listeners) = shard.get_mut(channel) {
            listeners.remove(connection);
            if listeners.list.is_empty() {
                shard.remove(channel);
            }
        }
    }

    pub(crate) fn is_watched(&self, channel: &ChannelName) -> bool {
        self.shard(channel).read().unwrap_or_else(PoisonError::into_inner).contains_key(channel)
    }

    /// How many subscribers `channel` has on this node.
    pub(crate) fn count(&self, channel: &ChannelName) -> usize {
        self.shard(channel).read().unwrap_or_else(PoisonError::into_inner).get(channel).map_or(0, |l| l.list.len())
    }

    /// A snapshot of `channel`'s subscribers here (`None`: nobody subscribes here).
    pub(crate) fn listeners(&self, channel: &ChannelName) -> Option<Arc<Vec<Subscriber>>> {
        Some(self.shard(channel).read().unwrap_or_else(PoisonError::into_inner).get(channel)?.list.clone())
    }

    /// Hands `message` to every subscriber of its channel without waiting (timed, unless nobody subscribes).
    /// With `write`, the message is written into the sockets lent to the fan-out (`direct.rs`) where it can be;
    /// without, it is queued for every subscriber.
    pub(crate) fn deliver(&self, message: &Arc<EncodedMessage>, write: bool) {
        self.deliver_to(self.listeners(&message.message.channel).as_deref().map(Vec::as_slice), message, write)
    }

    /// [`Subscribers::deliver`] to a snapshot of the channel's subscribers taken after the message was stored.
    pub(crate) fn deliver_to(&self, list: Option<&[Subscriber]>, message: &Arc<EncodedMessage>, write: bool) {
        let channel = &message.message.channel;
        let offered = list.map(|list| {
            self.offer_to(list, channel, Some(message).filter(|_| write), || Queued::Message(message.clone()))
        });
        match offered {
            None => self.metrics.fanned_out(channel, 0, None),
            Some(taken) => {
                for (transport, written) in
                    [(Transport::WebSocket, taken.ws_written), (Transport::Sse, taken.sse_written)]
                {
                    if written > 0 {
                        self.metrics.written_by_fanout(transport, written, message.stored_at);
                    }
                }
                // Timed from the message's own instant: one clock reading per fan-out, not two. A message written
                // into a socket counts as queued for its namespace too: it was handed to that subscriber.
                let handed = taken.queued + taken.ws_written + taken.sse_written;
                self.metrics.fanned_out(channel, handed, Some(message.stored_at))
            }
        }
    }

    /// Hands a change of members to every subscriber of its channel without waiting.
    pub(crate) fn deliver_presence(&self, event: &Arc<PresenceEvent>) {
        self.offer(&event.channel, None, || Queued::Presence(event.clone()));
    }

    /// Offers `item()` to every subscriber of `channel` (writing `direct` into the sockets lent to the fan-out):
    /// how many took it (`None`: nobody subscribes here). It walks a snapshot of the channel's subscribers, taken
    /// under the shard's read lock and walked after it (see the module's comment). The first subscriber found too
    /// slow is logged, after the walk, with how many more there were.
    fn offer(
        &self,
        channel: &ChannelName,
        direct: Option<&Arc<EncodedMessage>>,
        item: impl Fn() -> Queued,
    ) -> Option<Taken> {
        let list = self.listeners(channel)?;
        Some(self.offer_to(&list, channel, direct, item))
    }

    /// Offers `item()` to each of `list`, a snapshot of `channel`'s subscribers (see [`Subscribers::offer`]).
    fn offer_to(
        &self,
        list: &[Subscriber],
        channel: &ChannelName,
        direct: Option<&Arc<EncodedMessage>>,
        item: impl Fn() -> Queued,
    ) -> Taken {
        let mut taken = Taken::default();
        let mut slow: Option<(u64, Transport, u64)> = None;
        for subscriber in list.iter() {
            match subscriber.queue.offer(direct.map(|m| &**m), &item) {
                Ok(Offered::Queued) => taken.queued += 1,
                Ok(Offered::Written) if subscriber.transport == Transport::Sse => taken.sse_written += 1,
                Ok(Offered::Written) => taken.ws_written += 1,
                Ok(Offered::Skipped) | Err(TrySendError::Closed) => {}
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
        taken
    }
}

/// What one fan-out did: messages queued, and written straight into WebSocket and SSE sockets.
#[derive(Default)]
struct Taken {
    queued: u64,
    ws_written: u64,
    sse_written: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(connection: u64) -> Subscriber {
        let (queue, _receiver) = super::super::queue::queue(4);
        Subscriber { connection, queue, slow: CancellationToken::new(), transport: Transport::WebSocket }
    }

    fn connections(listeners: &Listeners) -> Vec<u64> {
        let mut found: Vec<u64> = listeners.list.iter().map(|s| s.connection).collect();
        found.sort_unstable();
        found
    }

    /// A subscriber whose queue stays open, with the queue's receiving end.
    fn open(connection: u64) -> (Subscriber, super::super::queue::QueueReceiver) {
        let (queue, receiver) = super::super::queue::queue(4);
        (Subscriber { connection, queue, slow: CancellationToken::new(), transport: Transport::WebSocket }, receiver)
    }

    fn message(channel: &ChannelName, offset: u64) -> Queued {
        Queued::Message(EncodedMessage::new(herald_proto::Message {
            channel: channel.clone(),
            position: herald_proto::Position::new(1, offset),
            event: herald_proto::EventName::default_event(),
            data: bytes::Bytes::from_static(b"1"),
            time_ms: 0,
        }))
    }

    #[test]
    fn a_subscribe_during_a_fan_out_of_its_channel_does_not_wait_for_it_and_gets_the_next_message_only() {
        let subscribers = Subscribers::new(Arc::new(Metrics::new(std::iter::empty::<&str>())));
        let a = ChannelName::new("a").unwrap();
        let (first, mut first_inbox) = open(1);
        subscribers.add(&a, first);
        let (late, mut late_inbox) = open(2);
        let late = std::cell::RefCell::new(Some(late));
        let lock_was_free = std::cell::Cell::new(false);
        // Offering to the first subscriber, the fan-out lets a subscribe to the same channel (same shard) through.
        let taken = subscribers.offer(&a, None, || {
            if let Some(late) = late.borrow_mut().take() {
                lock_was_free.set(subscribers.shard(&a).try_write().is_ok());
                if lock_was_free.get() {
                    subscribers.add(&a, late);
                }
            }
            message(&a, 1)
        });
        assert!(lock_was_free.get(), "the shard's lock is not held while the fan-out offers");
        assert_eq!(taken.map(|t| t.queued), Some(1), "the fan-out walked the subscribers it started with");
        assert_eq!(subscribers.count(&a), 2);
        assert!(first_inbox.try_recv().is_some());
        assert!(
            late_inbox.try_recv().is_none(),
            "a subscriber added after the walk began reads that message from history"
        );
        subscribers.offer(&a, None, || message(&a, 2));
        assert!(first_inbox.try_recv().is_some() && late_inbox.try_recv().is_some(), "the next fan-out reaches both");
    }

    #[test]
    fn removals_in_any_order_leave_exactly_the_others_and_a_true_index() {
        let mut listeners = Listeners::default();
        (0..10).for_each(|c| listeners.add(subscriber(c)));
        for gone in [3, 9, 0, 3, 42, 5] {
            listeners.remove(gone);
            let places = listeners.list.iter().enumerate().all(|(i, s)| listeners.at[&s.connection] == i);
            assert!(places && listeners.at.len() == listeners.list.len(), "the index follows every move");
        }
        assert_eq!(connections(&listeners), [1, 2, 4, 6, 7, 8]);
        listeners.add(subscriber(2));
        assert_eq!(connections(&listeners), [1, 2, 4, 6, 7, 8], "one registration per connection");
        [1, 2, 4, 6, 7, 8].into_iter().for_each(|c| listeners.remove(c));
        assert!(listeners.list.is_empty() && listeners.at.is_empty());
    }
}

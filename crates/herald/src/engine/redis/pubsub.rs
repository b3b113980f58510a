//! Following Redis Pub/Sub: one subscription per watched channel on this node, and catch-up after a drop.
//!
//! Transports register interest through [`Watches`] (a count per channel); one task owns the Pub/Sub connection
//! and makes Redis's subscriptions match the wanted set whenever it changes. `watch` returns once the channel's
//! subscription is confirmed, so a transport that reads history afterwards cannot miss a message in between.
//! When the connection drops, the task reconnects with backoff, subscribes again, and catches each channel up
//! from the newest position this node delivered on it before the drop: only the messages stored since then go
//! to the delivery callback, so a subscriber that missed nothing gets nothing (no flood of history into its
//! queue, no slow-consumer disconnect). When that window is too large or unknown, only the newest message goes,
//! and each subscriber's tracker sees the gap and reads what it lacks itself (or learns of a reset when Redis
//! lost the data). See [`missed`].
//!
//! Joins and leaves travel on the same Pub/Sub channels, and are caught up the same way: for each channel with
//! presence the task keeps the members its followers were told of (`roster.rs`), read right after subscribing
//! and kept up to date by the announcements; after a drop it reads the members again and hands on the
//! difference as joins and leaves, right after the channel's missed messages and before anything new.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use herald_proto::{ChannelName, Position};
use redis::aio::PubSub;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::presence::RedisPresence;
use super::roster::Rosters;
use super::{presence, scripts, Inner};
use crate::encoded::EncodedMessage;
use crate::engine::presence::{PresenceEvent, PresenceStore};
use crate::engine::Start;
use crate::metrics::CatchUp;

mod resp3;
mod shard_link;
mod sharded;

/// What follows Pub/Sub: one connection to one Redis, or sharded subscriptions on a cluster.
pub(super) enum Follower {
    /// Classic Pub/Sub on one Redis: the client to reconnect with, and the connection made at start.
    Single(redis::Client, PubSub),
    /// Sharded Pub/Sub on a Redis Cluster.
    Sharded(sharded::Sharded),
}

impl Follower {
    /// Connects sharded Pub/Sub to the cluster behind `seeds`.
    pub(super) async fn sharded(seeds: &[String], timeout: Duration) -> redis::RedisResult<Self> {
        sharded::Sharded::connect(seeds, timeout).await.map(Self::Sharded)
    }

    /// Runs until `stop`, delivering what arrives. `presence` reads the member lists a catch-up compares with.
    pub(super) async fn follow(
        self,
        inner: Arc<Inner>,
        presence: Arc<RedisPresence>,
        watches: Arc<Watches>,
        stop: CancellationToken,
    ) {
        match self {
            Self::Single(client, first) => follow(client, first, inner, presence, watches, stop).await,
            Self::Sharded(sharded) => sharded.follow(inner, presence, watches, stop).await,
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most messages a catch-up hands to every subscriber of a channel (and at most half a connection's
/// queue); past that, subscribers read what they missed themselves.
const CATCH_UP_WINDOW: usize = 64;

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
async fn follow(
    client: redis::Client,
    first: PubSub,
    inner: Arc<Inner>,
    presence: Arc<RedisPresence>,
    watches: Arc<Watches>,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut connection = Some(first);
    // The newest position handed to local subscribers, per subscribed channel: where a catch-up starts.
    let mut delivered: HashMap<ChannelName, Position> = HashMap::new();
    // What this node's presence followers were told of each channel with presence: what a catch-up compares with.
    let mut rosters = Rosters::default();
    let mut unfinished = Unfinished::default();
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
        let signals = inner.signal_channel();
        if sink.subscribe(&signals).await.is_err() {
            watches.set_connected(false);
            continue;
        }
        let mut subscribed: HashSet<ChannelName> = HashSet::new();
        // After a drop, every channel subscribed again is caught up: messages may have been stored while this
        // node was not listening.
        let mut catching_up = resumed;
        // Whether the wanted set may differ from the subscriptions: comparing them costs a pass over every
        // channel, so it is done when `watch`/`unwatch` said so, not for every message that arrives.
        let mut changed = true;
        'session: loop {
            let wanted: HashSet<ChannelName> =
                if changed { watches.lock().wanted.keys().cloned().collect() } else { HashSet::new() };
            let new: Vec<&ChannelName> = wanted.iter().filter(|c| !subscribed.contains(*c)).collect();
            for channel in new {
                if sink.subscribe(inner.live_channel(channel)).await.is_err() {
                    break 'session;
                }
                subscribed.insert(channel.clone());
                watches.lock().live.insert(channel.clone());
                watches.bump();
                if catching_up {
                    let seen = unfinished.channels.remove(channel).unwrap_or_else(|| delivered.get(channel).copied());
                    catch_up(&inner, channel, seen, &mut delivered, &mut unfinished).await;
                }
                if inner.config.has_presence(channel) {
                    unfinished.rosters.remove(channel);
                    read_roster(&inner, &presence, channel, &mut rosters, &mut unfinished).await;
                }
            }
            if catching_up {
                // Channels left while Pub/Sub was down were never subscribed in this session: forget them.
                delivered.retain(|channel, _| subscribed.contains(channel));
                unfinished.channels.retain(|channel, _| subscribed.contains(channel));
                rosters.retain(|channel| subscribed.contains(channel));
                unfinished.rosters.retain(|channel| subscribed.contains(channel));
            }
            catching_up = false;
            let gone: Vec<ChannelName> = if changed {
                subscribed.iter().filter(|c| !wanted.contains(*c)).cloned().collect()
            } else {
                Vec::new()
            };
            changed = false;
            for channel in gone {
                if sink.unsubscribe(inner.live_channel(&channel)).await.is_err() {
                    break 'session;
                }
                subscribed.remove(&channel);
                delivered.remove(&channel);
                unfinished.channels.remove(&channel);
                rosters.remove(&channel);
                unfinished.rosters.remove(&channel);
                watches.lock().live.remove(&channel);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = watches.changed.notified() => changed = true,
                () = tokio::time::sleep_until(unfinished.at.unwrap_or_else(Instant::now)), if unfinished.at.is_some() => {
                    let rereads = unfinished.retry_rosters();
                    for (channel, seen) in unfinished.retry() {
                        catch_up(&inner, &channel, seen, &mut delivered, &mut unfinished).await;
                    }
                    for channel in rereads {
                        read_roster(&inner, &presence, &channel, &mut rosters, &mut unfinished).await;
                    }
                    unfinished.settle();
                }
                message = stream.next() => {
                    let Some(message) = message else { break 'session };
                    if message.get_channel_name() == signals {
                        inner.signals.deliver(bytes::Bytes::copy_from_slice(message.get_payload_bytes()));
                        continue;
                    }
                    match announce(&inner, message.get_channel_name(), message.get_payload_bytes()) {
                        Some(Announced::Message(channel, position)) if subscribed.contains(&channel) => {
                            advance(&mut delivered, &channel, position);
                        }
                        Some(Announced::Presence(event)) => rosters.apply(&event),
                        _ => {}
                    }
                }
            }
        }
        watches.set_connected(false);
    }
}

/// What a Pub/Sub announcement was.
enum Announced {
    /// A message of the channel, at this position.
    Message(ChannelName, Position),
    /// A change of the channel's members.
    Presence(Arc<PresenceEvent>),
}

/// Delivers one Pub/Sub announcement (a message, or a change of presence), and says what it was.
fn announce(inner: &Inner, live: &str, payload: &[u8]) -> Option<Announced> {
    let channel = inner.channel_of(live)?;
    if let Some(body) = payload.strip_prefix(presence::ANNOUNCEMENT) {
        return RedisPresence::announced(inner, &channel, body).map(Announced::Presence);
    }
    match scripts::decode_announcement(&channel, payload) {
        Ok((message, origin)) => {
            let position = message.position;
            (inner.deliver)(&EncodedMessage::with_origin(message, origin));
            Some(Announced::Message(channel, position))
        }
        Err(err) => {
            tracing::warn!(%err, %channel, "skipping an unreadable announcement");
            None
        }
    }
}

/// Reads `channel`'s members into its roster: right after subscribing, its start; after a reconnect, the changes
/// missed meanwhile, handed to the followers as joins and leaves. A failed read is left to `unfinished`.
async fn read_roster(
    inner: &Inner,
    presence: &RedisPresence,
    channel: &ChannelName,
    rosters: &mut Rosters,
    unfinished: &mut Unfinished,
) {
    match presence.members(channel).await {
        Ok(members) => {
            let missed = rosters.read(channel, members);
            if !missed.is_empty() {
                tracing::debug!(%channel, changes = missed.len(), "presence caught up after a pub/sub drop");
            }
            for event in &missed {
                inner.presence.event(event);
            }
        }
        Err(err) => {
            tracing::warn!(%err, %channel, "reading the members after a pub/sub (re)subscription failed; retrying");
            unfinished.failed_roster(channel.clone());
        }
    }
}

/// Channels whose catch-up read failed (Redis still loading its data after a restart, a timeout), with the
/// position each had then: retried with backoff until it succeeds, so that a message another node stored
/// meanwhile does not wait for the channel's next message to be noticed.
#[derive(Default)]
struct Unfinished {
    channels: HashMap<ChannelName, Option<Position>>,
    /// Channels whose members could not be read into their roster.
    rosters: HashSet<ChannelName>,
    /// When to retry; `None` while nothing failed.
    at: Option<Instant>,
    /// Rounds of retries in a row that left something failed: the backoff doubles with each.
    rounds: u32,
}

impl Unfinished {
    fn failed(&mut self, channel: ChannelName, seen: Option<Position>) {
        self.channels.insert(channel, seen);
        self.retry_later();
    }

    fn failed_roster(&mut self, channel: ChannelName) {
        self.rosters.insert(channel);
        self.retry_later();
    }

    fn retry_later(&mut self) {
        if self.at.is_none() {
            let backoff = FIRST_BACKOFF.saturating_mul(1 << self.rounds.min(6)).min(MAX_BACKOFF);
            self.at = Some(Instant::now() + backoff);
        }
    }

    /// Takes the channels to retry now; those that fail again are handed back with [`Unfinished::failed`].
    fn retry(&mut self) -> Vec<(ChannelName, Option<Position>)> {
        self.at = None;
        self.rounds += 1;
        self.channels.drain().collect()
    }

    /// Takes the rosters to read again now (with [`Unfinished::retry`], which moves the time).
    fn retry_rosters(&mut self) -> Vec<ChannelName> {
        self.rosters.drain().collect()
    }

    /// After a round of retries: once nothing is left, the next failure starts the backoff over.
    fn settle(&mut self) {
        if self.channels.is_empty() && self.rosters.is_empty() {
            self.rounds = 0;
        }
    }
}

/// Records that `position` was delivered on `channel`, unless a later one already was (an announcement that
/// was in flight during a catch-up arrives after it). A Redis epoch is the time a channel's history began there,
/// so an older epoch is an earlier position.
fn advance(delivered: &mut HashMap<ChannelName, Position>, channel: &ChannelName, position: Position) {
    match delivered.get_mut(channel) {
        Some(newest) if (newest.epoch, newest.offset) >= (position.epoch, position.offset) => {}
        Some(newest) => *newest = position,
        None => {
            delivered.insert(channel.clone(), position);
        }
    }
}

/// After Pub/Sub was down: hands `channel`'s messages stored since `seen` (the newest this node delivered on it)
/// to the delivery callback, by the rule of [`missed`], with one read, and records the newest position read; a
/// failed read is left to `unfinished`, to be retried from the same `seen`.
async fn catch_up(
    inner: &Inner,
    channel: &ChannelName,
    seen: Option<Position>,
    delivered: &mut HashMap<ChannelName, Position>,
    unfinished: &mut Unfinished,
) {
    let window = CATCH_UP_WINDOW.min(inner.config.connection_queue / 2).max(1);
    // Without a position to start from, only the newest message is of use.
    let n = if seen.is_some() { window } else { 1 };
    inner.metrics.catch_up_read(CatchUp::Node);
    match inner.read(channel, Start::Newest(n), n).await {
        Ok(read) => {
            let missed = missed(&read.messages, seen);
            tracing::debug!(%channel, read = read.messages.len(), handed_on = missed.len(), "caught up after a pub/sub drop");
            missed.iter().for_each(|m| (inner.deliver)(m));
            if let Some(newest) = read.messages.last() {
                advance(delivered, channel, newest.message.position);
            }
        }
        Err(err) => {
            tracing::warn!(%err, %channel, "catch-up after a pub/sub drop failed; retrying");
            unfinished.failed(channel.clone(), seen);
        }
    }
}

/// Which of a channel's `newest` retained messages (oldest first) a catch-up hands to every local subscriber,
/// given `seen`, the newest position delivered before the drop:
/// - those after `seen`, when they follow it without a gap: exactly what every subscriber that was up to date
///   missed, and nothing it already has;
/// - otherwise (nothing seen, a new epoch, or more missed than the window holds) only the newest message: each
///   subscriber's tracker skips it if it has it, or sees the gap and reads what it lacks (a reset if it is
///   gone). No queue gets more than it will deliver, and a subscriber that missed nothing costs no read.
fn missed(newest: &[Arc<EncodedMessage>], seen: Option<Position>) -> &[Arc<EncodedMessage>] {
    let Some(last) = newest.last() else { return &[] };
    let position = |m: &Arc<EncodedMessage>| m.message.position;
    if let Some(seen) = seen.filter(|s| s.epoch == position(last).epoch) {
        let after = newest.partition_point(|m| position(m).offset <= seen.offset);
        match newest.get(after) {
            None => return &[],
            Some(first) if position(first).offset == seen.offset + 1 => return &newest[after..],
            Some(_) => {}
        }
    }
    std::slice::from_ref(last)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use herald_proto::EventName;
    use proptest::prelude::*;

    use super::*;
    use crate::hub::tracker::{Tracker, Verdict};

    fn messages(epoch: u64, offsets: std::ops::RangeInclusive<u64>) -> Vec<Arc<EncodedMessage>> {
        let channel = ChannelName::new("a").unwrap();
        let message = |offset| herald_proto::Message {
            channel: channel.clone(),
            position: Position::new(epoch, offset),
            event: EventName::default_event(),
            data: Bytes::from_static(b"1"),
            time_ms: 0,
        };
        offsets.map(|offset| EncodedMessage::new(message(offset))).collect()
    }

    fn offsets(messages: &[Arc<EncodedMessage>]) -> Vec<u64> {
        messages.iter().map(|m| m.message.position.offset).collect()
    }

    #[test]
    fn a_subscriber_that_missed_nothing_gets_nothing() {
        assert_eq!(offsets(missed(&messages(7, 1437..=1500), Some(Position::new(7, 1500)))), Vec::<u64>::new());
    }

    #[test]
    fn what_was_stored_since_the_newest_delivered_is_handed_on() {
        assert_eq!(offsets(missed(&messages(7, 1437..=1503), Some(Position::new(7, 1500)))), [1501, 1502, 1503]);
    }

    #[test]
    fn more_missed_than_the_window_nothing_seen_or_a_new_epoch_hand_on_only_the_newest() {
        assert_eq!(offsets(missed(&messages(7, 1437..=1500), Some(Position::new(7, 1300)))), [1500]);
        assert_eq!(offsets(missed(&messages(7, 1437..=1500), None)), [1500]);
        assert_eq!(offsets(missed(&messages(8, 1..=5), Some(Position::new(7, 1500)))), [5]);
        assert_eq!(offsets(missed(&[], Some(Position::new(7, 1)))), Vec::<u64>::new());
    }

    #[test]
    fn the_newest_delivered_position_never_moves_back() {
        let a = ChannelName::new("a").unwrap();
        let mut delivered = HashMap::new();
        advance(&mut delivered, &a, Position::new(8, 5));
        advance(&mut delivered, &a, Position::new(8, 4));
        advance(&mut delivered, &a, Position::new(7, 1500));
        assert_eq!(delivered[&a], Position::new(8, 5), "an announcement in flight from before is older");
        advance(&mut delivered, &a, Position::new(9, 1));
        assert_eq!(delivered[&a], Position::new(9, 1), "a later epoch is later");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_catch_up_is_retried_with_a_backoff_that_doubles_and_starts_over_once_all_succeed() {
        let (a, start) = (ChannelName::new("a").unwrap(), Instant::now());
        let mut unfinished = Unfinished::default();
        let mut waits = Vec::new();
        unfinished.failed(a.clone(), Some(Position::new(1, 7)));
        for _ in 0..8 {
            waits.push(unfinished.at.unwrap() - start);
            let again = unfinished.retry();
            assert_eq!(again, [(a.clone(), Some(Position::new(1, 7)))], "retried from the position it had");
            unfinished.failed(a.clone(), Some(Position::new(1, 7)));
            unfinished.settle();
        }
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        unfinished.retry();
        unfinished.settle();
        assert_eq!(unfinished.at, None);
        unfinished.failed(a, None);
        assert_eq!(unfinished.at.unwrap() - start, Duration::from_millis(100), "a new failure starts over");
    }

    proptest! {
        /// A subscriber at any position up to the newest delivered one (what it has not taken yet is still in
        /// its queue), given what a catch-up hands on and reading history on every gap its tracker sees, ends
        /// with exactly the messages after its position, once each; and one that missed no more than the
        /// window holds never reads.
        #[test]
        fn a_catch_up_and_the_trackers_deliver_exactly_what_was_missed(
            seen in 1u64..300,
            stored_since in 0u64..200,
            window in 1u64..80,
            behind in 0u64..50,
        ) {
            let epoch = 3;
            let head = seen + stored_since;
            let retained = messages(epoch, head.saturating_sub(window - 1).max(1)..=head);
            let start = seen.saturating_sub(behind);
            let mut tracker = Tracker::new(Position::new(epoch, start));
            let (mut got, mut reads) = (Vec::new(), 0);
            let queued = messages(epoch, start + 1..=seen);
            for message in queued.iter().chain(missed(&retained, Some(Position::new(epoch, seen)))) {
                let at = message.message.position;
                match tracker.check(at) {
                    Verdict::Skip => continue,
                    Verdict::Deliver => got.push(at.offset),
                    Verdict::CatchUp => {
                        reads += 1;
                        got.extend(tracker.position().offset + 1..=at.offset);
                    }
                }
                tracker.advance(at);
            }
            prop_assert_eq!(got, (start + 1..=head).collect::<Vec<_>>());
            if stored_since < window {
                prop_assert_eq!(reads, 0);
            }
        }
    }
}

//! Sharded Pub/Sub on a Redis Cluster: `SSUBSCRIBE` per watched channel, on the shard owning its slot.
//!
//! redis-rs's cluster connection (RESP3) routes each `SSUBSCRIBE` to the primary owning the channel's slot and
//! hands every push (sharded messages, confirmations, lost connections) to one queue that this task drains. The
//! library resubscribes by itself after a reconnection or a refresh of its slot map; this task does not rely on
//! it alone, and treats every sign that a subscription may have lapsed the same way: subscribe the channel again
//! (through the cluster connection, so to the slot's current owner) and, once confirmed, catch it up from history
//! with the single Redis's rule ([`super::catch_up`]). The signs:
//! - a `SUNSUBSCRIBE` this node did not ask for: the shard lost the slot (resharding, or a primary demoted);
//! - a lost connection to any shard (a primary killed, a network cut): every channel is subscribed again, which
//!   costs one confirmation per channel on the shards that were fine;
//! - a confirmation this node did not ask for (the library resubscribed after a reconnection): caught up;
//! - a full push queue (see [`PUSH_QUEUE`]): every channel is subscribed again and caught up.
//!
//! A subscription that fails (its shard is down and not yet replaced) is retried with backoff; meanwhile the
//! node reports Pub/Sub as not connected (`/healthz` answers 503) and `watch` does not wait for it, as on one
//! Redis. A duplicate delivery (a channel briefly subscribed on two shards during a move) is harmless: each
//! subscriber's tracker skips a position it already has.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use herald_proto::{ChannelName, Position};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{advance, announce, catch_up, Announced, Inner, Unfinished, Watches, FIRST_BACKOFF, MAX_BACKOFF};
use crate::engine::redis::connection::Deployment;

/// Pushes waiting for the task. The library's sender must never block, so a push that finds the queue full is
/// dropped and counted as an overflow, after which every channel is subscribed again and caught up from
/// history: nothing is lost, it costs one read per watched channel.
const PUSH_QUEUE: usize = 8192;

/// A cluster connection for sharded subscriptions and the queue of its pushes.
pub(in crate::engine::redis) struct Sharded {
    con: ClusterConnection,
    pushes: mpsc::Receiver<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

/// What a subscription attempt reports: the channel (`None`: the signals channel), whether to catch it up once
/// confirmed, and the outcome.
type Attempt = (Option<ChannelName>, bool, RedisResult<()>);

impl Sharded {
    pub(super) async fn connect(seeds: &[String], timeout: Duration) -> RedisResult<Self> {
        let (sender, pushes) = mpsc::channel(PUSH_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let full = overflowed.clone();
        let push = move |info: PushInfo| {
            if sender.try_send(info).is_err() {
                full.store(true, Ordering::Relaxed);
            }
            Ok::<(), ()>(())
        };
        let client = Deployment::sharded_pubsub(seeds, timeout, push)?;
        let con = client.get_async_connection().await?;
        Ok(Self { con, pushes, overflowed })
    }

    pub(super) async fn follow(mut self, inner: Arc<Inner>, watches: Arc<Watches>, stop: CancellationToken) {
        let mut links = Links::new(self.con.clone(), inner.signal_channel());
        let mut attempts: FuturesUnordered<BoxFuture<'static, Attempt>> = FuturesUnordered::new();
        links.signals_lapsed = true;
        loop {
            links.plan(&inner, &watches, &mut attempts);
            tokio::select! {
                () = stop.cancelled() => return,
                () = watches.changed.notified() => {}
                Some((channel, catch, result)) = attempts.next() => {
                    links.settled(&inner, &watches, channel, catch, result).await;
                }
                () = tokio::time::sleep_until(links.retry_at.unwrap_or_else(Instant::now)), if links.retry_at.is_some() => {
                    links.retry_at = None;
                    let failed = std::mem::take(&mut links.failed);
                    links.redo.extend(failed);
                }
                () = tokio::time::sleep_until(links.unfinished.at.unwrap_or_else(Instant::now)), if links.unfinished.at.is_some() => {
                    for (channel, seen) in links.unfinished.retry() {
                        catch_up(&inner, &channel, seen, &mut links.delivered, &mut links.unfinished).await;
                    }
                    links.unfinished.settle();
                }
                push = self.pushes.recv() => {
                    let Some(push) = push else { return };
                    links.pushed(&inner, &watches, push).await;
                }
            }
            if self.overflowed.swap(false, Ordering::Relaxed) {
                tracing::warn!("redis cluster pushes overflowed: subscribing every channel again and catching up");
                links.lapsed_all();
            }
            links.report(&watches);
        }
    }
}

/// This node's sharded subscriptions.
struct Links {
    con: ClusterConnection,
    signals: String,
    /// Channels whose subscription Redis confirmed (and that have not lapsed since).
    subscribed: HashSet<ChannelName>,
    /// Channels with a subscription attempt running.
    in_flight: HashSet<ChannelName>,
    /// Channels to subscribe (again) now, with whether to catch them up once confirmed.
    redo: HashMap<ChannelName, bool>,
    /// Channels whose attempt failed, waiting for `retry_at`.
    failed: HashMap<ChannelName, bool>,
    retry_at: Option<Instant>,
    /// Failed rounds in a row: the backoff doubles with each.
    failures: u32,
    signals_lapsed: bool,
    signals_in_flight: bool,
    signals_failed: bool,
    /// Confirmations (`SSUBSCRIBE`, `SUNSUBSCRIBE`) expected for this node's own commands, per Pub/Sub channel.
    own_subscribes: HashMap<Vec<u8>, u32>,
    own_unsubscribes: HashMap<Vec<u8>, u32>,
    delivered: HashMap<ChannelName, Position>,
    unfinished: Unfinished,
}

/// Counts one expected confirmation of `name`.
fn expect(own: &mut HashMap<Vec<u8>, u32>, name: &[u8]) {
    *own.entry(name.to_vec()).or_default() += 1;
}

/// Takes one expected confirmation of `name`; false when none was expected.
fn expected(own: &mut HashMap<Vec<u8>, u32>, name: &[u8]) -> bool {
    match own.get_mut(name) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            own.remove(name);
            true
        }
        None => false,
    }
}

impl Links {
    fn new(con: ClusterConnection, signals: String) -> Self {
        Self {
            con,
            signals,
            subscribed: HashSet::new(),
            in_flight: HashSet::new(),
            redo: HashMap::new(),
            failed: HashMap::new(),
            retry_at: None,
            failures: 0,
            signals_lapsed: false,
            signals_in_flight: false,
            signals_failed: false,
            own_subscribes: HashMap::new(),
            own_unsubscribes: HashMap::new(),
            delivered: HashMap::new(),
            unfinished: Unfinished::default(),
        }
    }

    /// Makes the subscriptions match the wanted set: starts the attempts due, drops the channels left.
    fn plan(&mut self, inner: &Inner, watches: &Watches, attempts: &mut FuturesUnordered<BoxFuture<'static, Attempt>>) {
        let wanted: HashSet<ChannelName> = watches.lock().wanted.keys().cloned().collect();
        for channel in &wanted {
            let known = self.subscribed.contains(channel) || self.in_flight.contains(channel);
            if !known && !self.failed.contains_key(channel) {
                // While not connected, `watch` returned without waiting for this subscription: whatever is
                // stored until it holds is caught up then.
                self.redo.entry(channel.clone()).or_insert(!watches.connected());
            }
        }
        if self.signals_lapsed && !self.signals_in_flight && (!self.signals_failed || self.retry_at.is_none()) {
            self.signals_in_flight = true;
            expect(&mut self.own_subscribes, self.signals.as_bytes());
            let (mut con, name) = (self.con.clone(), self.signals.clone());
            attempts.push(Box::pin(async move { (None, false, con.ssubscribe(name).await) }));
        }
        for (channel, catch) in std::mem::take(&mut self.redo) {
            if !wanted.contains(&channel) || self.in_flight.contains(&channel) {
                continue;
            }
            let live = inner.live_channel(&channel);
            expect(&mut self.own_subscribes, live.as_bytes());
            self.in_flight.insert(channel.clone());
            let mut con = self.con.clone();
            attempts.push(Box::pin(async move {
                let result = con.ssubscribe(live).await;
                (Some(channel), catch, result)
            }));
        }
        self.failed.retain(|channel, _| wanted.contains(channel));
        let gone: Vec<ChannelName> = self.subscribed.iter().filter(|c| !wanted.contains(*c)).cloned().collect();
        for channel in gone {
            self.subscribed.remove(&channel);
            self.delivered.remove(&channel);
            self.unfinished.channels.remove(&channel);
            watches.lock().live.remove(&channel);
            let live = inner.live_channel(&channel);
            expect(&mut self.own_unsubscribes, live.as_bytes());
            let mut con = self.con.clone();
            // Not awaited: a subscription left behind (its shard unreachable) only brings announcements that
            // `pushed` ignores, for a channel no longer subscribed here.
            tokio::spawn(async move {
                let _ = con.sunsubscribe(live).await;
            });
        }
    }

    /// An attempt finished.
    async fn settled(
        &mut self,
        inner: &Inner,
        watches: &Watches,
        channel: Option<ChannelName>,
        catch: bool,
        result: RedisResult<()>,
    ) {
        let Some(channel) = channel else {
            self.signals_in_flight = false;
            match result {
                Ok(()) => (self.signals_lapsed, self.signals_failed) = (false, false),
                Err(err) => {
                    self.signals_failed = true;
                    self.failed_attempt(&self.signals.clone(), &err);
                }
            }
            return;
        };
        self.in_flight.remove(&channel);
        match result {
            Ok(()) => {
                if self.failed.is_empty() {
                    self.failures = 0;
                }
                self.subscribed.insert(channel.clone());
                if watches.connected() {
                    watches.lock().live.insert(channel.clone());
                }
                watches.bump();
                if catch {
                    let seen = self
                        .unfinished
                        .channels
                        .remove(&channel)
                        .unwrap_or_else(|| self.delivered.get(&channel).copied());
                    catch_up(inner, &channel, seen, &mut self.delivered, &mut self.unfinished).await;
                }
            }
            Err(err) => {
                self.failed_attempt(&inner.live_channel(&channel), &err);
                // Whatever was stored until the subscription holds is caught up then.
                self.failed.insert(channel, true);
            }
        }
    }

    fn failed_attempt(&mut self, name: &str, err: &redis::RedisError) {
        expected(&mut self.own_subscribes, name.as_bytes());
        if self.retry_at.is_none() {
            tracing::warn!(%err, channel = name, "sharded subscription failed; retrying");
            let backoff = FIRST_BACKOFF.saturating_mul(1 << self.failures.min(6)).min(MAX_BACKOFF);
            self.retry_at = Some(Instant::now() + backoff);
            self.failures += 1;
        }
    }

    /// Handles one push from the cluster.
    async fn pushed(&mut self, inner: &Inner, watches: &Watches, push: PushInfo) {
        let name = match push.data.first() {
            Some(Value::BulkString(name)) => name.clone(),
            _ => Vec::new(),
        };
        match push.kind {
            PushKind::SMessage => {
                let Some(Value::BulkString(payload)) = push.data.get(1) else { return };
                if name == self.signals.as_bytes() {
                    inner.signals.deliver(bytes::Bytes::copy_from_slice(payload));
                    return;
                }
                let Ok(live) = std::str::from_utf8(&name) else { return };
                // No presence on a cluster (refused at start), so only messages are announced here.
                if let Some(Announced::Message(channel, position)) = announce(inner, live, payload) {
                    if self.subscribed.contains(&channel) {
                        advance(&mut self.delivered, &channel, position);
                    }
                }
            }
            PushKind::SSubscribe => {
                if expected(&mut self.own_subscribes, &name) {
                    return;
                }
                // The library subscribed again after a reconnection: messages may have been stored meanwhile.
                let channel = std::str::from_utf8(&name).ok().and_then(|live| inner.channel_of(live));
                if let Some(channel) = channel.filter(|c| self.subscribed.contains(c)) {
                    let seen = self.delivered.get(&channel).copied();
                    catch_up(inner, &channel, seen, &mut self.delivered, &mut self.unfinished).await;
                }
            }
            PushKind::SUnsubscribe => {
                if expected(&mut self.own_unsubscribes, &name) {
                    return;
                }
                inner.metrics.shard_change();
                tracing::info!(channel = %String::from_utf8_lossy(&name), "a shard dropped a subscription (its slot moved); subscribing again");
                if name == self.signals.as_bytes() {
                    self.signals_lapsed = true;
                    return;
                }
                let channel = std::str::from_utf8(&name).ok().and_then(|live| inner.channel_of(live));
                if let Some(channel) = channel.filter(|c| self.subscribed.remove(c)) {
                    watches.lock().live.remove(&channel);
                    self.redo.insert(channel, true);
                }
            }
            PushKind::Disconnection => {
                inner.metrics.shard_change();
                tracing::warn!("lost a connection to a redis cluster shard; subscribing every channel again");
                self.lapsed_all();
            }
            _ => {}
        }
    }

    /// Every subscription may have lapsed: subscribe each again (to its slot's owner now) and catch it up. The
    /// channels stay subscribed meanwhile, since most of them still are.
    fn lapsed_all(&mut self) {
        for channel in &self.subscribed {
            self.redo.insert(channel.clone(), true);
        }
        self.signals_lapsed = true;
    }

    /// Tells the watches whether every subscription holds.
    fn report(&self, watches: &Watches) {
        let ok = self.failed.is_empty() && !self.signals_failed;
        let was = watches.connected();
        watches.set_connected(ok);
        if ok && !was {
            watches.lock().live.extend(self.subscribed.iter().cloned());
            watches.bump();
        }
    }
}

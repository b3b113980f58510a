//! Sharded Pub/Sub on a Redis Cluster: `SSUBSCRIBE` per watched channel, on a connection to the primary that
//! owns its slot.
//!
//! This task keeps one connection per primary it subscribes on ([`ShardLink`]) and learns who owns a slot the
//! way cluster clients do: it asks a primary it knows, and a `MOVED` answer names the owner, which it remembers
//! per slot. Every sign that a subscription ended is heard, and handled the same way: subscribe the channel
//! again (at the slot's owner now) and, once confirmed, catch it up from history with the single Redis's rule
//! ([`super::catch_up`]). The signs:
//! - a `SUNSUBSCRIBE` this node did not ask for: the shard lost the slot (resharding, or a primary demoted);
//! - a lost connection to a primary (killed, a network cut, no answer to `PING`): its channels, and only
//!   those, are subscribed again; until a replica is promoted the old address refuses, and the retries back off;
//! - a subscription refused or not answered in time: retried with backoff.
//!
//! While any subscription fails, the node reports Pub/Sub as not connected (`/healthz` answers 503) and `watch`
//! does not wait for it, as on one Redis. A duplicate delivery (a channel briefly subscribed on two primaries
//! during a move) is harmless: each subscriber's tracker skips a position it already has.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use herald_proto::{ChannelName, Position};
use redis::cluster_routing::Slot;
use redis::IntoConnectionInfo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::shard_link::{Endpoint, LinkEvent, Pushed, Refused, ShardLink};
use super::{advance, announce, catch_up, read_roster, Announced, Inner, Unfinished, Watches, FIRST_BACKOFF};
use crate::engine::redis::presence::RedisPresence;
use crate::engine::redis::roster::Rosters;

/// Pushes waiting for this task, from all links together. A link finding it full stops reading its socket
/// (see `shard_link.rs` for what Redis does then).
const PUSH_QUEUE: usize = 8192;

/// What this task subscribes: a Herald channel's Pub/Sub channel, or (`None`) the signals channel.
type Target = Option<ChannelName>;

/// The seeds of a cluster and a first link, made at start so that an unreachable cluster fails the start.
pub(in crate::engine::redis) struct Sharded {
    seeds: Vec<Endpoint>,
    timeout: Duration,
    /// The first link, to the first seed that answered, keyed like every link by its address (a later `MOVED`
    /// naming the same primary finds it).
    first: ShardLink,
    first_addr: String,
    events: mpsc::Sender<LinkEvent>,
    pushes: mpsc::Receiver<LinkEvent>,
}

impl Sharded {
    pub(super) async fn connect(seeds: &[String], timeout: Duration) -> redis::RedisResult<Self> {
        let seeds = seeds.iter().map(|seed| endpoint(seed)).collect::<redis::RedisResult<Vec<_>>>()?;
        let (events, pushes) = mpsc::channel(PUSH_QUEUE);
        let mut last = Refused::Closed;
        for seed in &seeds {
            match ShardLink::connect(seed, 0, timeout, events.clone()).await {
                Ok(first) => {
                    let first_addr = seed.addr.clone();
                    return Ok(Self { seeds, timeout, first, first_addr, events, pushes });
                }
                Err(err) => last = err,
            }
        }
        Err(std::io::Error::other(format!("no seed of the cluster answered: {last}")).into())
    }

    pub(super) async fn follow(
        mut self,
        inner: Arc<Inner>,
        presence: Arc<RedisPresence>,
        watches: Arc<Watches>,
        stop: CancellationToken,
    ) {
        let mut links = Links::new(&self, inner.signal_channel(), presence);
        let mut attempts: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
        // Whether the wanted set may differ from the subscriptions (see `plan`).
        let mut changed = true;
        loop {
            links.plan(&inner, &watches, &mut attempts, changed);
            changed = false;
            links.report(&watches);
            tokio::select! {
                () = stop.cancelled() => return,
                () = watches.changed.notified() => changed = true,
                Some(done) = attempts.next() => links.done(&inner, &watches, done).await,
                () = tokio::time::sleep_until(links.retry_at.unwrap_or_else(Instant::now)), if links.retry_at.is_some() => {
                    links.retry_at = None;
                    let failed = std::mem::take(&mut links.failed);
                    links.redo.extend(failed);
                }
                () = tokio::time::sleep_until(links.unfinished.at.unwrap_or_else(Instant::now)), if links.unfinished.at.is_some() => {
                    let rereads = links.unfinished.retry_rosters();
                    for (channel, seen) in links.unfinished.retry() {
                        catch_up(&inner, &channel, seen, &mut links.delivered, &mut links.unfinished).await;
                    }
                    for channel in rereads {
                        read_roster(&inner, &links.presence, &channel, &mut links.rosters, &mut links.unfinished).await;
                    }
                    links.unfinished.settle();
                }
                event = self.pushes.recv() => {
                    // This task holds a sender itself, so the queue never closes.
                    let Some(event) = event else { return };
                    links.pushed(&inner, &watches, event).await;
                }
            }
        }
    }
}

/// A seed URL (`redis://[user:password@]host:port`) as an address to connect to, with its credentials.
fn endpoint(seed: &str) -> redis::RedisResult<Endpoint> {
    let info = seed.into_connection_info()?;
    let addr = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => {
            let detail = format!("{other:?}: sharded Pub/Sub connects over plain TCP");
            return Err(std::io::Error::other(detail).into());
        }
    };
    let settings = info.redis_settings();
    Ok(Endpoint {
        addr,
        username: settings.username().map(str::to_owned),
        password: settings.password().map(str::to_owned),
    })
}

/// What an attempt of this task reports.
enum Done {
    /// A link to `addr` is ready (or could not be made).
    Connected(String, u64, Result<ShardLink, Refused>),
    /// A subscription at `addr` was confirmed (or refused); `catch`: catch the channel up once it is.
    Subscribed(Target, String, bool, Result<(), Refused>),
}

/// A primary's link, ready or being made.
enum Shard {
    Connecting,
    Ready(ShardLink, u64),
}

/// This node's sharded subscriptions.
struct Links {
    seeds: Vec<Endpoint>,
    timeout: Duration,
    events: mpsc::Sender<LinkEvent>,
    signals: String,
    shards: HashMap<String, Shard>,
    /// The primary owning a slot, as the last `MOVED` told.
    owners: HashMap<Slot, String>,
    /// Each link made gets the next number, so that the end of an old link is not taken for its successor's.
    generations: u64,
    /// Targets Redis confirmed, and where.
    subscribed: HashMap<Target, String>,
    /// Targets with an attempt running, and where.
    in_flight: HashMap<Target, String>,
    /// Targets to subscribe (again) now, with whether to catch them up once confirmed.
    redo: HashMap<Target, bool>,
    /// Targets whose attempt failed, waiting for `retry_at`.
    failed: HashMap<Target, bool>,
    retry_at: Option<Instant>,
    /// Failed rounds in a row: the backoff doubles with each, and the seed asked first turns with each.
    failures: u32,
    delivered: HashMap<ChannelName, Position>,
    unfinished: Unfinished,
    /// What this node's presence followers were told of each channel with presence (as on one Redis).
    rosters: Rosters,
    presence: Arc<RedisPresence>,
}

impl Links {
    fn new(sharded: &Sharded, signals: String, presence: Arc<RedisPresence>) -> Self {
        let mut shards = HashMap::new();
        shards.insert(sharded.first_addr.clone(), Shard::Ready(sharded.first.clone(), 0));
        let mut redo = HashMap::new();
        redo.insert(None, false);
        Self {
            seeds: sharded.seeds.clone(),
            timeout: sharded.timeout,
            events: sharded.events.clone(),
            signals,
            shards,
            owners: HashMap::new(),
            generations: 0,
            subscribed: HashMap::new(),
            in_flight: HashMap::new(),
            redo,
            failed: HashMap::new(),
            retry_at: None,
            failures: 0,
            delivered: HashMap::new(),
            unfinished: Unfinished::default(),
            rosters: Rosters::default(),
            presence,
        }
    }

    /// The Pub/Sub channel of a target.
    fn name(&self, inner: &Inner, target: &Target) -> String {
        match target {
            Some(channel) => inner.live_channel(channel),
            None => self.signals.clone(),
        }
    }

    /// Where to subscribe `name`: its slot's owner if known, else a primary this node has a link to, else a seed.
    fn owner(&self, name: &str) -> String {
        if let Some(addr) = self.owners.get(&slot(name)) {
            return addr.clone();
        }
        let mut ready: Vec<&String> =
            self.shards.iter().filter(|(_, s)| matches!(s, Shard::Ready(..))).map(|(a, _)| a).collect();
        ready.sort();
        match ready.first() {
            Some(addr) => (*addr).clone(),
            None => self.seeds[self.failures as usize % self.seeds.len()].addr.clone(),
        }
    }

    /// Starts the attempts due; with `changed` (`watch`/`unwatch` said the wanted set changed), first compares the
    /// wanted set with the subscriptions, which costs a pass over every channel, so not for every message.
    fn plan(
        &mut self,
        inner: &Inner,
        watches: &Watches,
        attempts: &mut FuturesUnordered<BoxFuture<'static, Done>>,
        changed: bool,
    ) {
        let wanted: Vec<ChannelName> =
            if changed { watches.lock().wanted.keys().cloned().collect() } else { Vec::new() };
        for channel in &wanted {
            let target = Some(channel.clone());
            let known = self.subscribed.contains_key(&target) || self.in_flight.contains_key(&target);
            if !known && !self.failed.contains_key(&target) {
                // While not connected, `watch` returned without waiting for this subscription: whatever is
                // stored until it holds is caught up then.
                self.redo.entry(target).or_insert(!watches.connected());
            }
        }
        let is_wanted = |target: &Target| target.as_ref().map_or(true, |c| watches.lock().wanted.contains_key(c));
        for (target, catch) in std::mem::take(&mut self.redo) {
            if !is_wanted(&target) || self.in_flight.contains_key(&target) {
                continue;
            }
            let name = self.name(inner, &target);
            let addr = self.owner(&name);
            match self.shards.get(&addr) {
                Some(Shard::Ready(link, _)) => {
                    let link = link.clone();
                    self.in_flight.insert(target.clone(), addr.clone());
                    attempts.push(Box::pin(async move {
                        let result = link.subscribe(Bytes::from(name)).await;
                        Done::Subscribed(target, addr, catch, result)
                    }));
                }
                Some(Shard::Connecting) => {
                    self.redo.insert(target, catch);
                }
                None => {
                    self.redo.insert(target, catch);
                    self.generations += 1;
                    let generation = self.generations;
                    let endpoint = Endpoint { addr: addr.clone(), ..self.seeds[0].clone() };
                    let (timeout, events) = (self.timeout, self.events.clone());
                    self.shards.insert(addr.clone(), Shard::Connecting);
                    attempts.push(Box::pin(async move {
                        let link = ShardLink::connect(&endpoint, generation, timeout, events).await;
                        Done::Connected(addr, generation, link)
                    }));
                }
            }
        }
        if !changed {
            return;
        }
        self.failed.retain(|target, _| is_wanted(target));
        let gone: Vec<Target> = self.subscribed.keys().filter(|t| !is_wanted(t)).cloned().collect();
        for target in gone {
            let Some(addr) = self.subscribed.remove(&target) else { continue };
            let Some(channel) = target else { continue };
            self.delivered.remove(&channel);
            self.unfinished.channels.remove(&channel);
            self.rosters.remove(&channel);
            self.unfinished.rosters.remove(&channel);
            watches.lock().live.remove(&channel);
            if let Some(Shard::Ready(link, _)) = self.shards.get(&addr) {
                let (link, name) = (link.clone(), Bytes::from(inner.live_channel(&channel)));
                // Not awaited: a subscription left behind (its link about to end) only brings messages that
                // `pushed` ignores, for a channel no longer subscribed here.
                tokio::spawn(async move {
                    let _ = link.unsubscribe(name).await;
                });
            }
        }
    }

    /// An attempt finished.
    async fn done(&mut self, inner: &Inner, watches: &Watches, done: Done) {
        match done {
            Done::Connected(addr, generation, Ok(link)) => {
                self.shards.insert(addr, Shard::Ready(link, generation));
            }
            Done::Connected(addr, _, Err(err)) => {
                self.shards.remove(&addr);
                // The targets waiting for this link wait for the retry (and then ask where to go again).
                let waiting: Vec<Target> =
                    self.redo.keys().filter(|t| self.owner(&self.name(inner, t)) == addr).cloned().collect();
                self.owners.retain(|_, owner| *owner != addr);
                for target in waiting {
                    let catch = self.redo.remove(&target).unwrap_or(true);
                    self.failed.insert(target, catch);
                }
                self.failed_attempt(&addr, &err);
            }
            Done::Subscribed(target, addr, catch, result) => {
                self.in_flight.remove(&target);
                match result {
                    Ok(()) => self.confirmed(inner, watches, target, addr, catch).await,
                    Err(Refused::Moved(owner)) if owner != addr && !owner.is_empty() => {
                        self.owners.insert(slot(&self.name(inner, &target)), owner);
                        self.redo.insert(target, catch);
                    }
                    Err(err) => {
                        self.failed.insert(target, catch);
                        self.failed_attempt(&addr, &err);
                    }
                }
            }
        }
    }

    async fn confirmed(&mut self, inner: &Inner, watches: &Watches, target: Target, addr: String, catch: bool) {
        if self.failed.is_empty() {
            self.failures = 0;
        }
        self.subscribed.insert(target.clone(), addr);
        let Some(channel) = target else { return };
        if watches.connected() {
            watches.lock().live.insert(channel.clone());
        }
        watches.bump();
        if catch {
            let seen =
                self.unfinished.channels.remove(&channel).unwrap_or_else(|| self.delivered.get(&channel).copied());
            catch_up(inner, &channel, seen, &mut self.delivered, &mut self.unfinished).await;
        }
        if inner.config.has_presence(&channel) {
            // Right after subscribing: the roster's start; after a lapse: the joins and leaves missed meanwhile.
            self.unfinished.rosters.remove(&channel);
            read_roster(inner, &self.presence, &channel, &mut self.rosters, &mut self.unfinished).await;
        }
    }

    fn failed_attempt(&mut self, addr: &str, err: &Refused) {
        if self.retry_at.is_none() {
            tracing::warn!(%err, shard = addr, "sharded subscription failed; retrying");
            self.retry_at = Some(Instant::now() + retry_after(self.failures));
            self.failures += 1;
        }
    }

    /// Handles one push from a link.
    async fn pushed(&mut self, inner: &Inner, watches: &Watches, event: LinkEvent) {
        match event.pushed {
            Pushed::Message(name, payload) => {
                if name == self.signals.as_bytes() {
                    inner.signals.deliver(payload);
                    return;
                }
                let Ok(live) = std::str::from_utf8(&name) else { return };
                match announce(inner, live, &payload) {
                    Some(Announced::Message(channel, position))
                        if self.subscribed.contains_key(&Some(channel.clone())) =>
                    {
                        advance(&mut self.delivered, &channel, position);
                    }
                    Some(Announced::Presence(event)) => self.rosters.apply(&event),
                    _ => {}
                }
            }
            Pushed::Dropped(name) => {
                let target = if name == self.signals.as_bytes() {
                    None
                } else {
                    match std::str::from_utf8(&name).ok().and_then(|live| inner.channel_of(live)) {
                        Some(channel) => Some(channel),
                        None => return,
                    }
                };
                if self.subscribed.get(&target).map(String::as_str) != Some(&*event.addr) {
                    return;
                }
                inner.metrics.shard_change();
                tracing::info!(channel = %String::from_utf8_lossy(&name), shard = %event.addr, "a shard dropped a subscription (its slot moved); subscribing again");
                // The slot moved: asking the old owner again brings a `MOVED` naming the new one.
                self.owners.remove(&slot(&String::from_utf8_lossy(&name)));
                self.lapsed(watches, target);
            }
            Pushed::Closed => {
                let current =
                    matches!(self.shards.get(&*event.addr), Some(Shard::Ready(_, g)) if *g == event.generation);
                if !current {
                    return;
                }
                inner.metrics.shard_change();
                tracing::warn!(shard = %event.addr, "lost the connection to a redis cluster primary; subscribing its channels again");
                self.shards.remove(&*event.addr);
                // Its slots may be another primary's by now (a failover): ask again.
                self.owners.retain(|_, owner| **owner != *event.addr);
                let lost: Vec<Target> =
                    self.subscribed.iter().filter(|(_, addr)| **addr == *event.addr).map(|(t, _)| t.clone()).collect();
                for target in lost {
                    self.lapsed(watches, target);
                }
            }
        }
    }

    /// `target`'s subscription ended: subscribe it again and catch it up.
    fn lapsed(&mut self, watches: &Watches, target: Target) {
        self.subscribed.remove(&target);
        if let Some(channel) = &target {
            watches.lock().live.remove(channel);
        }
        self.redo.insert(target, true);
    }

    /// Tells the watches whether every subscription holds (or is on its way).
    fn report(&self, watches: &Watches) {
        let ok = self.failed.is_empty();
        let was = watches.connected();
        watches.set_connected(ok);
        if ok && !was {
            watches.lock().live.extend(self.subscribed.keys().flatten().cloned());
            watches.bump();
        }
    }
}

/// The longest pause between two rounds of retried subscriptions. A subscription fails in a row mostly while a
/// primary is being failed over: its address refuses until a replica takes over, after `cluster-node-timeout`.
/// Every moment the retries then still wait is a moment the shard serves again and this node's subscribers of its
/// channels get nothing live; should a channel move more messages than its history holds meanwhile, the catch-up
/// finds them trimmed and its subscribers are `reset` although nothing was lost (a 5 s cap left the link down up to
/// 1.6 s after the promotion, over 100 messages of a busy channel: tests/redis_cluster_shards.rs). A retry costs
/// one connect or one `SSUBSCRIBE`, so a short cap is cheap, and it bounds that silence.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(400);

/// The pause before the next round of retries after `failures` failed rounds in a row: doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_RETRY_PAUSE`].
fn retry_after(failures: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << failures.min(6)).min(MAX_RETRY_PAUSE)
}

/// The cluster slot of a Pub/Sub channel (its `{tag}`: the Herald channel's keys' slot).
fn slot(name: &str) -> Slot {
    Slot::for_key(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard refuses from its primary's death until a replica serves at `back`: however late that is, the node
    /// subscribes its channels again within [`MAX_RETRY_PAUSE`] of it, so its subscribers' live feed is not held
    /// up for seconds after the cluster has recovered (and a busy channel does not outrun its history meanwhile).
    #[test]
    fn a_refusing_shard_is_subscribed_again_soon_after_it_serves_however_long_it_refused() {
        for back_ms in (0..60_000).step_by(10) {
            let back = Duration::from_millis(back_ms);
            let (mut at, mut failures) = (Duration::ZERO, 0);
            while at < back {
                at += retry_after(failures);
                failures += 1;
            }
            assert!(at - back <= Duration::from_millis(400), "back at {back:?}, subscribed at {at:?}");
        }
        assert_eq!(retry_after(0), FIRST_BACKOFF, "a first retry comes quickly");
    }
}

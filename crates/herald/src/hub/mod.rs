//! The hub: channels, publishers and subscribers, and nothing of HTTP.
//!
//! Transports call [`Hub::publish`], and open a [`Subscription`] to read and follow channels: the one place
//! where history and the live feed are joined exactly once (`subscription.rs`). Live messages reach a
//! subscription through its inbox, one bounded queue fed by the engine's delivery callback through the
//! subscriber registry; a tracker per channel turns the overlap between history and live feed, and any gap, into
//! an exactly-once, in-order stream.
//!
//! With `direct_writes`, the delivery callback hands each message to the fan-out worker (`fanout.rs`) instead of
//! fanning out inline (except a channel's of at most 8 subscribers here while the worker is idle, and none for a
//! channel nobody here subscribes to), and a connection with nothing of its own to write lends its socket to the fan-out, which
//! writes the next message of a channel straight into it (`direct.rs`) instead of queueing it.
//!
//! Presence (`presence.rs`) rides the same way: a subscription joins a channel's presence as a member, and one that
//! follows the channel's presence receives its members' joins and leaves through the same inbox, in order with
//! its messages; this node's subscriber counts go to the engine's presence store (`occupancy.rs`), which adds up
//! the cluster's.

mod direct;
mod fanout;
mod inbox;
mod occupancy;
mod presence;
mod queue;
mod subscribers;
mod subscription;
pub(crate) mod tracker;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use herald_proto::{ChannelName, EventName};

use crate::config::Config;
use crate::encoded::EncodedMessage;
pub use crate::encoded::Origin;
pub use crate::engine::events::{Entry, EventKind, EventLog, LifecycleEvent, LogId};
pub use crate::engine::presence::{Joined, Member, Members, Occupancy, PresenceChange, PresenceEvent, Transition};
pub use crate::engine::Start;
use crate::engine::{Delivery, Engine, EngineError, EngineStats, Read};
use crate::metrics::{EngineOp, Metrics};
pub(crate) use direct::DirectWire;
use fanout::FanOut;
pub use presence::{member, PresenceError, TransitionHook, MAX_USER_ID_BYTES};
pub(crate) use queue::DirectHandle;
use subscribers::Subscribers;
pub use subscription::{Batch, Item, Live, Opened, Subscription};

/// Why the hub could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A node's subscriber registries and the fan-out that feeds them.
struct Registries {
    subscribers: Arc<Subscribers>,
    followers: Arc<Subscribers>,
    fanout: Arc<FanOut>,
    metrics: Arc<Metrics>,
}

/// Channels, publishers and subscribers of one node.
pub struct Hub {
    engine: Box<dyn Engine>,
    subscribers: Arc<Subscribers>,
    fanout: Arc<FanOut>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    next_connection: AtomicU64,
    /// The engine's presence and occupancy.
    presence: presence::Store,
    /// Subscriptions that follow channels' presence.
    presence_followers: Arc<Subscribers>,
    /// Where the store's news goes.
    relay: Arc<presence::Relay>,
    /// This node's subscriber counts, to report.
    occupancy: Arc<occupancy::Reports>,
    next_presence: AtomicU64,
}

impl Hub {
    /// A hub on the engine `build` makes, given the delivery callback that feeds this hub's subscribers and the
    /// metrics it may count on. The hub does not choose its engine: `engine::start` picks the configured one.
    pub async fn new<F, Fut>(config: Arc<Config>, build: F) -> Result<Arc<Self>, EngineError>
    where
        F: FnOnce(Delivery, Arc<Metrics>) -> Fut,
        Fut: Future<Output = Result<Box<dyn Engine>, EngineError>>,
    {
        let registries = Self::fanout(&config);
        let fanout = registries.fanout.clone();
        let deliver: Delivery = Arc::new(move |message: &Arc<EncodedMessage>| fanout.message(message));
        let engine = build(deliver, registries.metrics.clone()).await?;
        Ok(Self::assemble(config, engine, registries))
    }

    /// The subscriber registries and the fan-out that feeds them (inline, or on workers with `direct_writes`).
    fn fanout(config: &Config) -> Registries {
        let metrics = Arc::new(Metrics::new(config.namespaces.keys().map(String::as_str)));
        let subscribers = Arc::new(Subscribers::new(metrics.clone()));
        let followers = Arc::new(Subscribers::new(metrics.clone()));
        let (s, f, m) = (subscribers.clone(), followers.clone(), metrics.clone());
        // The disk engine hands messages over under its writer's lock: no `write`s there.
        let inline_max = if config.engine == crate::config::EngineKind::Disk { 0 } else { fanout::INLINE_SUBSCRIBERS };
        let fanout =
            if config.direct_writes { FanOut::on_worker(s, f, m, inline_max) } else { FanOut::inline(s, f, m) };
        Registries { subscribers, followers, fanout: Arc::new(fanout), metrics }
    }

    fn assemble(config: Arc<Config>, engine: Box<dyn Engine>, registries: Registries) -> Arc<Self> {
        let Registries { subscribers, followers: presence_followers, fanout, metrics } = registries;
        let presence = engine.presence();
        let relay = Arc::new(presence::Relay { fanout: fanout.clone(), hooks: RwLock::default() });
        presence.listen(relay.clone());
        let hub = Arc::new(Self {
            engine,
            subscribers,
            fanout,
            config,
            metrics,
            next_connection: AtomicU64::new(1),
            presence,
            presence_followers,
            relay,
            occupancy: Arc::default(),
            next_presence: AtomicU64::new(1),
        });
        tokio::spawn(occupancy::report(Arc::downgrade(&hub)));
        hub
    }

    /// Whether the engine can store and read messages now.
    pub fn healthy(&self) -> bool {
        self.engine.healthy()
    }

    /// The engine's Redis Cluster, when it runs on one.
    pub fn cluster(&self) -> Option<crate::engine::ClusterHealth> {
        self.engine.cluster()
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Stops the engine once nothing is left to serve (a disk engine marks its file as stopped cleanly).
    pub async fn close(&self) {
        self.engine.close().await;
    }

    /// The engine's storage sizes.
    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// The cluster's log of lifecycle events (what webhooks deliver).
    pub fn events(&self) -> Arc<dyn EventLog> {
        self.engine.events()
    }

    /// Stores a message and hands it to every subscriber. `data` must be minified JSON.
    pub async fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Bytes,
    ) -> Result<Arc<EncodedMessage>, HubError> {
        self.publish_from(channel, event, data, Origin::default()).await
    }

    /// Stores a message with what its publisher attached to it (another protocol's socket to exclude, its user)
    /// and hands it to every subscriber. `data` must be one line of JSON.
    pub async fn publish_from(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Bytes,
        origin: Origin,
    ) -> Result<Arc<EncodedMessage>, HubError> {
        let started = Instant::now();
        // With the fan-out worker: the fan-out of earlier messages keeps up, or this publish waits.
        self.fanout.room().await;
        let message = self.engine.publish(channel, event, data, origin).await?;
        // Until the engine had the message: no clock reading of its own on the hot path.
        self.metrics.engine_stored(started, message.stored_at);
        self.metrics.published_on(&message.message.channel);
        Ok(message)
    }

    /// Sends `signal` to every node's signal receivers, this one's included (see [`Hub::signals`]). Nothing is
    /// stored: a node that is not connected then never gets it.
    pub async fn signal(&self, signal: Bytes) -> Result<(), HubError> {
        Ok(self.engine.signal(signal).await?)
    }

    /// A receiver of every signal any node sends from now on. A receiver that falls more than 1024 signals
    /// behind loses the oldest and is told how many.
    pub fn signals(&self) -> tokio::sync::broadcast::Receiver<Bytes> {
        self.engine.signals()
    }

    /// Reads at most `limit` messages of `channel` from `start` (a [`Subscription`] is the way for clients).
    pub async fn read(&self, channel: &ChannelName, start: Start, limit: usize) -> Result<Read, HubError> {
        self.metrics.history_read();
        let started = Instant::now();
        let read = self.engine.read(channel, start, limit).await?;
        self.metrics.engine_call(EngineOp::Read, started);
        self.metrics.history_read_size(read.messages.len());
        Ok(read)
    }

    /// Drops expired history and frees channels nobody uses.
    pub fn sweep(&self) {
        self.engine.sweep(&|channel| self.subscribers.is_watched(channel));
        self.metrics.busiest().roll(Instant::now());
    }
}

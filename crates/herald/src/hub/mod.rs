//! The hub: channels, publishers and subscribers, and nothing of HTTP.
//!
//! Transports call [`Hub::publish`], and open a [`Subscription`] to read and follow channels: the one place
//! where history and the live feed are joined exactly once (`subscription.rs`). Live messages reach a
//! subscription through its inbox, one bounded queue fed by the engine's delivery callback through the
//! subscriber registry; a tracker per channel turns the overlap between history and live feed, and any gap, into
//! an exactly-once, in-order stream.

mod inbox;
mod queue;
mod subscribers;
mod subscription;
pub(crate) mod tracker;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use herald_proto::{ChannelName, EventName};

use crate::config::Config;
use crate::encoded::EncodedMessage;
pub use crate::encoded::Origin;
pub use crate::engine::Start;
use crate::engine::{Delivery, Engine, EngineError, EngineStats, Read};
use crate::metrics::Metrics;
use subscribers::Subscribers;
pub use subscription::{Batch, Item, Live, Opened, Subscription};

/// Why the hub could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Channels, publishers and subscribers of one node.
pub struct Hub {
    engine: Box<dyn Engine>,
    subscribers: Arc<Subscribers>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    next_connection: AtomicU64,
}

impl Hub {
    /// A hub on the engine `build` makes, given the delivery callback that feeds this hub's subscribers and the
    /// metrics it may count on. The hub does not choose its engine: `engine::start` picks the configured one.
    pub async fn new<F, Fut>(config: Arc<Config>, build: F) -> Result<Arc<Self>, EngineError>
    where
        F: FnOnce(Delivery, Arc<Metrics>) -> Fut,
        Fut: Future<Output = Result<Box<dyn Engine>, EngineError>>,
    {
        let (subscribers, metrics, deliver) = Self::fanout();
        let engine = build(deliver, metrics.clone()).await?;
        Ok(Self::assemble(config, engine, subscribers, metrics))
    }

    /// The subscriber registry and the delivery callback that feeds it, for an engine to be built with.
    fn fanout() -> (Arc<Subscribers>, Arc<Metrics>, Delivery) {
        let metrics = Arc::new(Metrics::default());
        let subscribers = Arc::new(Subscribers::new(metrics.clone()));
        let fanout = subscribers.clone();
        let deliver: Delivery = Arc::new(move |message: &Arc<EncodedMessage>| fanout.deliver(message));
        (subscribers, metrics, deliver)
    }

    fn assemble(
        config: Arc<Config>,
        engine: Box<dyn Engine>,
        subscribers: Arc<Subscribers>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self { engine, subscribers, config, metrics, next_connection: AtomicU64::new(1) })
    }

    /// Whether the engine can store and read messages now.
    pub fn healthy(&self) -> bool {
        self.engine.healthy()
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

    /// The engine's storage sizes.
    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
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
        let message = self.engine.publish(channel, event, data, origin).await?;
        self.metrics.published();
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
        Ok(self.engine.read(channel, start, limit).await?)
    }

    /// Drops expired history and frees channels nobody uses.
    pub fn sweep(&self) {
        self.engine.sweep(&|channel| self.subscribers.is_watched(channel));
    }
}

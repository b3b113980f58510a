//! The hub: channels, publishers and subscribers, and nothing of HTTP.
//!
//! Transports call [`Hub::publish`] and [`Hub::read`], and open a [`Connection`] to receive live messages: one
//! bounded queue per connection, fed by the engine's delivery callback through the subscriber registry. A
//! transport follows each channel with a [`Tracker`] and calls [`Hub::follow`] for every live message, which
//! turns the overlap between history and live feed, and any gap, into an exactly-once, in-order stream.

mod queue;
mod subscribers;
pub mod tracker;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use herald_proto::{ChannelName, EventName};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::{Config, EngineKind};
use crate::encoded::EncodedMessage;
use crate::engine::memory::MemoryEngine;
use crate::engine::redis::RedisEngine;
use crate::engine::{Delivery, Engine, EngineError, EngineStats, Read, Start};
use crate::metrics::{ConnectionGuard, Metrics, Transport};
use queue::{QueueReceiver, QueueSender};
use subscribers::{Subscriber, Subscribers};
pub use tracker::{Tracker, Verdict};

/// Why the hub could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The outcome of following one live message.
#[derive(Debug, Default)]
pub struct Followed {
    /// Messages were lost before these.
    pub reset: bool,
    /// What to deliver, in order (possibly nothing).
    pub messages: Vec<Arc<EncodedMessage>>,
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
    /// A hub on the embedded in-memory engine.
    pub fn memory(config: Arc<Config>) -> Arc<Self> {
        let (subscribers, metrics, deliver) = Self::fanout();
        let engine = Box::new(MemoryEngine::new(config.clone(), deliver));
        Self::assemble(config, engine, subscribers, metrics)
    }

    /// A hub on the engine the configuration names; for Redis, connects first.
    pub async fn start(config: Arc<Config>) -> Result<Arc<Self>, EngineError> {
        match config.engine {
            EngineKind::Memory => Ok(Self::memory(config)),
            EngineKind::Redis => {
                let (subscribers, metrics, deliver) = Self::fanout();
                let engine = Box::new(RedisEngine::connect(config.clone(), deliver).await?);
                Ok(Self::assemble(config, engine, subscribers, metrics))
            }
        }
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
        let message = self.engine.publish(channel, event, data).await?;
        self.metrics.published();
        Ok(message)
    }

    /// Reads at most `limit` messages of `channel` from `start`.
    pub async fn read(&self, channel: &ChannelName, start: Start, limit: usize) -> Result<Read, HubError> {
        self.metrics.history_read();
        Ok(self.engine.read(channel, start, limit).await?)
    }

    /// Turns a live message into what its subscription should deliver next, and advances the tracker.
    pub async fn follow(&self, tracker: &mut Tracker, live: Arc<EncodedMessage>) -> Result<Followed, HubError> {
        let at = live.message.position;
        match tracker.check(at) {
            Verdict::Skip => Ok(Followed::default()),
            Verdict::Deliver => {
                tracker.advance(at);
                Ok(Followed { reset: false, messages: vec![live] })
            }
            Verdict::CatchUp => {
                let start = Start::After(tracker.position());
                self.metrics.catch_up_read();
                let read = self.read(&live.message.channel, start, usize::MAX).await?;
                tracker.advance(read.end());
                Ok(Followed { reset: read.reset, messages: read.messages })
            }
        }
    }

    /// Opens a connection: a bounded queue that live messages of its channels are handed to.
    pub fn connect(self: &Arc<Self>, transport: Transport) -> Connection {
        let (queue, receiver) = queue::queue(self.config.connection_queue);
        Connection {
            id: self.next_connection.fetch_add(1, Relaxed),
            hub: self.clone(),
            queue,
            receiver,
            slow: CancellationToken::new(),
            transport,
            channels: HashSet::new(),
            _guard: self.metrics.connection(transport),
        }
    }

    /// Drops expired history and frees channels nobody uses.
    pub fn sweep(&self) {
        self.engine.sweep(&|channel| self.subscribers.is_watched(channel));
    }
}

/// A client's connection: the channels it follows and its queue of live messages.
pub struct Connection {
    id: u64,
    hub: Arc<Hub>,
    queue: QueueSender,
    receiver: QueueReceiver,
    slow: CancellationToken,
    transport: Transport,
    channels: HashSet<ChannelName>,
    _guard: ConnectionGuard,
}

impl Connection {
    /// Starts queueing live messages of `channel`; completes once no message stored from now on can be missed,
    /// so history read afterwards joins the live feed without a gap. Returns false if it was already subscribed.
    pub async fn subscribe(&mut self, channel: &ChannelName) -> bool {
        if !self.channels.insert(channel.clone()) {
            return false;
        }
        let subscriber = Subscriber {
            connection: self.id,
            queue: self.queue.clone(),
            slow: self.slow.clone(),
            transport: self.transport,
        };
        self.hub.subscribers.add(channel, subscriber);
        self.hub.engine.watch(channel).await;
        true
    }

    /// Stops queueing live messages of `channel`. Returns false if it was not subscribed.
    pub fn unsubscribe(&mut self, channel: &ChannelName) -> bool {
        if !self.channels.remove(channel) {
            return false;
        }
        self.hub.subscribers.remove(channel, self.id);
        self.hub.engine.unwatch(channel);
        true
    }

    /// Whether the connection follows `channel`.
    pub fn is_subscribed(&self, channel: &ChannelName) -> bool {
        self.channels.contains(channel)
    }

    /// How many channels the connection follows.
    pub fn subscriptions(&self) -> usize {
        self.channels.len()
    }

    /// The next live message. Never ends while the connection lives.
    pub async fn recv(&mut self) -> Option<Arc<EncodedMessage>> {
        Some(self.receiver.recv().await)
    }

    /// The next live message if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<EncodedMessage>> {
        self.receiver.try_recv()
    }

    /// Completes when the connection's queue overflowed: it must disconnect. The future borrows nothing, so it
    /// can be awaited alongside [`Connection::recv`].
    pub fn too_slow(&self) -> WaitForCancellationFutureOwned {
        self.slow.clone().cancelled_owned()
    }

    /// The signal behind [`Connection::too_slow`], for whoever writes the connection's bytes: a write blocked
    /// on a peer that stopped reading must give up when it fires, or the connection never ends.
    pub fn slow_signal(&self) -> CancellationToken {
        self.slow.clone()
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for channel in &self.channels {
            self.hub.subscribers.remove(channel, self.id);
            self.hub.engine.unwatch(channel);
        }
    }
}

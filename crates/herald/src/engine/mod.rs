//! Engines: where channels' histories live and where offsets are assigned.
//!
//! The hub talks to one [`Engine`], which [`start`] picks from the configuration; each implementation is one
//! module (`memory`, the embedded default; `disk`, one node whose history survives restarts; `redis`, when one
//! machine is not enough). An engine stores a
//! message, assigns its offset, and hands every stored message, in offset order per channel, to the
//! [`Delivery`] callback it was built with, which fans it out to local subscribers. Reads return history from a
//! [`Start`], with `reset` when the client's position cannot be honoured. Beside the histories, each engine has a
//! [`presence::PresenceStore`]: the members and subscriber counts of channels, across nodes; and an
//! [`events::EventLog`]: the cluster's log of lifecycle events, that webhooks are delivered from.
//!
//! Engines also carry **signals**: small messages to every node, this one included, that are not stored and not
//! ordered with any channel (a Pusher app's "close this user's connections", "send this user an event"). The
//! memory engine hands them straight to its receivers; Redis through one Pub/Sub channel that every node follows.

pub mod disk;
pub mod events;
pub mod memory;
pub mod presence;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use herald_proto::{ChannelName, EventName, Position};

use crate::config::{Config, EngineKind};
use crate::encoded::{EncodedMessage, Origin};
use crate::metrics::Metrics;
use events::EventLog;
use presence::PresenceStore;

/// Signals a slow receiver may fall behind by before it loses the oldest (it is told how many it lost).
const SIGNAL_QUEUE: usize = 1024;

/// The node's receivers of signals: every signal any node sends reaches each receiver once.
pub struct Signals(tokio::sync::broadcast::Sender<Bytes>);

impl Default for Signals {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(SIGNAL_QUEUE).0)
    }
}

impl Signals {
    /// Hands `signal` to every receiver of this node (none listening is fine: nobody here needed it).
    pub fn deliver(&self, signal: Bytes) {
        let _ = self.0.send(signal);
    }

    /// A receiver of every signal from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Bytes> {
        self.0.subscribe()
    }
}

/// Starts the engine `config` names, handing every stored message to `deliver`; for Redis, connects first.
pub async fn start(
    config: Arc<Config>,
    deliver: Delivery,
    metrics: Arc<Metrics>,
) -> Result<Box<dyn Engine>, EngineError> {
    Ok(match config.engine {
        EngineKind::Memory => Box::new(memory::MemoryEngine::new(config, deliver)),
        EngineKind::Disk => Box::new(disk::DiskEngine::open(config, deliver)?),
        EngineKind::Redis => Box::new(redis::RedisEngine::connect(config, deliver, metrics).await?),
    })
}

/// A boxed future, so that `Engine` can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Receives every stored message, in offset order per channel.
pub type Delivery = Arc<dyn Fn(&Arc<EncodedMessage>) + Send + Sync>;

/// Why an engine could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The engine's backing store cannot be reached.
    #[error("the engine is unavailable: {0}")]
    Unavailable(String),
    /// The engine's storage has no room left (a full disk): nothing was stored.
    #[error("the engine's storage is full: {0}")]
    Full(String),
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this position (a client's cursor).
    After(Position),
    /// At the oldest retained message.
    Oldest,
    /// At the newest N retained messages.
    Newest(usize),
    /// After the newest message: nothing old.
    Now,
}

/// The answer to a read.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Messages after the start, oldest first, at most the limit.
    pub messages: Vec<Arc<EncodedMessage>>,
    /// The start position could not be honoured: messages were lost, and `messages` begins at the oldest
    /// retained one.
    pub reset: bool,
    /// The position a reader stands at before the first returned message.
    pub start: Position,
    /// The position of the channel's newest message (`Position::default()` for a channel with no history).
    pub head: Position,
}

impl Read {
    /// Where the reader stands after these messages.
    pub fn end(&self) -> Position {
        self.messages.last().map_or(self.start, |m| m.message.position)
    }
}

/// Storage sizes, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    /// Channels held.
    pub channels: u64,
    /// Messages retained.
    pub messages: u64,
    /// Bytes of retained messages.
    pub bytes: u64,
}

/// A Redis Cluster's state as a node last saw it, for `/healthz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterHealth {
    /// Primaries owning slots.
    pub shards: u64,
    /// Those the cluster does not flag as failing.
    pub reachable: u64,
    /// Primaries that stopped owning slots since the node started (failovers, reshardings).
    pub failovers: u64,
}

/// A store of channels' histories.
pub trait Engine: Send + Sync + 'static {
    /// The engine's name, for `/healthz`.
    fn name(&self) -> &'static str;

    /// Stores a message with what its publisher attached to it, assigns its offset and hands it to the delivery
    /// callback.
    fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Bytes,
        origin: Origin,
    ) -> BoxFuture<'_, Result<Arc<EncodedMessage>, EngineError>>;

    /// Sends `signal` to the signal receivers of every node, this one's included. Nothing is stored: a node that
    /// is not connected when it is sent never gets it.
    fn signal(&self, signal: Bytes) -> BoxFuture<'_, Result<(), EngineError>>;

    /// A receiver of every signal sent from now on, by any node.
    fn signals(&self) -> tokio::sync::broadcast::Receiver<Bytes>;

    /// Reads at most `limit` messages of `channel` from `start`.
    fn read<'a>(
        &'a self,
        channel: &'a ChannelName,
        start: Start,
        limit: usize,
    ) -> BoxFuture<'a, Result<Read, EngineError>>;

    /// Drops expired history and frees channels that hold nothing and that `watched` says nobody watches.
    fn sweep(&self, watched: &(dyn Fn(&ChannelName) -> bool + Sync));

    /// Storage sizes.
    fn stats(&self) -> EngineStats;

    /// A local subscriber starts following `channel`. Completes once every message stored from now on will reach
    /// the delivery callback (for an engine fed by other nodes: once its subscription is confirmed, or at once
    /// while the backing store is unreachable, in which case delivery resumes, with catch-up, when it returns).
    /// Called once per local subscription; each call is undone by one [`Engine::unwatch`].
    fn watch<'a>(&'a self, _channel: &'a ChannelName) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// A local subscriber stopped following `channel`.
    fn unwatch(&self, _channel: &ChannelName) {}

    /// Whether the engine can store and read messages now.
    fn healthy(&self) -> bool {
        true
    }

    /// The cluster's state, for an engine on a Redis Cluster.
    fn cluster(&self) -> Option<ClusterHealth> {
        None
    }

    /// Stops the engine at shutdown, once no request is left: an engine with a file makes what it holds durable
    /// and marks the file as stopped cleanly. Called once; nothing is published after it.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// The engine's presence and occupancy, shared by the nodes the engine shares histories with.
    fn presence(&self) -> Arc<dyn PresenceStore>;

    /// The engine's log of lifecycle events, shared the same way.
    fn events(&self) -> Arc<dyn EventLog>;
}

/// Where a read from `start` begins in a channel of `epoch` that retains offsets `first..=last` (`first = last + 1`
/// when it retains nothing), and whether `start` could not be honoured (a reset). Every engine reads by this rule.
pub fn plan(start: Start, epoch: u64, first: u64, last: u64) -> (u64, bool) {
    match start {
        Start::After(p) => {
            // A position taken before the channel had any message matches any epoch at offset 0.
            let same_epoch = p.epoch == epoch || (p.epoch == 0 && p.offset == 0);
            if !same_epoch || p.offset > last || p.offset + 1 < first {
                (first, true)
            } else {
                (p.offset + 1, false)
            }
        }
        Start::Oldest => (first, false),
        Start::Newest(n) => (first.max((last + 1).saturating_sub(n as u64)), false),
        Start::Now => (last + 1, false),
    }
}

/// The read of a channel that has no history at all: nothing, and a reset for a cursor that had seen messages.
pub fn read_missing(start: Start) -> Read {
    Read { reset: matches!(start, Start::After(p) if p != Position::default()), ..Read::default() }
}

//! The Redis engine: several Herald nodes share channels through one Redis, with no node-to-node protocol.
//!
//! History and offsets live in Redis (`scripts.rs`), so offsets stay gap-free per channel whichever node
//! publishes, and a cursor works on any node. Live messages reach other nodes through Redis Pub/Sub
//! (`pubsub.rs`): one Redis subscription per channel per node, not per client, held while the node has a local
//! subscriber. Commands share one multiplexed connection, so concurrent publishes are pipelined.
//!
//! When Redis is unreachable, publishing and reading fail with `EngineError::Unavailable` (answered 503), while
//! connected subscribers stay connected; when it returns, each watched channel is caught up from history so no
//! subscriber sees a gap, or gets a reset if Redis lost the data.

mod cluster_state;
mod connection;
mod events;
mod presence;
mod pubsub;
mod roster;
mod scripts;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_proto::{ChannelName, EventName, Message, Position};
use redis::{Script, Value};
use tokio_util::sync::{CancellationToken, DropGuard};

use self::connection::{Commands, Deployment};
use super::events::EventLog;
use super::presence::{ListenerSlot, PresenceStore};
use super::{BoxFuture, Delivery, Engine, EngineError, EngineStats, Read, Signals, Start};
use crate::config::Config;
use crate::encoded::{EncodedMessage, Origin};
use crate::metrics::Metrics;

/// How long a Redis command may take before the engine reports it unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a publish waits for `redis_wait_replicas` replicas to acknowledge it.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an idle channel's keys outlive its history's age limit.
const KEY_GRACE: Duration = Duration::from_secs(24 * 3600);

/// What the engine and its Pub/Sub task share.
pub(super) struct Inner {
    config: Arc<Config>,
    commands: Commands,
    publish: Script,
    read: Script,
    deliver: Delivery,
    /// This node's receivers of signals, fed by the Pub/Sub task.
    signals: Signals,
    /// Counts the catch-up reads after a Pub/Sub drop.
    metrics: Arc<Metrics>,
    /// Whether the last command succeeded; logged when it changes.
    commands_ok: AtomicBool,
    /// Where presence announcements and transitions go.
    presence: ListenerSlot,
    /// Entries the log of lifecycle events keeps; 0 while it is off (`events.rs`).
    events_capacity: AtomicUsize,
}

impl Inner {
    fn meta_key(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:meta", self.config.redis_prefix)
    }

    fn log_key(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:log", self.config.redis_prefix)
    }

    /// The Pub/Sub channel announcing `channel`'s messages.
    pub(super) fn live_channel(&self, channel: &ChannelName) -> String {
        format!("{}live:{{{channel}}}", self.config.redis_prefix)
    }

    /// The Pub/Sub channel carrying signals to every node.
    pub(super) fn signal_channel(&self) -> String {
        format!("{}signals", self.config.redis_prefix)
    }

    /// The Herald channel of a Pub/Sub channel name.
    pub(super) fn channel_of(&self, live: &str) -> Option<ChannelName> {
        let name = live.strip_prefix(&self.config.redis_prefix)?.strip_prefix("live:{")?.strip_suffix('}')?;
        ChannelName::new(name).ok()
    }

    fn outcome<T>(&self, result: redis::RedisResult<T>) -> Result<T, EngineError> {
        let ok = result.is_ok();
        if self.commands_ok.swap(ok, Ordering::Relaxed) != ok {
            match &result {
                Ok(_) => tracing::info!("redis commands succeed again"),
                Err(err) => tracing::error!(%err, "redis commands fail: publishing answers 503 until Redis is back"),
            }
        }
        result.map_err(|err| EngineError::Unavailable(format!("redis: {err}")))
    }

    /// Runs a command, once more if the first attempt met a connection Redis had already closed (after Redis
    /// restarted, the first use of the old connection fails and reconnects). `always_retry` is for commands
    /// that are safe to run twice (reads); others are retried only when the request never left (a broken pipe).
    async fn run<T, F, Fut>(&self, always_retry: bool, command: F) -> Result<T, EngineError>
    where
        F: Fn(Commands) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match command(self.commands.clone()).await {
            Err(err) if err.is_io_error() && (always_retry || never_sent(&err)) => {
                self.outcome(command(self.commands.clone()).await)
            }
            result => self.outcome(result),
        }
    }

    /// After a write to `key`: waits until `redis_wait_replicas` replicas of its primary acknowledged it (and
    /// every earlier write of this connection), or answers unavailable. The write stays stored either way: a
    /// `503` here means "stored, but not yet safe from the loss of its primary".
    async fn replicated(&self, key: &str) -> Result<(), EngineError> {
        let wanted = self.config.redis_wait_replicas;
        let acknowledged =
            self.run(false, |mut con| async move { con.wait(key, wanted, REPLICATION_TIMEOUT).await }).await?;
        if acknowledged < u64::from(wanted) {
            self.metrics.replication_shortfall();
            return Err(EngineError::Unavailable(format!(
                "redis: {acknowledged} of {wanted} replicas acknowledged the message within {} ms; it is stored on \
                 the primary but may be lost if that fails",
                REPLICATION_TIMEOUT.as_millis()
            )));
        }
        Ok(())
    }

    /// Checks the command connection, so a dead one is replaced before a client needs it.
    pub(super) async fn ping(&self) {
        let _ = self.run(true, |mut con| async move { redis::cmd("PING").query_async::<()>(&mut con).await }).await;
    }

    pub(super) async fn read(&self, channel: &ChannelName, start: Start, limit: usize) -> Result<Read, EngineError> {
        let (mode, epoch, offset, n) = match start {
            Start::After(p) => ("after", p.epoch, p.offset, 0),
            Start::Oldest => ("oldest", 0, 0, 0),
            Start::Newest(n) => ("newest", 0, 0, n),
            Start::Now => ("now", 0, 0, 0),
        };
        let ttl = self.config.namespace(channel).history_ttl.as_millis() as u64;
        let (meta, log) = (self.meta_key(channel), self.log_key(channel));
        let reply: Value = self
            .run(true, |mut con| {
                let mut invocation = self.read.key(&meta);
                invocation.key(&log).arg(mode).arg(epoch.to_string()).arg(offset).arg(n);
                invocation.arg(limit.to_string()).arg(ttl);
                async move { invocation.invoke_async(&mut con).await }
            })
            .await?;
        decode_read(channel, start, reply).map_err(|e| EngineError::Unavailable(e.to_string()))
    }
}

/// Whether a failed request certainly never reached Redis: writing it found the connection already closed.
fn never_sent(err: &redis::RedisError) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::BrokenPipe;
        }
        source = cause.source();
    }
    err.to_string().contains("broken pipe")
}

fn decode_read(channel: &ChannelName, start: Start, reply: Value) -> Result<Read, scripts::Unreadable> {
    let bad = |what| scripts::Unreadable(what);
    let Value::Array(parts) = reply else { return Err(bad("read reply")) };
    if parts.is_empty() {
        return Ok(super::read_missing(start));
    }
    let [epoch, last, from, reset, entries]: [Value; 5] = parts.try_into().map_err(|_| bad("read reply"))?;
    let epoch: u64 = redis::from_redis_value::<String>(epoch).ok().and_then(|e| e.parse().ok()).ok_or(bad("epoch"))?;
    let last: u64 = redis::from_redis_value(last).map_err(|_| bad("last"))?;
    let from: u64 = redis::from_redis_value(from).map_err(|_| bad("from"))?;
    let reset: u64 = redis::from_redis_value(reset).map_err(|_| bad("reset"))?;
    let entries: Vec<Vec<u8>> = redis::from_redis_value(entries).map_err(|_| bad("entries"))?;
    let messages = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let position = Position::new(epoch, from + i as u64);
            scripts::decode_entry(channel, position, entry).map(|(m, origin)| EncodedMessage::with_origin(m, origin))
        })
        .collect::<Result<_, _>>()?;
    Ok(Read {
        messages,
        reset: reset == 1,
        start: Position::new(epoch, from.saturating_sub(1)),
        head: Position::new(epoch, last),
    })
}

/// The Redis engine.
pub struct RedisEngine {
    inner: Arc<Inner>,
    watches: Arc<pubsub::Watches>,
    presence: Arc<presence::RedisPresence>,
    events: Arc<events::RedisLog>,
    cluster: Option<Arc<cluster_state::ClusterState>>,
    _stop: DropGuard,
}

impl RedisEngine {
    /// Connects to `config.redis_url` (one Redis, or a cluster's seeds) and starts following Pub/Sub. Fails if
    /// Redis cannot be reached now.
    pub async fn connect(config: Arc<Config>, deliver: Delivery, metrics: Arc<Metrics>) -> Result<Self, EngineError> {
        let unavailable =
            |err: redis::RedisError| EngineError::Unavailable(format!("redis at {}: {err}", config.redis_url));
        let deployment = Arc::new(Deployment::parse(&config.redis_url).map_err(unavailable)?);
        let commands = deployment.commands(COMMAND_TIMEOUT).await.map_err(unavailable)?;
        let follower = match &*deployment {
            Deployment::Single(client) => {
                pubsub::Follower::Single(client.clone(), client.get_async_pubsub().await.map_err(unavailable)?)
            }
            Deployment::Cluster(seeds) => {
                pubsub::Follower::sharded(seeds, COMMAND_TIMEOUT).await.map_err(unavailable)?
            }
        };
        let inner = Arc::new(Inner {
            config,
            publish: commands.script(scripts::PUBLISH),
            read: Script::new(scripts::READ),
            commands,
            deliver,
            signals: Signals::default(),
            metrics,
            commands_ok: AtomicBool::new(true),
            presence: ListenerSlot::default(),
            events_capacity: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        let watches = Arc::new(pubsub::Watches::default());
        watches.set_connected(true);
        let events = Arc::new(events::RedisLog::new(inner.clone(), deployment));
        let presence = presence::RedisPresence::start(inner.clone(), events.clone()).await?;
        tokio::spawn(follower.follow(inner.clone(), presence.clone(), watches.clone(), stop.clone()));
        tokio::spawn(presence::keep_alive(presence.clone(), stop.clone()));
        let cluster = matches!(inner.commands, Commands::Cluster(_)).then(Arc::<cluster_state::ClusterState>::default);
        if let Some(state) = &cluster {
            tokio::spawn(cluster_state::follow(inner.clone(), state.clone(), stop.clone()));
        }
        Ok(Self { inner, watches, presence, events, cluster, _stop: stop.drop_guard() })
    }

    async fn store(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Bytes,
        origin: Origin,
    ) -> Result<Arc<EncodedMessage>, EngineError> {
        let inner = &self.inner;
        let ns = inner.config.namespace(&channel);
        let ttl = ns.history_ttl.as_millis() as u64;
        let (meta, log, live) = (inner.meta_key(&channel), inner.log_key(&channel), inner.live_channel(&channel));
        let stored_origin = scripts::encode_origin(&origin);
        // With replicas to wait for, the message is announced only once they have it: no subscriber ever sees
        // a message that the loss of its primary could take back.
        let wait = inner.config.redis_wait_replicas > 0;
        let announce_in_script = if wait { String::new() } else { live.clone() };
        let (epoch, offset, time_ms): (String, u64, u64) = inner
            .run(false, |mut con| {
                let mut invocation = inner.publish.key(&meta);
                invocation.key(&log).arg(event.as_str()).arg(&data[..]).arg(ns.history_size);
                invocation.arg(ttl).arg(ttl + KEY_GRACE.as_millis() as u64).arg(&announce_in_script);
                invocation.arg(&stored_origin);
                async move { invocation.invoke_async(&mut con).await }
            })
            .await?;
        if wait {
            inner.replicated(&meta).await?;
            let payload = scripts::announcement(&epoch, offset, time_ms, &stored_origin, event.as_str(), &data);
            let verb = inner.commands.publish_command();
            inner
                .run(false, |mut con| {
                    let mut command = redis::cmd(verb);
                    command.arg(&live).arg(&payload);
                    async move { command.query_async::<()>(&mut con).await }
                })
                .await?;
        }
        let epoch = epoch.parse().map_err(|_| EngineError::Unavailable("redis returned a bad epoch".into()))?;
        // Local subscribers get the message through Pub/Sub like every other node's, in offset order.
        let message = Message { channel, position: Position::new(epoch, offset), event, data, time_ms };
        Ok(EncodedMessage::with_origin(message, origin))
    }
}

impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Bytes,
        origin: Origin,
    ) -> BoxFuture<'_, Result<Arc<EncodedMessage>, EngineError>> {
        Box::pin(self.store(channel, event, data, origin))
    }

    fn signal(&self, signal: Bytes) -> BoxFuture<'_, Result<(), EngineError>> {
        let channel = self.inner.signal_channel();
        let verb = self.inner.commands.publish_command();
        Box::pin(async move {
            self.inner
                .run(false, |mut con| {
                    let (channel, signal) = (channel.clone(), signal.clone());
                    async move { redis::cmd(verb).arg(channel).arg(&signal[..]).query_async::<()>(&mut con).await }
                })
                .await
        })
    }

    fn signals(&self) -> tokio::sync::broadcast::Receiver<Bytes> {
        self.inner.signals.subscribe()
    }

    fn read<'a>(
        &'a self,
        channel: &'a ChannelName,
        start: Start,
        limit: usize,
    ) -> BoxFuture<'a, Result<Read, EngineError>> {
        Box::pin(self.inner.read(channel, start, limit))
    }

    fn sweep(&self, _watched: &(dyn Fn(&ChannelName) -> bool + Sync)) {
        // Redis trims on every publish and read, and expires the keys of idle channels itself.
    }

    fn stats(&self) -> EngineStats {
        EngineStats { channels: self.watches.len() as u64, ..EngineStats::default() }
    }

    fn watch<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, ()> {
        Box::pin(self.watches.watch(channel))
    }

    fn unwatch(&self, channel: &ChannelName) {
        self.watches.unwatch(channel);
    }

    fn healthy(&self) -> bool {
        self.inner.commands_ok.load(Ordering::Relaxed) && self.watches.connected()
    }

    fn cluster(&self) -> Option<super::ClusterHealth> {
        self.cluster.as_ref().map(|state| state.health())
    }

    fn presence(&self) -> Arc<dyn PresenceStore> {
        self.presence.clone()
    }

    fn events(&self) -> Arc<dyn EventLog> {
        self.events.clone()
    }
}

//! The embedded engine: every channel's history in this process's memory.
//!
//! Channels live in a sharded map; each channel has its own lock, held while an offset is assigned, the message
//! appended and handed to the delivery callback, so every subscriber sees a channel's messages in offset order
//! and a publish never waits for another channel. Memory is bounded three ways: per channel by the namespace's
//! `history_size` and `history_ttl`, for the whole server by `max_history_bytes` (the oldest messages of all
//! channels go first), and by freeing channels that hold nothing and that nobody watches.
//!
//! A restart loses everything: every channel starts a new, random epoch, so old cursors get a reset.

use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use herald_proto::{time::now_millis, ChannelName, EventName, Message, Position};
use tokio::time::Instant;

use super::events::memory::MemoryLog;
use super::events::EventLog;
use super::presence::memory::MemoryPresence;
use super::presence::PresenceStore;
use super::{BoxFuture, Delivery, Engine, EngineError, EngineStats, Read, Signals, Start};
use crate::config::Config;
use crate::encoded::{EncodedMessage, Origin};

const SHARDS: usize = 64;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave a log half-written in a way later readers must avoid: every
    // mutation is a push or pop of a whole message, so the data is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One channel's history.
struct ChannelLog {
    epoch: u64,
    last_offset: u64,
    messages: VecDeque<(Instant, Arc<EncodedMessage>)>,
    last_activity: Instant,
    /// Set when the sweeper freed the channel: a publisher holding this log must look the channel up again.
    removed: bool,
}

impl ChannelLog {
    fn first_offset(&self) -> u64 {
        self.messages.front().map_or(self.last_offset + 1, |(_, m)| m.message.position.offset)
    }

    fn head(&self) -> Position {
        Position::new(self.epoch, self.last_offset)
    }

    /// Answers a read from this log (already trimmed).
    fn read(&self, start: Start, limit: usize) -> Read {
        let lo = self.first_offset();
        let (from, reset) = super::plan(start, self.epoch, lo, self.last_offset);
        let skip = (from - lo) as usize;
        let messages = self.messages.iter().skip(skip).take(limit).map(|(_, m)| m.clone()).collect();
        Read { messages, reset, start: Position::new(self.epoch, from - 1), head: self.head() }
    }
}

/// The embedded in-memory engine.
pub struct MemoryEngine {
    shards: Vec<Mutex<HashMap<ChannelName, Arc<Mutex<ChannelLog>>>>>,
    hasher: RandomState,
    config: Arc<Config>,
    deliver: Delivery,
    bytes: AtomicUsize,
    messages: AtomicU64,
    evicting: Mutex<()>,
    signals: Signals,
    presence: Arc<MemoryPresence>,
    events: Arc<MemoryLog>,
}

impl MemoryEngine {
    /// An empty engine that hands stored messages to `deliver`.
    pub fn new(config: Arc<Config>, deliver: Delivery) -> Self {
        let events = Arc::new(MemoryLog::default());
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            config,
            deliver,
            bytes: AtomicUsize::new(0),
            messages: AtomicU64::new(0),
            evicting: Mutex::new(()),
            signals: Signals::default(),
            presence: Arc::new(MemoryPresence::new(events.clone())),
            events,
        }
    }

    fn shard(&self, channel: &ChannelName) -> &Mutex<HashMap<ChannelName, Arc<Mutex<ChannelLog>>>> {
        &self.shards[(self.hasher.hash_one(channel.as_str()) % SHARDS as u64) as usize]
    }

    fn new_epoch(&self) -> u64 {
        let mut h = self.hasher.build_hasher();
        (now_millis(), Instant::now().elapsed().as_nanos(), self.messages.load(Relaxed)).hash(&mut h);
        std::time::SystemTime::now().hash(&mut h);
        h.finish().max(1)
    }

    fn pop_front(&self, log: &mut ChannelLog) {
        if let Some((_, m)) = log.messages.pop_front() {
            self.bytes.fetch_sub(m.weight(), Relaxed);
            self.messages.fetch_sub(1, Relaxed);
        }
    }

    /// Drops messages past the channel's size or age.
    fn trim(&self, channel: &ChannelName, log: &mut ChannelLog, now: Instant) {
        let ns = self.config.namespace(channel);
        while log.messages.len() > ns.history_size {
            self.pop_front(log);
        }
        while log.messages.front().is_some_and(|(at, _)| now.duration_since(*at) >= ns.history_ttl) {
            self.pop_front(log);
        }
    }

    fn store(&self, channel: ChannelName, event: EventName, data: Bytes, origin: Origin) -> Arc<EncodedMessage> {
        loop {
            let log = {
                let mut shard = lock(self.shard(&channel));
                shard
                    .entry(channel.clone())
                    .or_insert_with(|| {
                        Arc::new(Mutex::new(ChannelLog {
                            epoch: self.new_epoch(),
                            last_offset: 0,
                            messages: VecDeque::new(),
                            last_activity: Instant::now(),
                            removed: false,
                        }))
                    })
                    .clone()
            };
            let mut log = lock(&log);
            if log.removed {
                continue;
            }
            let now = Instant::now();
            log.last_offset += 1;
            log.last_activity = now;
            let message = EncodedMessage::with_origin(
                Message {
                    channel: channel.clone(),
                    position: Position::new(log.epoch, log.last_offset),
                    event,
                    data,
                    time_ms: now_millis(),
                },
                origin,
            );
            self.bytes.fetch_add(message.weight(), Relaxed);
            self.messages.fetch_add(1, Relaxed);
            log.messages.push_back((now, message.clone()));
            self.trim(&channel, &mut log, now);
            (self.deliver)(&message);
            return message;
        }
    }

    /// Drops the oldest messages of the whole server until history is back under 90% of its budget.
    fn evict(&self) {
        let Ok(_only_one_evicts) = self.evicting.try_lock() else { return };
        let target = self.config.max_history_bytes / 10 * 9;
        let logs: Vec<Arc<Mutex<ChannelLog>>> =
            self.shards.iter().flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>()).collect();
        let mut oldest: BinaryHeap<std::cmp::Reverse<(Instant, usize)>> = logs
            .iter()
            .enumerate()
            .filter_map(|(i, log)| lock(log).messages.front().map(|(at, _)| std::cmp::Reverse((*at, i))))
            .collect();
        while self.bytes.load(Relaxed) > target {
            let Some(std::cmp::Reverse((_, i))) = oldest.pop() else { break };
            let mut log = lock(&logs[i]);
            self.pop_front(&mut log);
            if let Some((at, _)) = log.messages.front() {
                oldest.push(std::cmp::Reverse((*at, i)));
            }
        }
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Bytes,
        origin: Origin,
    ) -> BoxFuture<'_, Result<Arc<EncodedMessage>, EngineError>> {
        let message = self.store(channel, event, data, origin);
        if self.bytes.load(Relaxed) > self.config.max_history_bytes {
            self.evict();
        }
        Box::pin(std::future::ready(Ok(message)))
    }

    fn read<'a>(
        &'a self,
        channel: &'a ChannelName,
        start: Start,
        limit: usize,
    ) -> BoxFuture<'a, Result<Read, EngineError>> {
        let log = lock(self.shard(channel)).get(channel).cloned();
        let read = match log {
            Some(log) => {
                let mut log = lock(&log);
                self.trim(channel, &mut log, Instant::now());
                log.read(start, limit)
            }
            None => super::read_missing(start),
        };
        Box::pin(std::future::ready(Ok(read)))
    }

    fn sweep(&self, watched: &(dyn Fn(&ChannelName) -> bool + Sync)) {
        let now = Instant::now();
        for shard in &self.shards {
            lock(shard).retain(|channel, log| {
                let mut log = lock(log);
                self.trim(channel, &mut log, now);
                let idle = now.duration_since(log.last_activity) >= self.config.namespace(channel).history_ttl;
                let free = log.messages.is_empty() && idle && !watched(channel);
                log.removed = free;
                !free
            });
        }
    }

    fn signal(&self, signal: Bytes) -> BoxFuture<'_, Result<(), EngineError>> {
        self.signals.deliver(signal);
        Box::pin(std::future::ready(Ok(())))
    }

    fn signals(&self) -> tokio::sync::broadcast::Receiver<Bytes> {
        self.signals.subscribe()
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            channels: self.shards.iter().map(|s| lock(s).len() as u64).sum(),
            messages: self.messages.load(Relaxed),
            bytes: self.bytes.load(Relaxed) as u64,
        }
    }

    fn presence(&self) -> Arc<dyn PresenceStore> {
        self.presence.clone()
    }

    fn events(&self) -> Arc<dyn EventLog> {
        self.events.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn engine(config: Config) -> (MemoryEngine, Arc<Mutex<Vec<u64>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let deliver: Delivery = Arc::new(move |m: &Arc<EncodedMessage>| lock(&sink).push(m.message.position.offset));
        (MemoryEngine::new(Arc::new(config), deliver), seen)
    }

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    async fn publish(e: &MemoryEngine, c: &str, n: usize) -> Vec<Arc<EncodedMessage>> {
        let mut out = Vec::new();
        for i in 0..n {
            let data = Bytes::from(i.to_string());
            out.push(e.publish(ch(c), EventName::default_event(), data, Origin::default()).await.unwrap());
        }
        out
    }

    async fn offsets(e: &MemoryEngine, c: &str, start: Start) -> (Vec<u64>, bool) {
        let r = e.read(&ch(c), start, 1000).await.unwrap();
        (r.messages.iter().map(|m| m.message.position.offset).collect(), r.reset)
    }

    #[tokio::test]
    async fn offsets_are_gapless_and_delivered_in_order() {
        let (e, seen) = engine(Config::default());
        let msgs = publish(&e, "a", 5).await;
        assert_eq!(msgs.iter().map(|m| m.message.position.offset).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(*lock(&seen), [1, 2, 3, 4, 5]);
        assert!(msgs.iter().all(|m| m.message.position.epoch == msgs[0].message.position.epoch));
    }

    #[tokio::test]
    async fn reads_start_where_asked() {
        let (e, _) = engine(Config::default());
        let msgs = publish(&e, "a", 5).await;
        let epoch = msgs[0].message.position.epoch;
        assert_eq!(offsets(&e, "a", Start::Oldest).await, (vec![1, 2, 3, 4, 5], false));
        assert_eq!(offsets(&e, "a", Start::Newest(2)).await, (vec![4, 5], false));
        assert_eq!(offsets(&e, "a", Start::Now).await, (vec![], false));
        assert_eq!(offsets(&e, "a", Start::After(Position::new(epoch, 3))).await, (vec![4, 5], false));
        assert_eq!(offsets(&e, "a", Start::After(Position::new(epoch, 5))).await, (vec![], false));
        assert_eq!(offsets(&e, "a", Start::After(Position::default())).await, (vec![1, 2, 3, 4, 5], false));
    }

    #[tokio::test]
    async fn a_lost_position_is_a_reset_with_what_remains() {
        let mut config = Config::default();
        config.default_namespace.history_size = 3;
        let (e, _) = engine(config);
        let msgs = publish(&e, "a", 5).await;
        let epoch = msgs[0].message.position.epoch;
        assert_eq!(offsets(&e, "a", Start::After(Position::new(epoch, 1))).await, (vec![3, 4, 5], true));
        assert_eq!(offsets(&e, "a", Start::After(Position::new(epoch, 2))).await, (vec![3, 4, 5], false));
        assert_eq!(offsets(&e, "a", Start::After(Position::new(epoch + 1, 4))).await, (vec![3, 4, 5], true));
        assert_eq!(offsets(&e, "a", Start::After(Position::new(epoch, 9))).await, (vec![3, 4, 5], true));
        assert_eq!(offsets(&e, "a", Start::After(Position::default())).await, (vec![3, 4, 5], true));
        assert_eq!(offsets(&e, "nobody", Start::After(Position::new(epoch, 1))).await, (vec![], true));
        assert_eq!(offsets(&e, "nobody", Start::After(Position::default())).await, (vec![], false));
    }

    #[tokio::test(start_paused = true)]
    async fn old_messages_expire_and_idle_channels_are_freed_unless_watched() {
        let mut config = Config::default();
        config.default_namespace.history_ttl = Duration::from_secs(60);
        let (e, _) = engine(config);
        publish(&e, "a", 2).await;
        publish(&e, "b", 1).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        publish(&e, "a", 1).await;
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(offsets(&e, "a", Start::Oldest).await, (vec![3], false));
        e.sweep(&|c| c.as_str() == "b");
        assert_eq!(e.stats().channels, 2, "b is watched, a still has a message");
        tokio::time::advance(Duration::from_secs(60)).await;
        e.sweep(&|_| false);
        assert_eq!(e.stats().channels, 0);
        assert_eq!((e.stats().messages, e.stats().bytes), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_history_budget_drops_the_oldest_messages_of_all_channels_first() {
        let (e, _) = engine(Config { max_history_bytes: 4000, ..Config::default() });
        for round in 0..30 {
            for c in ["a", "b"] {
                let data = Bytes::from(round.to_string());
                e.publish(ch(c), EventName::default_event(), data, Origin::default()).await.unwrap();
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        }
        assert!(e.stats().bytes <= 4000, "{:?}", e.stats());
        let (a, _) = offsets(&e, "a", Start::Oldest).await;
        let (b, _) = offsets(&e, "b", Start::Oldest).await;
        assert_eq!(a.last(), Some(&30));
        assert_eq!(b.last(), Some(&30));
        assert!(a[0] > 1 && b[0] > 1 && a[0].abs_diff(b[0]) <= 1, "{a:?} {b:?}");
    }
}

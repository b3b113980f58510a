//! The disk engine: one node, every channel's history in a file in `data_dir`, so a restart (a deploy, a crash)
//! loses no acknowledged message and keeps every epoch, and history may be longer than memory.
//!
//! A publish goes to one writer (`writer.rs`), a thread of its own, through a bounded queue; the writer takes whatever has queued
//! (up to [`writer::BATCH`]) into one atomic batch of the store (fjall, `store.rs`), commits it — with `fsync =
//! "always"` durably, so concurrent publishes share one fsync (group commit) — and only then puts the messages
//! in memory, hands them to the delivery callback and answers their publishers. With `fsync = "interval"` a
//! commit is a write to the engine's own journal (`journal.rs`), the store following behind it in large batches,
//! and a publisher that finds the writer idle makes that commit itself, skipping the queue. Records are laid out by
//! `record.rs`; docs/BENCHMARKS.md says why the store is fjall, an LSM tree, rather than redb, a B-tree, and why
//! `interval` has a journal of its own in front of it. The newest messages of each channel stay in memory (at most its `history_size`, and within
//! `max_history_bytes` for the whole server, the oldest going first); a read older than what memory holds is
//! answered from the file.
//!
//! Presence and the log of lifecycle events stay in memory, as with the memory engine: presence is about live
//! connections, which a restart closes anyway, and webhooks' log is a queue of news, not history.

mod journal;
mod record;
mod store;
mod writer;

use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use herald_proto::{time::now_millis, ChannelName, EventName, Position};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::events::memory::MemoryLog;
use super::events::EventLog;
use super::presence::memory::MemoryPresence;
use super::presence::PresenceStore;
use super::{BoxFuture, Delivery, Engine, EngineError, EngineStats, Read, Signals, Start};
use crate::config::Config;
use crate::encoded::{EncodedMessage, Origin};
use store::{Channel, Store};
pub use store::{OpenError, STORE};
use writer::{Command, Draft, Tried, Writing};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under this lock replaces a whole channel state or pushes/pops whole messages.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One channel as this process holds it: what the file says, and its newest messages.
struct Live {
    stored: Channel,
    /// The newest retained messages, ending at `stored.last`, contiguous.
    recent: VecDeque<Arc<EncodedMessage>>,
    last_activity: Instant,
}

impl Live {
    fn recent_first(&self) -> u64 {
        self.recent.front().map_or(self.stored.last + 1, |m| m.message.position.offset)
    }
}

/// What the engine and its writer share.
struct Shared {
    config: Arc<Config>,
    store: Store,
    channels: Mutex<HashMap<ChannelName, Live>>,
    deliver: Delivery,
    /// Bytes of messages held in memory (what `max_history_bytes` bounds).
    bytes: AtomicUsize,
    /// The last write failed; cleared by the next that succeeds.
    failing: AtomicBool,
    /// The last failure was a full disk.
    full: AtomicBool,
    hasher: RandomState,
}

impl Shared {
    fn new_epoch(&self) -> u64 {
        new_epoch(&self.hasher)
    }

    /// Drops the oldest messages held in memory, of all channels, until they are under 90% of the budget. The
    /// file keeps them: a read that needs them reads the file.
    fn evict(&self, channels: &mut HashMap<ChannelName, Live>) {
        let target = self.config.max_history_bytes / 10 * 9;
        let mut oldest: BinaryHeap<std::cmp::Reverse<(u64, ChannelName)>> = channels
            .iter()
            .filter_map(|(name, live)| {
                live.recent.front().map(|m| std::cmp::Reverse((m.message.time_ms, name.clone())))
            })
            .collect();
        while self.bytes.load(Relaxed) > target {
            let Some(std::cmp::Reverse((_, name))) = oldest.pop() else { break };
            let Some(live) = channels.get_mut(&name) else { continue };
            if let Some(m) = live.recent.pop_front() {
                self.bytes.fetch_sub(m.weight(), Relaxed);
            }
            if let Some(m) = live.recent.front() {
                oldest.push(std::cmp::Reverse((m.message.time_ms, name)));
            }
        }
    }
}

fn new_epoch(hasher: &RandomState) -> u64 {
    hasher.hash_one((now_millis(), std::time::SystemTime::now(), std::process::id())).max(1)
}

/// The disk engine.
pub struct DiskEngine {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Command>,
    writing: Arc<Writing>,
    /// `fsync = "interval"`: a publisher finding the writer idle commits its own message.
    commit_inline: bool,
    signals: Signals,
    presence: Arc<MemoryPresence>,
    events: Arc<MemoryLog>,
}

impl DiskEngine {
    /// Opens (or creates) the store in `config.data_dir`, recovering it after an unclean stop, and starts the
    /// writer. Fails when the directory cannot be used or another process holds it.
    pub fn open(config: Arc<Config>, deliver: Delivery) -> Result<Self, EngineError> {
        let (engine, writer) = Self::prepare(config, deliver, writer::QUEUE)?;
        writer.start()?;
        Ok(engine)
    }

    /// Opens the store and builds the engine with a queue of `queue` commands, its writer not yet started.
    fn prepare(config: Arc<Config>, deliver: Delivery, queue: usize) -> Result<(Self, writer::Pending), EngineError> {
        let Some(dir) = config.data_dir.clone() else {
            return Err(EngineError::Unavailable("engine = \"disk\" needs data_dir".into()));
        };
        let hasher = RandomState::new();
        let history_size = |channel: &ChannelName| config.namespace(channel).history_size as u64;
        let opened = store::open(&dir, &mut || new_epoch(&hasher), &history_size)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let now = Instant::now();
        let mut channels = HashMap::new();
        for (name, stored) in opened.channels {
            match ChannelName::new(&name) {
                Ok(name) => {
                    channels.insert(name, Live { stored, recent: VecDeque::new(), last_activity: now });
                }
                Err(_) => tracing::error!(channel = %name, "a channel name on disk is not valid: ignored"),
            }
        }
        tracing::info!(
            engine = "disk",
            data_dir = %dir.display(),
            fsync = config.fsync.name(),
            channels = channels.len(),
            recovered_unclean_stop = opened.unclean,
            "history on disk"
        );
        if opened.unclean {
            tracing::warn!(
                "the last run did not stop cleanly: every channel continues under a new epoch; clients at or behind \
                 what survived resume, clients past it reset"
            );
        }
        let shared = Arc::new(Shared {
            config: config.clone(),
            store: opened.store,
            channels: Mutex::new(channels),
            deliver,
            bytes: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            full: AtomicBool::new(false),
            hasher,
        });
        let (queue, commands) = mpsc::channel(queue);
        let interval = config.fsync == crate::config::FsyncPolicy::Interval;
        let writing = Writing::new(shared.clone(), interval.then_some(opened.journal), opened.seq);
        let writer = writer::Pending::new(writing.clone(), commands);
        let events = Arc::new(MemoryLog::default());
        let engine = Self {
            shared,
            queue,
            writing,
            commit_inline: interval,
            signals: Signals::default(),
            presence: Arc::new(MemoryPresence::new(events.clone())),
            events,
        };
        Ok((engine, writer))
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        let closed = writer::stopping;
        // A full queue makes the caller wait (every publisher waits its turn): the queue bounds memory, the
        // publishers' own timeouts bound the wait.
        self.queue.send(make(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())
    }

    async fn store(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Bytes,
        origin: Origin,
    ) -> Result<Arc<EncodedMessage>, EngineError> {
        let mut draft = Draft { channel, event, data, origin };
        if self.commit_inline {
            match self.writing.try_publish(draft) {
                Tried::Done(stored) => return stored,
                Tried::Busy(back) => draft = back,
            }
        }
        self.command(|reply| Command::Publish(writer::Publish { draft, reply })).await?
    }

    async fn read_channel(&self, channel: &ChannelName, start: Start, limit: usize) -> Result<Read, EngineError> {
        let ttl_ms = self.shared.config.namespace(channel).history_ttl.as_millis() as u64;
        let expired_before = now_millis().saturating_sub(ttl_ms);
        for _ in 0..2 {
            // What memory answers, or what the file must.
            let (stored, from_memory) = {
                let channels = lock(&self.shared.channels);
                let Some(live) = channels.get(channel) else { return Ok(super::read_missing(start)) };
                let stored = live.stored;
                let start = translate(start, &stored);
                // Memory answers when it holds everything from where the read starts, expired messages skipped.
                let unexpired = live.recent.iter().position(|m| m.message.time_ms > expired_before);
                let whole = live.recent_first() <= stored.first;
                let first = match unexpired {
                    Some(i) if whole || i > 0 => live.recent[i].message.position.offset,
                    None if whole || !live.recent.is_empty() => stored.last + 1,
                    _ => stored.first,
                };
                let (from, reset) = super::plan(start, stored.epoch, first, stored.last);
                let answer = (from >= live.recent_first() || from > stored.last).then(|| {
                    let skip = from.saturating_sub(live.recent_first()) as usize;
                    let messages = live.recent.iter().skip(skip).take(limit).cloned().collect();
                    Read { messages, reset, start: Position::new(stored.epoch, from - 1), head: head(&stored) }
                });
                (stored, answer)
            };
            if let Some(read) = from_memory {
                return Ok(read);
            }
            match self.read_file(channel, start, limit, stored, expired_before).await? {
                Ok(read) => return Ok(read),
                Err(damaged_at) => {
                    // A record that cannot be trusted: the history up to it is dropped, and the read tried again
                    // (a cursor before it now resets instead of reading past a hole).
                    tracing::error!(%channel, offset = damaged_at, "a damaged record: the history up to it is dropped");
                    self.command(|reply| Command::Forget { channel: channel.clone(), through: damaged_at, reply })
                        .await?;
                }
            }
        }
        Err(EngineError::Unavailable(format!("the history of {channel} on disk cannot be read")))
    }

    /// Answers a read from the file; `Err(offset)` names a record that cannot be trusted.
    async fn read_file(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
        stored: Channel,
        expired_before: u64,
    ) -> Result<Result<Read, u64>, EngineError> {
        let start = translate(start, &stored);
        let shared = self.shared.clone();
        let writing = self.writing.clone();
        let name = channel.clone();
        // Expired records at the front are skipped (the writer drops them at the next sweep): the history the
        // read is planned on starts at the first unexpired one.
        let task = tokio::task::spawn_blocking(move || -> Result<Result<Read, u64>, EngineError> {
            // `interval`: what the journal holds ahead of the store goes into it first, so that it holds every
            // message up to `stored.last`.
            writing.catch_up()?;
            let engine_error = |e| writer::engine_error(&shared, e);
            let first = shared
                .store
                .first_unexpired(name.as_str(), stored.first, stored.last, expired_before)
                .map_err(engine_error)?;
            let (from, reset) = super::plan(start, stored.epoch, first, stored.last);
            let mut messages = Vec::new();
            if from <= stored.last && limit > 0 {
                let records = shared.store.read(name.as_str(), from, stored.last, limit).map_err(engine_error)?;
                if records.is_empty() {
                    // The file holds less than its channel record says: what is missing is lost.
                    return Ok(Err(stored.last));
                }
                for (i, (offset, bytes)) in records.iter().enumerate() {
                    let position = Position::new(stored.epoch, from + i as u64);
                    match record::decode(&name, position, bytes) {
                        Ok((message, origin)) if *offset == position.offset => {
                            messages.push(EncodedMessage::with_origin(message, origin))
                        }
                        _ => return Ok(Err(position.offset)),
                    }
                }
            }
            Ok(Ok(Read { messages, reset, start: Position::new(stored.epoch, from - 1), head: head(&stored) }))
        });
        task.await.map_err(|e| EngineError::Unavailable(format!("reading the disk: {e}")))?
    }
}

/// A cursor of the epoch an unclean stop replaced, at or behind what survived, read as the same offset of the new
/// epoch (the messages up to there are the same); past it, left alone, so that it resets.
fn translate(start: Start, stored: &Channel) -> Start {
    match start {
        Start::After(p) if stored.prev.0 != 0 && p.epoch == stored.prev.0 && p.offset <= stored.prev.1 => {
            Start::After(Position::new(stored.epoch, p.offset))
        }
        other => other,
    }
}

fn head(stored: &Channel) -> Position {
    Position::new(stored.epoch, stored.last)
}

impl Engine for DiskEngine {
    fn name(&self) -> &'static str {
        "disk"
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
        self.signals.deliver(signal);
        Box::pin(std::future::ready(Ok(())))
    }

    fn signals(&self) -> tokio::sync::broadcast::Receiver<Bytes> {
        self.signals.subscribe()
    }

    fn read<'a>(
        &'a self,
        channel: &'a ChannelName,
        start: Start,
        limit: usize,
    ) -> BoxFuture<'a, Result<Read, EngineError>> {
        Box::pin(self.read_channel(channel, start, limit))
    }

    fn sweep(&self, watched: &(dyn Fn(&ChannelName) -> bool + Sync)) {
        let now = Instant::now();
        let wall = now_millis();
        let (mut expire, mut forget) = (Vec::new(), Vec::new());
        {
            let mut channels = lock(&self.shared.channels);
            channels.retain(|name, live| {
                let ttl = self.shared.config.namespace(name).history_ttl;
                let expired_before = wall.saturating_sub(ttl.as_millis() as u64);
                while live.recent.front().is_some_and(|m| m.message.time_ms <= expired_before) {
                    if let Some(m) = live.recent.pop_front() {
                        self.shared.bytes.fetch_sub(m.weight(), Relaxed);
                    }
                }
                let empty = live.stored.first > live.stored.last;
                if !empty && live.recent_first() > live.stored.first {
                    // Older messages than memory holds are on disk, some perhaps expired.
                    expire.push(name.clone());
                }
                let free = empty && now.duration_since(live.last_activity) >= ttl && !watched(name);
                if free {
                    forget.push(name.clone());
                }
                !free
            });
        }
        // A full queue skips this round: the next sweep does it.
        if !expire.is_empty() || !forget.is_empty() {
            let _ = self.queue.try_send(Command::Sweep { expire, forget });
        }
    }

    fn stats(&self) -> EngineStats {
        let channels = lock(&self.shared.channels);
        EngineStats {
            channels: channels.len() as u64,
            messages: channels.values().map(|l| (l.stored.last + 1).saturating_sub(l.stored.first)).sum(),
            bytes: self.shared.bytes.load(Relaxed) as u64,
        }
    }

    fn healthy(&self) -> bool {
        !self.shared.failing.load(Relaxed) && !self.queue.is_closed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.command(Command::Close).await.is_err() {
                tracing::warn!("the disk engine was already stopped");
            }
        })
    }

    fn presence(&self) -> Arc<dyn PresenceStore> {
        self.presence.clone()
    }

    fn events(&self) -> Arc<dyn EventLog> {
        self.events.clone()
    }
}

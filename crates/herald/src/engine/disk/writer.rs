//! The disk engine's one writer: every change to the file goes through it, in the order it was queued.
//!
//! Publishes wait in a bounded queue ([`QUEUE`]; a publisher finding it full waits its turn). The writer takes
//! everything queued, up to [`BATCH`], assigns offsets, writes the records and the channels' new bounds in one
//! transaction and commits it: durably with `fsync = "always"` (one fsync for the whole batch: while it runs, the
//! next batch queues, so throughput grows with concurrency), or with `fsync = "interval"` without waiting for
//! the disk, a durable commit following within `fsync_interval_ms`. Only a committed message is put in memory,
//! handed to subscribers and answered: a failed commit stores nothing and answers every publisher of the batch
//! with the error (507 when the disk is full). Sweeps (expiry, idle channels) and the repair of a damaged record
//! queue here too. `Close` commits what is left and marks the file as stopped cleanly.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_proto::{time::now_millis, ChannelName, EventName, Message, Position};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::store::{Channel, Store};
use super::{lock, record, Live, Shared};
use crate::config::FsyncPolicy;
use crate::encoded::{EncodedMessage, Origin};
use crate::engine::EngineError;

/// Commands waiting for the writer at most; a publisher finding the queue full waits for room.
pub(super) const QUEUE: usize = 8192;
/// Commands the writer takes into one transaction at most.
pub(super) const BATCH: usize = 1024;

/// The answer to a publish.
type Answer = oneshot::Sender<Result<Arc<EncodedMessage>, EngineError>>;

/// What the writer is asked to do.
pub(super) enum Command {
    /// Store a message.
    Publish { channel: ChannelName, event: EventName, data: Bytes, origin: Origin, reply: Answer },
    /// Drop expired records of `expire`; forget `forget`, which memory has already let go of (unless a publish
    /// brought one back since).
    Sweep { expire: Vec<ChannelName>, forget: Vec<ChannelName> },
    /// Drop `channel`'s records up to `through` (one of them is damaged).
    Forget { channel: ChannelName, through: u64, reply: oneshot::Sender<()> },
    /// Commit what is left, mark the file clean, stop.
    Close(oneshot::Sender<()>),
}

/// A publish taken from the queue.
struct Publish {
    channel: ChannelName,
    event: EventName,
    data: Bytes,
    origin: Origin,
    reply: Answer,
}

/// Runs the writer until `Close` or until every sender is gone.
pub(super) async fn run(shared: Arc<Shared>, mut commands: mpsc::Receiver<Command>) {
    let always = shared.config.fsync == FsyncPolicy::Always;
    let interval = shared.config.fsync_interval;
    let mut writer = Writer { shared, always, interval, unsynced_since: None };
    let mut taken = Vec::with_capacity(BATCH);
    loop {
        let got = match writer.unsynced_since {
            Some(since) => tokio::select! {
                got = commands.recv_many(&mut taken, BATCH) => got,
                () = tokio::time::sleep_until(since + interval) => {
                    writer.sync().await;
                    continue;
                }
            },
            None => commands.recv_many(&mut taken, BATCH).await,
        };
        if got == 0 {
            writer.close().await;
            return;
        }
        let mut publishes = Vec::new();
        for command in taken.drain(..) {
            match command {
                Command::Publish { channel, event, data, origin, reply } => {
                    publishes.push(Publish { channel, event, data, origin, reply })
                }
                other => {
                    writer.publish(std::mem::take(&mut publishes)).await;
                    match other {
                        Command::Sweep { expire, forget } => writer.sweep(expire, forget).await,
                        Command::Forget { channel, through, reply } => {
                            writer.forget(channel, through).await;
                            let _ = reply.send(());
                        }
                        Command::Close(reply) => {
                            writer.close().await;
                            let _ = reply.send(());
                            return;
                        }
                        Command::Publish { .. } => {}
                    }
                }
            }
        }
        writer.publish(publishes).await;
    }
}

/// A channel's bounds before and after a transaction.
type Bounds = HashMap<ChannelName, (Channel, Channel)>;

struct Writer {
    shared: Arc<Shared>,
    always: bool,
    interval: Duration,
    /// The first commit since the last durable one (`interval`).
    unsynced_since: Option<Instant>,
}

impl Writer {
    /// Whether the next commit is a durable one.
    fn durable(&self) -> bool {
        self.always || self.unsynced_since.is_some_and(|since| since.elapsed() >= self.interval)
    }

    /// Runs `write` into one batch off the runtime's threads and commits it, durably or not; what it returns,
    /// once committed.
    async fn transact<T: Send + 'static>(
        &mut self,
        durable: bool,
        write: impl FnOnce(&Store, &mut fjall::Batch) -> Result<T, fjall::Error> + Send + 'static,
    ) -> Result<T, EngineError> {
        let shared = self.shared.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<T, fjall::Error> {
            let mut batch = shared.store.batch();
            let out = write(&shared.store, &mut batch)?;
            if batch.is_empty() && durable {
                shared.store.sync()?;
            } else {
                shared.store.commit(batch, durable)?;
            }
            Ok(out)
        })
        .await
        .map_err(|e| EngineError::Unavailable(format!("the disk writer failed: {e}")))?;
        match done {
            Ok(out) => {
                if self.shared.failing.swap(false, Relaxed) {
                    tracing::info!("writing to the data dir succeeds again");
                }
                self.unsynced_since = if durable { None } else { self.unsynced_since.or(Some(Instant::now())) };
                Ok(out)
            }
            Err(e) => Err(engine_error(&self.shared, e)),
        }
    }

    async fn publish(&mut self, publishes: Vec<Publish>) {
        if publishes.is_empty() {
            return;
        }
        let time_ms = now_millis();
        let mut bounds = Bounds::new();
        let mut messages = Vec::with_capacity(publishes.len());
        let mut records = Vec::with_capacity(publishes.len());
        let mut replies = Vec::with_capacity(publishes.len());
        {
            let channels = lock(&self.shared.channels);
            for p in publishes {
                let (_, after) = bounds.entry(p.channel.clone()).or_insert_with(|| {
                    let stored =
                        channels.get(&p.channel).map_or_else(|| Channel::new(self.shared.new_epoch()), |l| l.stored);
                    (stored, stored)
                });
                after.last += 1;
                let size = self.shared.config.namespace(&p.channel).history_size as u64;
                after.first = after.first.max((after.last + 1).saturating_sub(size));
                let position = Position::new(after.epoch, after.last);
                records.push((
                    p.channel.clone(),
                    position.offset,
                    record::encode(position.offset, time_ms, p.event.as_str(), &p.origin, &p.data),
                ));
                let message = Message { channel: p.channel, position, event: p.event, data: p.data, time_ms };
                messages.push(EncodedMessage::with_origin(message, p.origin));
                replies.push(p.reply);
            }
        }
        let rows: Vec<(ChannelName, Channel, Channel)> = bounds.into_iter().map(|(c, (b, a))| (c, b, a)).collect();
        let written = rows.clone();
        let durable = self.durable();
        let committed = self
            .transact(durable, move |store, batch| {
                for (channel, offset, bytes) in &records {
                    store.put_message(batch, channel.as_str(), *offset, bytes);
                }
                for (channel, before, after) in &written {
                    // What the size limit pushed out: records from the old first, and this batch's own if it
                    // alone was longer than the limit.
                    if after.first > before.first {
                        store.remove_known(batch, channel.as_str(), before.first, after.first - 1);
                    }
                    store.put_channel(batch, channel.as_str(), *after);
                }
                Ok(())
            })
            .await;
        if let Err(err) = committed {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        self.commit_to_memory(&rows, &messages);
        for (reply, message) in replies.into_iter().zip(messages) {
            let _ = reply.send(Ok(message));
        }
    }

    /// Puts committed messages in memory and hands them to subscribers, in offset order per channel.
    fn commit_to_memory(&self, rows: &[(ChannelName, Channel, Channel)], messages: &[Arc<EncodedMessage>]) {
        let shared = &self.shared;
        let now = Instant::now();
        let mut channels = lock(&shared.channels);
        for (channel, _, after) in rows {
            let live = channels.entry(channel.clone()).or_insert_with(|| Live {
                stored: *after,
                recent: Default::default(),
                last_activity: now,
            });
            live.stored = *after;
            live.last_activity = now;
        }
        for message in messages {
            let Some(live) = channels.get_mut(&message.message.channel) else { continue };
            live.recent.push_back(message.clone());
            shared.bytes.fetch_add(message.weight(), Relaxed);
            let size = shared.config.namespace(&message.message.channel).history_size;
            while live.recent.len() > size
                || live.recent.front().is_some_and(|m| m.message.position.offset < live.stored.first)
            {
                if let Some(m) = live.recent.pop_front() {
                    shared.bytes.fetch_sub(m.weight(), Relaxed);
                }
            }
            (shared.deliver)(message);
        }
        if shared.bytes.load(Relaxed) > shared.config.max_history_bytes {
            shared.evict(&mut channels);
        }
    }

    /// Drops expired records of `expire` and forgets the channels of `forget` that memory still lacks.
    async fn sweep(&mut self, expire: Vec<ChannelName>, forget: Vec<ChannelName>) {
        let wall = now_millis();
        let (expiring, forgetting) = {
            let channels = lock(&self.shared.channels);
            let expiring: Vec<(ChannelName, Channel, u64)> = expire
                .into_iter()
                .filter_map(|c| {
                    let stored = channels.get(&c)?.stored;
                    let ttl = self.shared.config.namespace(&c).history_ttl.as_millis() as u64;
                    Some((c, stored, wall.saturating_sub(ttl)))
                })
                .collect();
            let forgetting: Vec<ChannelName> = forget.into_iter().filter(|c| !channels.contains_key(c)).collect();
            (expiring, forgetting)
        };
        let durable = self.durable();
        let done = self
            .transact(durable, move |store, batch| {
                let mut firsts = Vec::new();
                for (channel, stored, expired_before) in expiring {
                    let first = store.first_unexpired(channel.as_str(), stored.first, stored.last, expired_before)?;
                    if first != stored.first {
                        store.remove_messages(batch, channel.as_str(), stored.first, first - 1)?;
                        store.put_channel(batch, channel.as_str(), Channel { first, ..stored });
                        firsts.push((channel, stored.epoch, first));
                    }
                }
                for channel in forgetting {
                    store.remove_channel(batch, channel.as_str())?;
                }
                Ok(firsts)
            })
            .await;
        match done {
            Ok(firsts) => self.advance(firsts),
            Err(err) => tracing::warn!(%err, "a sweep of the data dir failed; the next one tries again"),
        }
    }

    /// Drops `channel`'s records up to `through`.
    async fn forget(&mut self, channel: ChannelName, through: u64) {
        let Some(stored) = lock(&self.shared.channels).get(&channel).map(|l| l.stored) else { return };
        let first = (through + 1).max(stored.first).min(stored.last + 1);
        let name = channel.clone();
        let done = self
            .transact(true, move |store, batch| {
                store.remove_messages(batch, name.as_str(), 0, first.saturating_sub(1))?;
                store.put_channel(batch, name.as_str(), Channel { first, ..stored });
                Ok(())
            })
            .await;
        match done {
            Ok(()) => self.advance(vec![(channel, stored.epoch, first)]),
            Err(err) => tracing::warn!(%err, "dropping a damaged record failed"),
        }
    }

    /// Moves channels' first offsets forward in memory, after the file.
    fn advance(&self, firsts: Vec<(ChannelName, u64, u64)>) {
        let mut channels = lock(&self.shared.channels);
        for (channel, epoch, first) in firsts {
            if let Some(live) = channels.get_mut(&channel).filter(|l| l.stored.epoch == epoch) {
                live.stored.first = live.stored.first.max(first);
                while live.recent.front().is_some_and(|m| m.message.position.offset < live.stored.first) {
                    if let Some(m) = live.recent.pop_front() {
                        self.shared.bytes.fetch_sub(m.weight(), Relaxed);
                    }
                }
            }
        }
    }

    /// Makes every commit so far durable.
    async fn sync(&mut self) {
        if let Err(err) = self.transact(true, |_, _| Ok(())).await {
            tracing::error!(%err, "the periodic fsync of the data dir failed");
        }
    }

    /// Commits what is left and marks the file as stopped cleanly.
    async fn close(&mut self) {
        let shared = self.shared.clone();
        let marked = tokio::task::spawn_blocking(move || shared.store.mark_clean()).await;
        match marked {
            Ok(Ok(())) => tracing::info!("the data dir is closed cleanly"),
            Ok(Err(err)) => tracing::error!(%err, "the data dir could not be marked clean: the next start recovers it"),
            Err(err) => tracing::error!(%err, "the data dir could not be marked clean: the next start recovers it"),
        }
    }
}

/// The engine's error for a failure of the store: `Full` when the disk (or the file-size limit) is, and the engine
/// counts as failing until a write succeeds.
pub(super) fn engine_error(shared: &Shared, err: fjall::Error) -> EngineError {
    let was_failing = shared.failing.swap(true, Relaxed);
    let full = match &err {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => is_full(io),
        // fjall refuses every write after a failed fsync until the store is reopened (the cause only reaches its
        // own log): the disk's free space tells whether room is what is missing.
        fjall::Error::Poisoned => shared.full.load(Relaxed) || shared.config.data_dir.as_deref().is_some_and(no_room),
        _ => false,
    };
    shared.full.store(full, Relaxed);
    if !was_failing {
        tracing::error!(%err, full, "writing to the data dir fails: publishing answers errors until it succeeds");
    }
    if full {
        EngineError::Full(format!("the disk holding the data dir is full: {err}"))
    } else {
        EngineError::Unavailable(format!("the data dir: {err}"))
    }
}

/// Whether the filesystem of `dir` has less than 1 MiB left for this process.
fn no_room(dir: &std::path::Path) -> bool {
    rustix::fs::statvfs(dir).is_ok_and(|fs| fs.f_bavail.saturating_mul(fs.f_frsize) < 1024 * 1024)
}

/// ENOSPC, EDQUOT or EFBIG (a file-size limit): room, not the disk itself, is missing.
fn is_full(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(28 | 122 | 27))
}

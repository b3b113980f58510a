//! The disk engine's one writer: every change to the file goes through it, one at a time. It runs on a thread of
//! its own ([`Pending::start`]), since most of its steps wait on the disk.
//!
//! With `fsync = "interval"` a commit is a write to the disk engine's own journal (`journal.rs`: one `write(2)`
//! into the kernel's cache, no fsync), and a publisher that finds the writer idle makes it itself, on its own
//! thread ([`Writing::try_publish`]): handing it to the writer's thread and back cost two thread wake-ups, which
//! a lone publisher paid on every publish (docs/BENCHMARKS.md, "The disk engine"). The store (fjall) is written
//! behind the journal by the writer's thread, many messages to a batch ([`CATCH_UP_AT`], at each periodic fsync,
//! and before anything reads the store or changes it otherwise: a read older than memory, a sweep, `Close`); the
//! writer's *turn* orders those writes. A publisher that finds the writer busy (its thread committing a batch, a
//! sweep or the periodic fsync), or the store [`BEHIND_AT_MOST`] behind, queues as below; the writer's
//! thread keeps the fsync timer, woken by the first commit after a durable one ([`Writing::wake`]). With `always`
//! every publish queues and is committed straight into the store: a durable commit is an fsync, which must not
//! block a thread of the server's runtime, and waiting in the queue is what lets publishers share it.
//!
//! Queued publishes wait in a bounded queue ([`QUEUE`]; a publisher finding it full waits for room: nothing is refused
//! or dropped for it, and the publishers' own timeouts bound the wait). The writer takes everything queued, up to
//! [`BATCH`], assigns offsets and commits them in one write: with `fsync = "always"` the records and the
//! channels' new bounds in one transaction of the store, durably (one fsync for the whole batch: while it runs,
//! the next batch queues, and the writer waits up to one fsync's time for the publishers it just answered, so
//! throughput grows with concurrency), or with `fsync = "interval"` into the journal, a durable commit (an fsync
//! of the journal) following within `fsync_interval_ms`. Only a committed message is put in memory, handed to
//! subscribers and answered: a failed commit stores nothing and answers every publisher of the batch with the
//! error (507 when the disk is full). Sweeps (expiry, idle channels) and the repair of a damaged record queue here
//! too. `Close` writes what the journal holds into the store and marks the file as stopped cleanly.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use bytes::Bytes;
use herald_proto::{time::now_millis, ChannelName, EventName, Message, Position};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::journal::Journal;
use super::store::{Behind, Channel, Store};
use super::{lock, record, Live, Shared};
use crate::config::FsyncPolicy;
use crate::encoded::{EncodedMessage, Origin};
use crate::engine::EngineError;

/// Commands waiting for the writer at most; a publisher finding the queue full waits for room. It bounds the
/// memory that publishes waiting for the disk hold (8,192 of at most `max_body_bytes` each), not their number
/// in flight: those wait in their HTTP requests.
pub(super) const QUEUE: usize = 8192;
/// Commands the writer takes into one transaction at most.
pub(super) const BATCH: usize = 1024;
/// `interval`: messages (or bytes of their frames) in the journal and not yet in the store at which the writer's
/// thread writes them into it; it also does at every periodic fsync. The more a batch holds, the less it writes: a
/// channel publishing more than its `history_size` within one batch has only its last `history_size` records
/// written, the records the size limit pushed out of the store are deleted once per batch, and each channel's
/// bounds are written once per batch (32,768 rather than 4,096: docs/BENCHMARKS.md, "The disk engine").
const CATCH_UP_AT: (usize, usize) = (32 * 1024, 8 * 1024 * 1024);
/// `interval`: messages (or bytes of frames) in the journal and not yet in the store at most; a publisher finding
/// that many queues, and the writer's thread writes them into the store before it takes the queue. What the
/// journal holds ahead of the store is kept in memory until written: this bounds it (32 MiB of frames).
const BEHIND_AT_MOST: (usize, usize) = (64 * 1024, 32 * 1024 * 1024);
/// `interval`: the journal's size at which, at the next periodic fsync, the store is fsynced and the journal
/// started again, empty: what a replay after a crash reads at most (plus one interval's messages).
const JOURNAL_ROTATE: u64 = 32 * 1024 * 1024;
/// `interval`: times a publisher finding the writer taken by another publisher tries it again before it queues.
/// Another publisher holds it for one commit (an encoding and a `write(2)`, a few µs), and waiting that long costs
/// less than the queue's two thread wake-ups, which a quarter of the publishes paid at 32 publishers when every
/// one that found it taken queued (docs/BENCHMARKS.md, "The disk engine"). A publisher never waits for the
/// writer's thread: it queues as soon as that thread holds it.
const TRIES: usize = 64;
/// `interval`: of [`TRIES`], how many spin ([`PAUSES`] spin-loop hints each, about 1.5 µs on the benchmark's
/// machine, some 50 µs in all) before the rest yield the thread (none spin with one CPU). A yield hands the core
/// to whatever else is ready, most often another process, and the publisher's thread (with every task queued on
/// it) waits for its next turn on the core, though the commit it waits for ends within µs; spinning first took the
/// involuntary context switches of the runtime's threads from 0.18 to 0.07 per publish at 32 publishers and raised
/// `interval`'s publishes/s there by 4–11% (docs/BENCHMARKS.md, "Spinning before yielding"). The yields that follow
/// are for a commit whose publisher lost its core meanwhile.
const SPINS: usize = 32;
/// `interval`: spin-loop hints (`pause` on x86) between two spinning tries: the lock's cache line is not taken
/// from its holder at every one.
const PAUSES: usize = 32;

/// The answer to a publish.
type Answer = oneshot::Sender<Result<Arc<EncodedMessage>, EngineError>>;

/// What the writer is asked to do.
pub(super) enum Command {
    /// Store a message.
    Publish(Publish),
    /// Drop expired records of `expire`; forget `forget`, which memory has already let go of (unless a publish
    /// brought one back since).
    Sweep { expire: Vec<ChannelName>, forget: Vec<ChannelName> },
    /// Drop `channel`'s records up to `through` (one of them is damaged).
    Forget { channel: ChannelName, through: u64, reply: oneshot::Sender<()> },
    /// Commit what is left, mark the file clean, stop.
    Close(oneshot::Sender<()>),
}

/// A message to store.
pub(super) struct Draft {
    pub(super) channel: ChannelName,
    pub(super) event: EventName,
    pub(super) data: Bytes,
    pub(super) origin: Origin,
}

/// A queued message to store, and its publisher waiting for the answer.
pub(super) struct Publish {
    pub(super) draft: Draft,
    pub(super) reply: Answer,
}

/// The writer, shared by its thread and the publishers that find it idle (`interval`).
pub(super) struct Writing {
    shared: Arc<Shared>,
    /// Whose turn it is to write to the store: held by the writer's thread for all its work and by whoever writes
    /// into the store what the journal holds ahead of it, so that those writes reach it in journal order. Always
    /// taken before `writer`, never while holding it; publishers only ever take `writer`.
    turn: Mutex<()>,
    writer: Mutex<Writer>,
    /// The writer's thread holds `writer`, or is about to: for anything from a batch of queued publishes to an
    /// fsync or a sweep, which a publisher does not wait for ([`TRIES`]).
    held_by_thread: AtomicBool,
    /// Told when a publisher's own commit is the first since the last durable one (the writer's thread then sets
    /// its fsync timer) or makes the journal [`CATCH_UP_AT`] ahead of the store (the writer's thread then
    /// writes them into it). A permit is kept if the thread is not waiting yet, so none is missed.
    wake: Notify,
    /// Publishes go through the journal (`interval`); without it the store is never behind.
    journaled: bool,
    /// Of a publisher's [`TRIES`], how many spin: [`SPINS`], or none on a machine with one CPU, where the holder
    /// cannot release the writer while another spins.
    spins: usize,
}

/// What [`Writing::try_publish`] did.
pub(super) enum Tried {
    /// The message was committed (or refused) here.
    Done(Result<Arc<EncodedMessage>, EngineError>),
    /// The writer is busy: the draft is given back, to be queued.
    Busy(Draft),
}

impl Writing {
    /// The writer of `shared`'s store; with `journal` (`interval`), publishes are written to it, its next frame
    /// numbered `seq`, and into the store behind it.
    pub(super) fn new(shared: Arc<Shared>, journal: Option<Journal>, seq: u64) -> Arc<Self> {
        let always = shared.config.fsync == FsyncPolicy::Always;
        let interval = shared.config.fsync_interval;
        let journaled = journal.is_some();
        let writer = Writer {
            shared: shared.clone(),
            always,
            interval,
            unsynced_since: None,
            answered: 0,
            fsync_took: Duration::ZERO,
            closed: false,
            journal,
            seq,
            behind: Behind::default(),
        };
        Arc::new(Self {
            shared,
            turn: Mutex::new(()),
            writer: Mutex::new(writer),
            held_by_thread: AtomicBool::new(false),
            wake: Notify::new(),
            journaled,
            spins: if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 { SPINS } else { 0 },
        })
    }

    /// Writes into the store what the journal holds ahead of it (`interval`): before a read of the store.
    pub(super) fn catch_up(&self) -> Result<(), EngineError> {
        if !self.journaled {
            // `always`: the turn may be held through an fsync, and there is nothing to wait for.
            return Ok(());
        }
        let turn = lock(&self.turn);
        self.catch_up_in_turn(&turn)
    }

    /// [`Writing::catch_up`], `turn` already held; the store is written without holding `writer`, so publishers
    /// go on journaling meanwhile.
    fn catch_up_in_turn(&self, _turn: &MutexGuard<'_, ()>) -> Result<(), EngineError> {
        let mut behind = std::mem::take(&mut lock(&self.writer).behind);
        if let Err(err) = self.shared.store.write_behind(&mut behind) {
            let mut writer = lock(&self.writer);
            let newer = std::mem::replace(&mut writer.behind, behind);
            writer.behind.extend(newer);
            return Err(engine_error(&self.shared, err));
        }
        Ok(())
    }

    /// Commits `draft` on the caller's thread if the writer is idle, without waiting for the disk: for `fsync =
    /// "interval"` only, where a commit is a write to the journal (the kernel's cache), not an fsync.
    pub(super) fn try_publish(&self, draft: Draft) -> Tried {
        let Some(mut writer) = self.try_writer() else { return Tried::Busy(draft) };
        if writer.closed {
            return Tried::Done(Err(stopping()));
        }
        if writer.behind.reached(BEHIND_AT_MOST) {
            return Tried::Busy(draft);
        }
        let synced = writer.unsynced_since.is_none();
        let due = writer.behind.reached(CATCH_UP_AT);
        let stored = writer.store(vec![draft], false);
        if synced && writer.unsynced_since.is_some() || !due && writer.behind.reached(CATCH_UP_AT) {
            self.wake.notify_one();
        }
        Tried::Done(stored.map(|mut messages| messages.remove(0)))
    }
}

impl Writing {
    /// The writer for a publisher's commit, unless its thread holds it or another publisher keeps it past
    /// [`TRIES`] tries: spinning first, then yielding ([`SPINS`]).
    fn try_writer(&self) -> Option<MutexGuard<'_, Writer>> {
        for i in 0..TRIES {
            if self.held_by_thread.load(Relaxed) {
                return None;
            }
            match self.writer.try_lock() {
                Ok(writer) => return Some(writer),
                // Every change under this lock is a whole commit or a whole field: what a panic left is usable.
                Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
                // No wait after the last try: the publisher queues at once.
                Err(TryLockError::WouldBlock) if i + 1 == TRIES => {}
                Err(TryLockError::WouldBlock) if i < self.spins => {
                    for _ in 0..PAUSES {
                        std::hint::spin_loop();
                    }
                }
                Err(TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
        None
    }

    /// The writer, for its thread: publishers that find it taken queue rather than wait ([`TRIES`]).
    fn hold(&self) -> Held<'_> {
        self.held_by_thread.store(true, Relaxed);
        Held { writer: lock(&self.writer), held_by_thread: &self.held_by_thread }
    }
}

/// The writer as its thread holds it ([`Writing::hold`]).
struct Held<'a> {
    writer: MutexGuard<'a, Writer>,
    held_by_thread: &'a AtomicBool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.held_by_thread.store(false, Relaxed);
    }
}

impl Deref for Held<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        &self.writer
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.writer
    }
}

/// The error of a publish the writer will not take any more.
pub(super) fn stopping() -> EngineError {
    EngineError::Unavailable("the disk engine is stopping".into())
}

/// The writer, built but not yet running: [`Pending::start`] gives it its thread.
pub(super) struct Pending {
    writing: Arc<Writing>,
    commands: mpsc::Receiver<Command>,
}

impl Pending {
    pub(super) fn new(writing: Arc<Writing>, commands: mpsc::Receiver<Command>) -> Self {
        Self { writing, commands }
    }

    /// Starts the writer on a thread of its own. Every step of the writer waits on the disk (a commit, an
    /// fsync), so it runs where blocking costs nobody else, with a runtime of its own for its queue and its
    /// fsync timer, rather than as a task that hands each commit to tokio's blocking pool: that hand-off and
    /// back cost two thread wake-ups per batch, which a lone publisher waits for on every publish.
    pub(super) fn start(self) -> Result<(), EngineError> {
        let failed = |e: std::io::Error| EngineError::Unavailable(format!("cannot start the disk writer: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(failed)?;
        let Self { writing, commands } = self;
        std::thread::Builder::new()
            .name("herald-disk-writer".into())
            .spawn(move || runtime.block_on(run(writing, commands)))
            .map_err(failed)?;
        Ok(())
    }
}

/// Runs the writer until `Close` or until every sender is gone. The writer's lock is held while a batch is
/// committed and during the periodic fsync, never while waiting.
async fn run(writing: Arc<Writing>, mut commands: mpsc::Receiver<Command>) {
    let (always, interval) = {
        let writer = lock(&writing.writer);
        (writer.always, writer.interval)
    };
    let mut taken = Vec::with_capacity(BATCH);
    // Commands queued behind the last batch when it was committed.
    let mut behind = 0;
    loop {
        let unsynced_since = lock(&writing.writer).unsynced_since;
        let got = match unsynced_since {
            Some(since) => tokio::select! {
                got = commands.recv_many(&mut taken, BATCH) => got,
                () = tokio::time::sleep_until(since + interval) => {
                    let turn = lock(&writing.turn);
                    // Most of what the journal holds ahead of the store is written while publishers go on.
                    if let Err(err) = writing.catch_up_in_turn(&turn) {
                        tracing::warn!(%err, "writing the journal's messages into the store failed");
                    }
                    writing.hold().sync();
                    continue;
                }
                () = writing.wake.notified() => {
                    writing.catch_up_if_far_behind();
                    continue;
                }
            },
            None => tokio::select! {
                got = commands.recv_many(&mut taken, BATCH) => got,
                // A publisher committed the first message since the last fsync (set the timer), or the journal
                // is far ahead of the store.
                () = writing.wake.notified() => {
                    writing.catch_up_if_far_behind();
                    continue;
                }
            },
        };
        if got == 0 {
            let _turn = lock(&writing.turn);
            writing.hold().close();
            return;
        }
        if always {
            // Those the last commit answered, and those that were queued behind it: the publishers at work.
            let (answered, patience) = {
                let writer = lock(&writing.writer);
                (writer.answered, writer.fsync_took)
            };
            gather(&mut commands, &mut taken, answered + behind, patience).await;
        }
        let turn = lock(&writing.turn);
        let mut writer = writing.hold();
        let mut publishes = Vec::new();
        for command in taken.drain(..) {
            match command {
                Command::Publish(publish) => publishes.push(publish),
                other => {
                    writer.publish(std::mem::take(&mut publishes));
                    match other {
                        Command::Sweep { expire, forget } => writer.sweep(expire, forget),
                        Command::Forget { channel, through, reply } => {
                            writer.forget(channel, through);
                            let _ = reply.send(());
                        }
                        Command::Close(reply) => {
                            writer.close();
                            let _ = reply.send(());
                            return;
                        }
                        Command::Publish(_) => {}
                    }
                }
            }
        }
        writer.publish(publishes);
        let far_behind = writer.behind.reached(CATCH_UP_AT);
        drop(writer);
        if far_behind {
            if let Err(err) = writing.catch_up_in_turn(&turn) {
                tracing::warn!(%err, "writing the journal's messages into the store failed; the next batch tries again");
            }
        }
        drop(turn);
        behind = commands.len();
    }
}

impl Writing {
    /// On the writer's thread: writes the journal's messages into the store if they are [`CATCH_UP_AT`] or more.
    fn catch_up_if_far_behind(&self) {
        let turn = lock(&self.turn);
        if lock(&self.writer).behind.reached(CATCH_UP_AT) {
            if let Err(err) = self.catch_up_in_turn(&turn) {
                tracing::warn!(%err, "writing the journal's messages into the store failed; the next fsync tries again");
            }
        }
    }
}

/// With `fsync = "always"`, waits for up to `patience` (the last fsync's time) until `taken` holds `expected`
/// publishes. Without it, publishers fall into two halves that alternate: while one half's fsync runs the other
/// queues, and the writer takes only that other half, however quickly the first comes back. Waiting the moment
/// it takes them to come back lets every publisher share each fsync; a publisher that went away costs one wait.
async fn gather(commands: &mut mpsc::Receiver<Command>, taken: &mut Vec<Command>, expected: usize, patience: Duration) {
    let deadline = Instant::now() + patience;
    let publishes = |taken: &Vec<Command>| taken.iter().filter(|c| matches!(c, Command::Publish(_))).count();
    while publishes(taken) < expected.min(BATCH) && taken.len() < BATCH {
        match tokio::time::timeout_at(deadline, commands.recv_many(taken, BATCH - taken.len())).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
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
    /// Publishes the last durable commit answered (`always`: how many to gather for the next one).
    answered: usize,
    /// How long the last durable commit of publishes took.
    fsync_took: Duration,
    /// `Close` was done: nothing more is written.
    closed: bool,
    /// `interval`: the journal publishes are written to before they are answered; the store follows behind.
    journal: Option<Journal>,
    /// The journal's seq of its next frame.
    seq: u64,
    /// What the journal holds and the store does not yet.
    behind: Behind,
}

impl Writer {
    /// Whether the next commit is a durable one.
    fn durable(&self) -> bool {
        self.always || self.unsynced_since.is_some_and(|since| since.elapsed() >= self.interval)
    }

    /// Runs `write` into one batch and commits it, durably or not; what it returns, once committed.
    fn transact<T>(
        &mut self,
        durable: bool,
        write: impl FnOnce(&Store, &mut fjall::Batch) -> Result<T, fjall::Error>,
    ) -> Result<T, EngineError> {
        let store = &self.shared.store;
        let done = (|| {
            let mut batch = store.batch();
            let out = write(store, &mut batch)?;
            if batch.is_empty() && durable {
                store.sync()?;
            } else {
                store.commit(batch, durable)?;
            }
            Ok(out)
        })();
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

    /// Stores a queued batch and answers its publishers.
    fn publish(&mut self, publishes: Vec<Publish>) {
        if publishes.is_empty() {
            return;
        }
        let (drafts, replies): (Vec<Draft>, Vec<Answer>) = publishes.into_iter().map(|p| (p.draft, p.reply)).unzip();
        let durable = self.durable();
        let started = Instant::now();
        let stored = self.store(drafts, durable);
        if durable {
            self.fsync_took = started.elapsed();
            self.answered = stored.as_ref().map_or(0, Vec::len);
        }
        match stored {
            Ok(messages) => {
                for (reply, message) in replies.into_iter().zip(messages) {
                    let _ = reply.send(Ok(message));
                }
            }
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Assigns offsets to `drafts`, writes them and their channels' new bounds in one transaction and commits it
    /// (durably or not); once committed, puts them in memory and hands them to subscribers. A failed commit stores
    /// none of them.
    fn store(&mut self, drafts: Vec<Draft>, durable: bool) -> Result<Vec<Arc<EncodedMessage>>, EngineError> {
        let time_ms = now_millis();
        let mut bounds = Bounds::new();
        let mut messages = Vec::with_capacity(drafts.len());
        {
            let channels = lock(&self.shared.channels);
            for p in drafts {
                let (_, after) = bounds.entry(p.channel.clone()).or_insert_with(|| {
                    let stored =
                        channels.get(&p.channel).map_or_else(|| Channel::new(self.shared.new_epoch()), |l| l.stored);
                    (stored, stored)
                });
                after.last += 1;
                let size = self.shared.config.namespace(&p.channel).history_size as u64;
                after.first = after.first.max((after.last + 1).saturating_sub(size));
                let position = Position::new(after.epoch, after.last);
                let message = Message { channel: p.channel, position, event: p.event, data: p.data, time_ms };
                messages.push(EncodedMessage::with_origin(message, p.origin));
            }
        }
        let rows: Vec<(ChannelName, Channel, Channel)> = bounds.into_iter().map(|(c, (b, a))| (c, b, a)).collect();
        if self.journal.is_some() {
            // Only the writer's thread, which holds the turn, gets here that far behind: a publisher finding it so
            // queues instead.
            if self.behind.reached(BEHIND_AT_MOST) {
                self.catch_up()?;
            }
            self.journal_commit(&messages, &rows, durable)?;
            self.commit_to_memory(&rows, &messages);
            return Ok(messages);
        }
        self.transact(durable, |store, batch| {
            for m in &messages {
                let (message, offset) = (&m.message, m.message.position.offset);
                let record = record::encode(offset, message.time_ms, message.event.as_str(), &m.origin, &message.data);
                store.put_message(batch, message.channel.as_str(), offset, &record);
            }
            for (channel, before, after) in &rows {
                // What the size limit pushed out: records from the old first, and this batch's own if it
                // alone was longer than the limit.
                if after.first > before.first {
                    store.remove_known(batch, channel.as_str(), before.first, after.first - 1);
                }
                store.put_channel(batch, channel.as_str(), *after);
            }
            Ok(())
        })?;
        self.commit_to_memory(&rows, &messages);
        Ok(messages)
    }

    /// `interval`: writes `records` to the journal, in one `write(2)`, and keeps them to be written into the store
    /// behind it with their channels' bounds (`rows`); with `durable`, fsyncs the journal.
    fn journal_commit(
        &mut self,
        messages: &[Arc<EncodedMessage>],
        rows: &[(ChannelName, Channel, Channel)],
        durable: bool,
    ) -> Result<(), EngineError> {
        let Some(journal) = self.journal.as_mut() else { return Err(stopping()) };
        // The frames are laid out where the store's batch will read them, and written to the journal from there.
        let behind = &mut self.behind;
        let (records, bytes, seq) = (behind.records.len(), behind.frames.len(), behind.seq);
        for (i, m) in messages.iter().enumerate() {
            let message = &m.message;
            let (offset, event) = (message.position.offset, message.event.as_str());
            behind.push(self.seq + i as u64, &message.channel, message.position, |out| {
                record::encode_into(out, offset, message.time_ms, event, &m.origin, &message.data)
            });
        }
        if let Err(err) = journal.append(&behind.frames[bytes..]) {
            behind.truncate(records, bytes, seq);
            return Err(engine_error(&self.shared, fjall::Error::Io(err)));
        }
        self.seq += messages.len() as u64;
        for (channel, before, after) in rows {
            // The bounds before are the store's: those of the first message it has not yet.
            self.behind.bounds.entry(channel.clone()).and_modify(|b| b.1 = *after).or_insert((*before, *after));
        }
        if self.shared.failing.swap(false, Relaxed) {
            tracing::info!("writing to the data dir succeeds again");
        }
        self.unsynced_since = self.unsynced_since.or(Some(Instant::now()));
        if durable {
            // The frames are written: the batch is committed and its offsets taken, whatever the fsync says. Refusing
            // it now would give its offsets to the next batch, and a replay stops at the repeated offset, dropping
            // every acknowledged message after it. A failed fsync is logged and tried again, as the periodic one.
            self.sync();
        }
        Ok(())
    }

    /// `interval`: fsyncs the journal; then writes what it holds ahead of the store into the store, and once the
    /// journal is [`JOURNAL_ROTATE`] long, fsyncs the store and starts the journal again, empty. The caller holds
    /// the writer's turn.
    fn sync_journal(&mut self) -> Result<(), EngineError> {
        let Some(journal) = self.journal.as_mut() else { return Ok(()) };
        if let Err(err) = journal.sync() {
            // The journal takes nothing more until a restart, and the store is otherwise fsynced only when the
            // journal is rotated: what the journal holds is made durable in the store instead, if the store can.
            let stored =
                self.catch_up().and_then(|()| self.shared.store.sync().map_err(|e| engine_error(&self.shared, e)));
            if let Err(err) = stored {
                tracing::error!(%err, "the journal's messages could not be made durable in the store either");
            }
            return Err(engine_error(&self.shared, fjall::Error::Io(err)));
        }
        self.unsynced_since = None;
        self.catch_up()?;
        let Some(journal) = self.journal.as_mut() else { return Ok(()) };
        if journal.len() >= JOURNAL_ROTATE {
            self.shared.store.sync().map_err(|e| engine_error(&self.shared, e))?;
            journal.rotate(self.seq).map_err(|e| engine_error(&self.shared, fjall::Error::Io(e)))?;
        }
        Ok(())
    }

    /// Writes what the journal holds ahead of the store into it (the caller holds the writer's turn); kept to try
    /// again if that fails.
    fn catch_up(&mut self) -> Result<(), EngineError> {
        let mut behind = std::mem::take(&mut self.behind);
        if let Err(err) = self.shared.store.write_behind(&mut behind) {
            let newer = std::mem::replace(&mut self.behind, behind);
            self.behind.extend(newer);
            return Err(engine_error(&self.shared, err));
        }
        Ok(())
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
    fn sweep(&mut self, expire: Vec<ChannelName>, forget: Vec<ChannelName>) {
        if let Err(err) = self.catch_up() {
            tracing::warn!(%err, "a sweep of the data dir failed; the next one tries again");
            return;
        }
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
        let done = self.transact(durable, move |store, batch| {
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
        });
        match done {
            Ok(firsts) => self.advance(firsts),
            Err(err) => tracing::warn!(%err, "a sweep of the data dir failed; the next one tries again"),
        }
    }

    /// Drops `channel`'s records up to `through`.
    fn forget(&mut self, channel: ChannelName, through: u64) {
        if let Err(err) = self.catch_up() {
            tracing::warn!(%err, "dropping a damaged record failed");
            return;
        }
        let Some(stored) = lock(&self.shared.channels).get(&channel).map(|l| l.stored) else { return };
        let first = (through + 1).max(stored.first).min(stored.last + 1);
        let name = channel.clone();
        let done = self.transact(true, move |store, batch| {
            store.remove_messages(batch, name.as_str(), 0, first.saturating_sub(1))?;
            store.put_channel(batch, name.as_str(), Channel { first, ..stored });
            Ok(())
        });
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
    fn sync(&mut self) {
        let done = if self.journal.is_some() { self.sync_journal() } else { self.transact(true, |_, _| Ok(())) };
        if let Err(err) = done {
            tracing::error!(%err, "the periodic fsync of the data dir failed");
            // Tried again an interval later, not at once in a loop (an fsync that failed keeps failing).
            self.unsynced_since = self.unsynced_since.map(|_| Instant::now());
        }
    }

    /// Commits what is left and marks the file as stopped cleanly.
    fn close(&mut self) {
        self.closed = true;
        if let Err(err) = self.catch_up() {
            tracing::error!(%err, "the journal could not be written into the store: the next start replays it");
            return;
        }
        match self.shared.store.mark_clean() {
            Ok(()) => tracing::info!("the data dir is closed cleanly"),
            Err(err) => {
                tracing::error!(%err, "the data dir could not be marked clean: the next start recovers it");
                return;
            }
        }
        // Everything the journal held is durable in the store.
        if let Some(journal) = self.journal.as_mut() {
            if let Err(err) = journal.rotate(self.seq) {
                tracing::warn!(%err, "the journal could not be emptied: the next start reads it again");
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{Config, EngineKind};
    use crate::engine::disk::DiskEngine;
    use crate::engine::{Engine, Start};

    /// A data dir of its own, removed on drop.
    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Offsets in the order they were handed to subscribers.
    type Delivered = Arc<Mutex<Vec<u64>>>;

    /// A disk engine on a data dir of its own (`name`), with `fsync` and `interval`, a queue of 4 commands and its
    /// writer not yet started; and what it hands to subscribers.
    fn engine(name: &str, fsync: FsyncPolicy, interval: Duration) -> (Dir, Arc<DiskEngine>, Pending, Delivered) {
        let dir = Dir(std::env::temp_dir().join(format!("herald-writer-{name}-{}", std::process::id())));
        let config = Config {
            engine: EngineKind::Disk,
            data_dir: Some(dir.0.clone()),
            fsync,
            fsync_interval: interval,
            ..Config::default()
        };
        let delivered = Delivered::default();
        let seen = delivered.clone();
        let deliver: crate::engine::Delivery = Arc::new(move |m| lock(&seen).push(m.message.position.offset));
        let (engine, writer) = DiskEngine::prepare(Arc::new(config), deliver, 4).unwrap();
        (dir, Arc::new(engine), writer, delivered)
    }

    #[tokio::test]
    async fn publishers_finding_the_queue_full_wait_and_every_one_is_stored_once_in_order() {
        const PUBLISHERS: usize = 100;
        // `always`: every publish queues (with `interval` one finding the writer idle would commit it itself).
        let (_dir, engine, writer, delivered) = engine("queue", FsyncPolicy::Always, Duration::from_secs(1));
        let channel = ChannelName::new("orders:1").unwrap();
        let publishes: Vec<_> = (0..PUBLISHERS)
            .map(|i| {
                let (engine, channel) = (engine.clone(), channel.clone());
                let data = Bytes::from(format!("{{\"i\":{i}}}"));
                tokio::spawn(async move {
                    engine.publish(channel, EventName::default_event(), data, Origin::default()).await
                })
            })
            .collect();
        // Every publisher runs until it waits: 4 in the queue, the others for room in it.
        for _ in 0..PUBLISHERS * 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(engine.queue.capacity(), 0, "the queue is full");
        assert!(publishes.iter().all(|p| !p.is_finished()), "every publisher waits");

        writer.start().unwrap();
        let mut stored = Vec::new();
        for publish in publishes {
            let message = publish.await.unwrap().expect("no publish is refused");
            stored.push((message.message.position.offset, message.message.data.clone()));
        }
        stored.sort_unstable();
        let offsets: Vec<u64> = stored.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, (1..=PUBLISHERS as u64).collect::<Vec<_>>(), "each stored once, none lost");
        assert_eq!(*lock(&delivered), offsets, "delivered once each, in offset order");
        let read = engine.read(&channel, Start::Oldest, PUBLISHERS * 2).await.unwrap();
        let read: Vec<(u64, Bytes)> =
            read.messages.iter().map(|m| (m.message.position.offset, m.message.data.clone())).collect();
        assert_eq!(read, stored, "all of them in history, each at the offset its publisher was answered");
        engine.close().await;
    }

    async fn publish_one(engine: &DiskEngine, i: usize) -> Result<Arc<EncodedMessage>, EngineError> {
        let data = Bytes::from(format!("{{\"i\":{i}}}"));
        engine.publish(ChannelName::new("orders:2").unwrap(), EventName::default_event(), data, Origin::default()).await
    }

    #[tokio::test]
    async fn with_fsync_interval_a_batch_written_to_the_journal_is_answered_and_kept_though_its_fsync_fails() {
        let (_dir, engine, _writer, delivered) = engine("fsync-fails", FsyncPolicy::Interval, Duration::ZERO);
        publish_one(&engine, 1).await.expect("committed by its publisher");
        let (reply, answer) = oneshot::channel();
        let draft = Draft {
            channel: ChannelName::new("orders:2").unwrap(),
            event: EventName::default_event(),
            data: Bytes::from_static(b"{\"i\":2}"),
            origin: Origin::default(),
        };
        {
            let mut writer = lock(&engine.writing.writer);
            writer.journal.as_mut().unwrap().failing_syncs = true;
            assert!(writer.durable(), "an interval of zero: the writer's next batch is fsynced");
            writer.publish(vec![Publish { draft, reply }]);
        }
        let second = answer.await.unwrap().expect("written to the journal: answered, the fsync's failure logged");
        assert_eq!(second.message.position.offset, 2);
        assert_eq!(*lock(&delivered), [1, 2], "in memory and handed to subscribers");
        assert!(engine.shared.failing.load(Relaxed), "the data dir counts as failing");
        // The store is otherwise fsynced only when the journal starts again, which it no longer does.
        assert_eq!(
            lock(&engine.writing.writer).behind.len(),
            0,
            "the journal's messages written into the store at once"
        );
        let refused = publish_one(&engine, 3).await.expect_err("the journal takes nothing after a failed fsync");
        assert!(matches!(refused, EngineError::Unavailable(_)), "{refused:?}");
        let read = engine.read(&ChannelName::new("orders:2").unwrap(), Start::Oldest, 10).await.unwrap();
        let offsets: Vec<u64> = read.messages.iter().map(|m| m.message.position.offset).collect();
        assert_eq!(offsets, [1, 2], "each at the offset its publisher was answered, nothing of the refused one");
    }

    #[tokio::test]
    async fn with_fsync_interval_a_rotation_that_fails_after_the_batch_was_journaled_never_gives_its_offset_again() {
        use crate::engine::disk::journal::{self, JOURNAL};
        let (dir, engine, _writer, _delivered) = engine("rotate-fails", FsyncPolicy::Interval, Duration::ZERO);
        let channel = ChannelName::new("orders:3").unwrap();
        let megabyte = Bytes::from(vec![b'1'; 1024 * 1024]);
        let publish =
            |data: Bytes| engine.publish(channel.clone(), EventName::default_event(), data, Origin::default());
        // Published by their publishers (never durable there) until the journal is long enough to be rotated.
        while lock(&engine.writing.writer).journal.as_ref().unwrap().len() < JOURNAL_ROTATE {
            publish(megabyte.clone()).await.expect("committed by its publisher");
        }
        let (seq, last) = (lock(&engine.writing.writer).seq, lock(&engine.shared.channels)[&channel].stored.last);
        // The rotation's new file cannot be created: a directory holds its name.
        std::fs::create_dir(dir.0.join(JOURNAL).join(format!("{:020}", seq + 1))).unwrap();
        let (reply, answer) = oneshot::channel();
        let draft = Draft {
            channel: channel.clone(),
            event: EventName::default_event(),
            data: Bytes::from_static(b"1"),
            origin: Origin::default(),
        };
        lock(&engine.writing.writer).publish(vec![Publish { draft, reply }]);
        let rotated = answer.await.unwrap().expect("journaled: answered, the failed rotation logged");
        assert_eq!(rotated.message.position.offset, last + 1);
        let next = publish(Bytes::from_static(b"2")).await.expect("the journal still takes publishes");
        assert_eq!(next.message.position.offset, last + 2, "a new offset, not the journaled one again");
        let offsets: Vec<u64> = journal::read(&dir.0)
            .unwrap()
            .iter()
            .flat_map(|(_, bytes)| journal::frames(bytes).filter_map(|e| record::offset(e.record)).collect::<Vec<_>>())
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "each offset journaled once: {offsets:?}");
        assert_eq!(offsets.last(), Some(&(last + 2)));
    }

    /// Publishes 1 MiB messages to `channel`, each committed by its publisher, and checks their offsets.
    async fn publish_megabytes(engine: &DiskEngine, channel: &ChannelName, offsets: std::ops::RangeInclusive<u64>) {
        let megabyte = Bytes::from(vec![b'1'; 1024 * 1024]);
        for offset in offsets {
            let message = engine
                .publish(channel.clone(), EventName::default_event(), megabyte.clone(), Origin::default())
                .await
                .expect("committed by its publisher");
            assert_eq!(message.message.position.offset, offset);
        }
    }

    /// The offsets of `channel` in the store, once the writer's thread is not writing it.
    fn in_store(engine: &DiskEngine, channel: &ChannelName) -> Vec<u64> {
        // What is taken out of the writer is written while its thread holds the turn.
        let _turn = lock(&engine.writing.turn);
        engine.shared.store.offsets(channel.as_str())
    }

    #[tokio::test]
    async fn with_fsync_interval_the_writers_thread_writes_the_journal_into_the_store_once_it_is_catch_up_at_ahead() {
        // An hour's interval: no periodic fsync writes the store here, only the catch-up.
        let (_dir, engine, writer, _delivered) = engine("catch-up", FsyncPolicy::Interval, Duration::from_secs(3600));
        writer.start().unwrap();
        let channel = ChannelName::new("orders:4").unwrap();
        // CATCH_UP_AT's 8 MiB of frames: 7 messages of 1 MiB and their headers are not that yet, 8 are.
        publish_megabytes(&engine, &channel, 1..=7).await;
        assert!(!lock(&engine.writing.writer).behind.reached(CATCH_UP_AT));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(in_store(&engine, &channel), [0u64; 0], "nothing written into the store before the bound");
        publish_megabytes(&engine, &channel, 8..=8).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while in_store(&engine, &channel).is_empty() {
            assert!(std::time::Instant::now() < deadline, "the writer's thread never caught up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(in_store(&engine, &channel), (1..=8).collect::<Vec<_>>(), "all of them, in one batch");
        assert_eq!(lock(&engine.writing.writer).behind.len(), 0);
        engine.close().await;
    }

    #[tokio::test]
    async fn with_fsync_interval_a_publisher_finding_the_journal_behind_at_most_ahead_of_the_store_queues() {
        let (_dir, engine, writer, delivered) = engine("behind", FsyncPolicy::Interval, Duration::from_secs(3600));
        let channel = ChannelName::new("orders:5").unwrap();
        // The writer's thread is not running: nothing writes the store while BEHIND_AT_MOST's 32 MiB of frames pile
        // up, 31 messages of 1 MiB and their headers short of it, 32 past it.
        publish_megabytes(&engine, &channel, 1..=31).await;
        assert!(!lock(&engine.writing.writer).behind.reached(BEHIND_AT_MOST));
        publish_megabytes(&engine, &channel, 32..=32).await;
        assert!(lock(&engine.writing.writer).behind.reached(BEHIND_AT_MOST));
        let queued = tokio::spawn({
            let engine = engine.clone();
            let channel = channel.clone();
            async move {
                engine.publish(channel, EventName::default_event(), Bytes::from_static(b"1"), Origin::default()).await
            }
        });
        while engine.queue.capacity() == 4 && !queued.is_finished() {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!queued.is_finished(), "queued for the writer's thread, not committed by its publisher");
        // The first commit left the writer's thread a wake-up (to set its fsync timer), which would write the store
        // on its own: taken here, so that only the queued publish can make the thread write it.
        tokio::time::timeout(Duration::from_secs(10), engine.writing.wake.notified()).await.expect("a wake-up left");

        writer.start().unwrap();
        let last = queued.await.unwrap().expect("committed by the writer's thread");
        assert_eq!(last.message.position.offset, 33);
        assert_eq!(lock(&engine.writing.writer).behind.len(), 1, "the store caught up, then the queued one journaled");
        assert_eq!(in_store(&engine, &channel), (1..=32).collect::<Vec<_>>());
        assert_eq!(*lock(&delivered), (1..=33).collect::<Vec<_>>());
        engine.close().await;
    }

    #[tokio::test]
    // The writer's lock is held across awaits on purpose, to look busy: the publisher only ever `try_lock`s it.
    #[allow(clippy::await_holding_lock)]
    async fn with_fsync_interval_a_publisher_finding_the_writer_idle_commits_itself_and_one_finding_it_busy_queues() {
        let (_dir, engine, writer, delivered) = engine("inline", FsyncPolicy::Interval, Duration::from_millis(5));

        // The writer's thread is not even running: only the publisher's own commit can answer this.
        // (Bounded: without the publisher's own commit it would wait for ever.)
        let first = tokio::time::timeout(Duration::from_secs(10), publish_one(&engine, 1))
            .await
            .expect("answered without the writer's thread")
            .expect("committed by its publisher");
        assert_eq!(first.message.position.offset, 1);
        assert_eq!(*lock(&delivered), [1], "handed to subscribers before the answer");
        assert!(lock(&engine.writing.writer).unsynced_since.is_some(), "not fsynced: interval");

        // The writer busy (its lock held, as while it commits a batch): the next publish queues and waits.
        let busy = lock(&engine.writing.writer);
        let queued = tokio::spawn({
            let engine = engine.clone();
            async move { publish_one(&engine, 2).await }
        });
        while engine.queue.capacity() == 4 {
            tokio::task::yield_now().await;
        }
        drop(busy);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!queued.is_finished(), "a queued publish waits for the writer's thread");

        writer.start().unwrap();
        let second = queued.await.unwrap().expect("committed by the writer's thread");
        assert_eq!(second.message.position.offset, 2);
        // The writer's thread, told of the first unsynced commit, fsyncs within the interval (bounded wait: it
        // fails only if that never happens).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&engine.writing.writer).unsynced_since.is_some() {
            assert!(std::time::Instant::now() < deadline, "the periodic fsync never ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*lock(&delivered), [1, 2]);
        engine.close().await;
        let refused = publish_one(&engine, 3).await.expect_err("a closed writer takes nothing");
        assert!(matches!(refused, EngineError::Unavailable(_)), "{refused:?}");
        let read = engine.read(&ChannelName::new("orders:2").unwrap(), Start::Oldest, 10).await.unwrap();
        let offsets: Vec<u64> = read.messages.iter().map(|m| m.message.position.offset).collect();
        assert_eq!(offsets, [1, 2], "both in history, nothing of the refused one");
    }
}

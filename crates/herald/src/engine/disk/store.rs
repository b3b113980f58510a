//! The disk engine's store: a fjall keyspace (an LSM tree with a write-ahead journal) in `data_dir/store`, its
//! partitions, the data dir's lock, and what opening decides.
//!
//! Partitions: `channels` (a channel's epoch, first and last offset, and the epoch an unclean stop replaced, with
//! the last offset it shares with the new one), `messages` (a record per channel and offset, `record.rs`, keyed
//! so that one channel's records are one ordered range) and `meta` (whether the last run stopped cleanly, the
//! last journal frame the store holds). A
//! write is one fjall batch: atomic, one journal write, fsynced when asked. `data_dir/lock` is held (`flock`)
//! while the store is open, so a second process is refused with [`OpenError::Locked`].
//!
//! With `fsync = "interval"` messages reach the store behind the engine's own journal (`journal.rs`):
//! [`Store::write_behind`] writes a batch of them with their channels' bounds and the journal's `seq` of the last
//! (`meta`'s `journaled`), and opening first replays the journal's frames past that `seq` ([`open`]), so the
//! store holds every message the journal held.
//!
//! Opening never stops the server over the store's contents: a torn or cut journal tail is dropped by fjall's
//! recovery (what was not fsynced may be lost, never misread), and so is a torn, cut or damaged frame of
//! Herald's journal, with everything after it; a store fjall cannot open at all is moved aside,
//! named in an error log, and a new one started, so every channel has a new epoch and every client resets rather
//! than reads a wrong message. After an unclean stop each channel gets a new epoch that continues its offsets,
//! remembering the old one and how far it survived (`Channel::prev`): a cursor of the old epoch at or behind that
//! point resumes with no gap, one past it (it saw messages the crash lost) gets a reset. docs/ARCHITECTURE.md,
//! "The disk engine", states the rule.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use fjall::{Batch, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode, Slice};
use herald_proto::{ChannelName, Position};

use super::journal::{self, Journal};
use super::record;

/// The store's directory in `data_dir`.
pub const STORE: &str = "store";
/// The lock's file in `data_dir`.
const LOCK: &str = "lock";
/// The journal's size at most, before fjall flushes the write buffer to sorted files: what recovery replays.
const JOURNAL_BYTES: u64 = 32 * 1024 * 1024;

/// What the store says of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Channel {
    pub(super) epoch: u64,
    /// The oldest retained offset (`last + 1` when none is).
    pub(super) first: u64,
    pub(super) last: u64,
    /// The epoch an unclean stop replaced, and the last offset of it that survived (0, 0: none).
    pub(super) prev: (u64, u64),
}

impl Channel {
    pub(super) fn new(epoch: u64) -> Self {
        Self { epoch, first: 1, last: 0, prev: (0, 0) }
    }

    fn to_bytes(self) -> [u8; 40] {
        let mut out = [0; 40];
        for (i, v) in [self.epoch, self.first, self.last, self.prev.0, self.prev.1].into_iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| Some(u64::from_le_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        let channel = Self { epoch: word(0)?, first: word(1)?, last: word(2)?, prev: (word(3)?, word(4)?) };
        (bytes.len() == 40 && channel.epoch != 0 && channel.first <= channel.last + 1).then_some(channel)
    }
}

/// A record's key: the channel, a 0 byte (never in a channel name), the offset big-endian (so keys sort by it).
fn key(channel: &str, offset: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(channel.len() + 9);
    key.extend_from_slice(channel.as_bytes());
    key.push(0);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

fn offset_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(key.len().checked_sub(8)?..)?.try_into().ok()?))
}

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the data dir.
    #[error("data_dir {0} is in use by another Herald process (it holds {0}/lock); stop it, or give this one another data_dir")]
    Locked(PathBuf),
    /// The directory cannot be created, locked or read (permissions, a missing parent, a full disk).
    #[error("data_dir {dir}: {message}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
}

/// The open store.
pub(super) struct Store {
    keyspace: Keyspace,
    messages: PartitionHandle,
    channels: PartitionHandle,
    meta: PartitionHandle,
    /// Held while the store is open: the data dir's lock.
    _lock: File,
}

/// What opening found.
pub(super) struct Opened {
    pub(super) store: Store,
    pub(super) channels: Vec<(String, Channel)>,
    /// The last run did not stop cleanly (every channel got a new epoch that continues the old one).
    pub(super) unclean: bool,
    /// A new, empty journal: what the old one held past the store is in the store now.
    pub(super) journal: Journal,
    /// The journal's seq of its next frame.
    pub(super) seq: u64,
}

/// Messages written to the journal but not yet to the store, oldest first, and each of their channels' bounds as
/// the store has them and as they are once these are written.
#[derive(Default)]
pub(super) struct Behind {
    /// Their journal frames, one after another: one buffer for all, rather than one allocation per message.
    pub(super) frames: Vec<u8>,
    /// Each one's channel, offset, and where its record is in `frames`.
    pub(super) records: Vec<(ChannelName, u64, Range<usize>)>,
    pub(super) bounds: HashMap<ChannelName, (Channel, Channel)>,
    /// The journal's seq of the last of them.
    pub(super) seq: u64,
}

impl Behind {
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether these are at least `messages` messages, or `bytes` bytes of frames.
    pub(super) fn reached(&self, (messages, bytes): (usize, usize)) -> bool {
        self.records.len() >= messages || self.frames.len() >= bytes
    }

    /// Adds the frame of a message of `channel` at `position`, numbered `seq`, whose record `record` appends.
    pub(super) fn push(
        &mut self,
        seq: u64,
        channel: &ChannelName,
        position: Position,
        record: impl FnOnce(&mut Vec<u8>),
    ) {
        let range = journal::encode_with(&mut self.frames, seq, position.epoch, channel.as_str(), record);
        self.records.push((channel.clone(), position.offset, range));
        self.seq = seq;
    }

    /// Drops what was pushed since it held `records` messages in `bytes` bytes of frames, the last numbered `seq`.
    pub(super) fn truncate(&mut self, records: usize, bytes: usize, seq: u64) {
        self.records.truncate(records);
        self.frames.truncate(bytes);
        self.seq = seq;
    }

    /// Adds `newer`, journaled after these.
    pub(super) fn extend(&mut self, newer: Behind) {
        let shift = self.frames.len();
        self.frames.extend_from_slice(&newer.frames);
        let moved = newer.records.into_iter().map(|(c, offset, r)| (c, offset, r.start + shift..r.end + shift));
        self.records.extend(moved);
        for (channel, (before, after)) in newer.bounds {
            self.bounds.entry(channel).and_modify(|bounds| bounds.1 = after).or_insert((before, after));
        }
        self.seq = self.seq.max(newer.seq);
    }
}

/// Locks `dir`, opens (or creates) the store in it, writes into it what the journal holds past it (the size limit
/// of each channel from `history_size`), recovers it after an unclean stop, marks it open and starts a new journal.
pub(super) fn open(
    dir: &Path,
    new_epoch: &mut dyn FnMut() -> u64,
    history_size: &dyn Fn(&ChannelName) -> u64,
) -> Result<Opened, OpenError> {
    let io = |message: String| OpenError::Io { dir: dir.to_path_buf(), message };
    std::fs::create_dir_all(dir).map_err(|e| io(format!("cannot create it: {e}")))?;
    let lock = lock(dir).map_err(|e| match e {
        Some(e) => io(format!("cannot lock it: {e}")),
        None => OpenError::Locked(dir.to_path_buf()),
    })?;
    let path = dir.join(STORE);
    let (keyspace, partitions) = match open_keyspace(&path) {
        Ok(opened) => opened,
        Err(err) if is_unreachable(&err) => return Err(io(format!("cannot open {STORE}: {err}"))),
        Err(err) => {
            let aside = dir.join(format!("{STORE}.damaged-{}", herald_proto::time::now_millis()));
            std::fs::rename(&path, &aside)
                .map_err(|e| io(format!("{STORE} is damaged ({err}) and cannot be moved: {e}")))?;
            tracing::error!(store = %path.display(), moved_to = %aside.display(), %err,
                "the store is damaged beyond recovery: moved aside, starting with an empty history (clients reset)");
            open_keyspace(&path).map_err(|e| io(format!("cannot create {STORE}: {e}")))?
        }
    };
    let [messages, channels, meta] = partitions;
    let store = Store { keyspace, messages, channels, meta, _lock: lock };
    let files = journal::read(dir).map_err(|e| io(format!("cannot read {}: {e}", journal::JOURNAL)))?;
    let seq = store.replay(&files, history_size).map_err(|e| io(format!("cannot replay the journal: {e}")))?;
    let (channels, unclean) = store.recover(new_epoch).map_err(|e| io(format!("cannot read {STORE}: {e}")))?;
    // The replay is durable now (`recover` commits durably): the old journal can go.
    let journal = Journal::start(dir, seq).map_err(|e| io(format!("cannot start the journal: {e}")))?;
    Ok(Opened { store, channels, unclean, journal, seq })
}

/// Takes `dir/lock`; `Err(None)` when another process holds it.
fn lock(dir: &Path) -> Result<File, Option<std::io::Error>> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(None),
        Err(e) => Err(Some(e.into())),
    }
}

type Partitions = [PartitionHandle; 3];

fn open_keyspace(path: &Path) -> Result<(Keyspace, Partitions), fjall::Error> {
    // fjall asserts some invariants of its files: a panic while opening is a damaged store like any other.
    let opened = std::panic::catch_unwind(|| -> Result<(Keyspace, Partitions), fjall::Error> {
        // The writer decides when to fsync (`fsync`, `fsync_interval_ms`), not a background thread. Opening after
        // a crash replays the journal into memory (about 30 MB/s on the benchmark's machine): the journal and the
        // write buffer are kept small (fjall's defaults, 512 and 64 MiB, took 5.7 s to reopen) so that recovery
        // stays around a second whatever the history's length, at the cost of more, smaller flushes.
        let keyspace = fjall::Config::new(path)
            .fsync_ms(None)
            .max_write_buffer_size(JOURNAL_BYTES / 2)
            .max_journaling_size(JOURNAL_BYTES)
            .open()?;
        let partition = |name| keyspace.open_partition(name, PartitionCreateOptions::default());
        let partitions = [partition("messages")?, partition("channels")?, partition("meta")?];
        Ok((keyspace, partitions))
    });
    opened.unwrap_or_else(|_| Err(fjall::Error::Io(std::io::Error::other("the store's files are inconsistent"))))
}

/// A failure to reach the store's files at all (permissions), as opposed to files whose contents are bad.
fn is_unreachable(err: &fjall::Error) -> bool {
    matches!(err, fjall::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
}

impl Store {
    /// Reads every channel; after an unclean stop gives each a new epoch continuing the old one. Marks the store
    /// open, durably.
    fn recover(&self, new_epoch: &mut dyn FnMut() -> u64) -> Result<(Vec<(String, Channel)>, bool), fjall::Error> {
        let clean = self.meta.get("clean")?.map(|v| v.first().copied());
        let mut channels = Vec::new();
        let mut batch = self.batch();
        for entry in self.channels.iter() {
            let (name, value) = entry?;
            let name = String::from_utf8_lossy(&name).into_owned();
            match Channel::from_bytes(&value) {
                Some(channel) => channels.push((name, channel)),
                None => {
                    // Without its epoch a channel's records cannot be placed: start it over (its clients reset).
                    tracing::error!(channel = %name, "a damaged channel record: its history is dropped");
                    batch.remove(&self.channels, name.as_bytes());
                    self.remove_messages(&mut batch, &name, 0, u64::MAX)?;
                }
            }
        }
        // A new store (no mark yet, no channel) is as good as a clean one.
        let unclean = clean == Some(Some(0)) || (clean.is_none() && !channels.is_empty());
        if unclean {
            for (name, channel) in &mut channels {
                channel.prev = (channel.epoch, channel.last);
                channel.epoch = new_epoch();
                self.put_channel(&mut batch, name, *channel);
            }
        }
        batch.insert(&self.meta, "clean", [0u8]);
        self.commit(batch, true)?;
        Ok((channels, unclean))
    }

    /// Writes into the store the journal's frames (`files`, oldest first) past the last it holds, in their order;
    /// returns the seq of the journal's next frame. A file is read up to its first frame that is damaged or cut short;
    /// the next file is followed if its first frame follows the last one taken. Stops for good at the first frame
    /// that does not follow the one before it or does not continue its channel: nothing after it can be trusted.
    /// Not durable: `recover` commits durably after it.
    fn replay(
        &self,
        files: &[(PathBuf, Vec<u8>)],
        history_size: &dyn Fn(&ChannelName) -> u64,
    ) -> Result<u64, fjall::Error> {
        let journaled = self.journaled()?;
        let mut behind = Behind { seq: journaled, ..Behind::default() };
        let mut stopped = None;
        'files: for (path, bytes) in files {
            let mut frames = journal::frames(bytes);
            for entry in frames.by_ref() {
                if entry.seq <= journaled {
                    continue;
                }
                let name = ChannelName::new(entry.channel).ok();
                // A channel started again under a new epoch (forgotten, then published to) in the same batch:
                // the store's bounds must be the old one's, to remove its records.
                if name.as_ref().and_then(|n| behind.bounds.get(n)).is_some_and(|(_, after)| after.epoch != entry.epoch)
                {
                    self.write_behind(&mut behind)?;
                    behind = Behind { seq: behind.seq, ..Behind::default() };
                }
                let next = match name {
                    Some(name) if entry.seq == behind.seq + 1 => {
                        self.follow(&mut behind, name, &entry, history_size)?
                    }
                    _ => false,
                };
                if !next {
                    stopped = Some((path, entry.seq));
                    break 'files;
                }
                if behind.len() >= 4096 {
                    self.write_behind(&mut behind)?;
                    behind = Behind { seq: behind.seq, ..Behind::default() };
                }
            }
        }
        let replayed = behind.seq - journaled;
        self.write_behind(&mut behind)?;
        if let Some((file, seq)) = stopped {
            tracing::error!(journal = %file.display(), seq, replayed,
                "a journal frame does not continue the ones before it: it and the rest of the journal are dropped");
        } else if replayed > 0 {
            tracing::info!(replayed, "messages written to the journal, not yet to the store, are in it now");
        }
        Ok(behind.seq + 1)
    }

    /// Adds the journal's `entry` of `channel` to `behind` if it continues its channel (or starts it, or starts it
    /// again under a new epoch).
    fn follow(
        &self,
        behind: &mut Behind,
        channel: ChannelName,
        entry: &journal::Entry<'_>,
        history_size: &dyn Fn(&ChannelName) -> u64,
    ) -> Result<bool, fjall::Error> {
        let Some(offset) = record::offset(entry.record) else { return Ok(false) };
        let before = match behind.bounds.get(&channel) {
            Some((before, _)) => *before,
            None => self.channel(channel.as_str())?.unwrap_or_else(|| Channel::new(entry.epoch)),
        };
        let current = behind.bounds.get(&channel).map_or(before, |(_, after)| *after);
        let mut after = match current {
            c if c.epoch == entry.epoch && offset == c.last + 1 => c,
            _ if offset == 1 => Channel::new(entry.epoch),
            _ => return Ok(false),
        };
        after.last = offset;
        after.first = after.first.max((offset + 1).saturating_sub(history_size(&channel)));
        behind.push(entry.seq, &channel, Position::new(entry.epoch, offset), |out| out.extend_from_slice(entry.record));
        behind.bounds.insert(channel, (before, after));
        Ok(true)
    }

    /// Writes `behind` into the store in one batch, with the journal's seq of the last of them; not durably (the
    /// journal holds them until the store is fsynced).
    pub(super) fn write_behind(&self, behind: &mut Behind) -> Result<(), fjall::Error> {
        if behind.records.is_empty() {
            return Ok(());
        }
        // What the size limit pushed out is never written (within an epoch a channel's first offset only moves
        // forward, so a batch tried again after a failure skips them too); then one channel's records after
        // another (each in offset order: the sort is stable), so that consecutive inserts into the memtable's skip
        // list walk the same nodes.
        let bounds = &behind.bounds;
        behind
            .records
            .retain(|(channel, offset, _)| bounds.get(channel).is_some_and(|(_, after)| *offset >= after.first));
        behind.records.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        // In one batch the last write of a key wins (a key has no epoch): a started-again channel's old records go
        // first, then the records, then the store's records that the size limit pushed out, all below this
        // batch's own.
        let mut batch = self.batch();
        for (channel, (before, after)) in &behind.bounds {
            if before.epoch != after.epoch {
                self.remove_known(&mut batch, channel.as_str(), before.first, before.last);
            }
        }
        for (channel, offset, record) in &behind.records {
            self.put_message(&mut batch, channel.as_str(), *offset, &behind.frames[record.clone()]);
        }
        for (channel, (before, after)) in &behind.bounds {
            if before.epoch == after.epoch && after.first > before.first {
                self.remove_known(&mut batch, channel.as_str(), before.first, (after.first - 1).min(before.last));
            }
            self.put_channel(&mut batch, channel.as_str(), *after);
        }
        batch.insert(&self.meta, "journaled", behind.seq.to_le_bytes());
        self.commit(batch, false)
    }

    /// The journal's seq of the last frame the store holds (0: none).
    fn journaled(&self) -> Result<u64, fjall::Error> {
        let seq = self.meta.get("journaled")?;
        Ok(seq.and_then(|v| Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?))).unwrap_or(0))
    }

    /// What the store says of `channel`, if it knows it.
    fn channel(&self, channel: &str) -> Result<Option<Channel>, fjall::Error> {
        Ok(self.channels.get(channel)?.and_then(|v| Channel::from_bytes(&v)))
    }

    /// A new write: nothing happens until [`Store::commit`].
    pub(super) fn batch(&self) -> Batch {
        self.keyspace.batch()
    }

    /// Applies `batch` atomically; with `durable`, returns once it is on disk, else once the kernel has it (a
    /// crash of the process loses nothing, one of the machine what was not fsynced since).
    pub(super) fn commit(&self, batch: Batch, durable: bool) -> Result<(), fjall::Error> {
        let mode = if durable { PersistMode::SyncData } else { PersistMode::Buffer };
        batch.durability(Some(mode)).commit()
    }

    /// Makes every commit so far durable.
    pub(super) fn sync(&self) -> Result<(), fjall::Error> {
        self.keyspace.persist(PersistMode::SyncData)
    }

    pub(super) fn put_message(&self, batch: &mut Batch, channel: &str, offset: u64, record: &[u8]) {
        batch.insert(&self.messages, key(channel, offset), record);
    }

    pub(super) fn put_channel(&self, batch: &mut Batch, channel: &str, stored: Channel) {
        batch.insert(&self.channels, channel.as_bytes(), stored.to_bytes());
    }

    pub(super) fn remove_channel(&self, batch: &mut Batch, channel: &str) -> Result<(), fjall::Error> {
        batch.remove(&self.channels, channel.as_bytes());
        self.remove_messages(batch, channel, 0, u64::MAX)
    }

    /// Removes `channel`'s records from `from` to `through`, those that exist.
    pub(super) fn remove_messages(
        &self,
        batch: &mut Batch,
        channel: &str,
        from: u64,
        through: u64,
    ) -> Result<(), fjall::Error> {
        for entry in self.messages.range(key(channel, from)..=key(channel, through)) {
            let (key, _) = entry?;
            batch.remove(&self.messages, key);
        }
        Ok(())
    }

    /// Removes the records from `from` to `through` that are known to exist, without reading them.
    pub(super) fn remove_known(&self, batch: &mut Batch, channel: &str, from: u64, through: u64) {
        for offset in from..=through {
            batch.remove(&self.messages, key(channel, offset));
        }
    }

    /// Marks the store as stopped cleanly, durably: the next start keeps every epoch.
    pub(super) fn mark_clean(&self) -> Result<(), fjall::Error> {
        let mut batch = self.batch();
        batch.insert(&self.meta, "clean", [1u8]);
        self.commit(batch, true)?;
        self.keyspace.persist(PersistMode::SyncAll)
    }

    /// The records of `channel` from offset `from` up to `last`, at most `limit`.
    pub(super) fn read(
        &self,
        channel: &str,
        from: u64,
        last: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Slice)>, fjall::Error> {
        let mut out = Vec::new();
        for entry in self.messages.range(key(channel, from)..=key(channel, last)).take(limit) {
            let (key, value) = entry?;
            out.push((offset_of(&key).unwrap_or(0), value));
        }
        Ok(out)
    }

    /// The first offset of `channel` from `first` whose record is newer than `expired_before` (`last + 1`: none).
    pub(super) fn first_unexpired(
        &self,
        channel: &str,
        first: u64,
        last: u64,
        expired_before: u64,
    ) -> Result<u64, fjall::Error> {
        for entry in self.messages.range(key(channel, first)..=key(channel, last)) {
            let (key, value) = entry?;
            // A record without a readable time is not expired here: reading it finds it damaged.
            if super::record::time_ms(&value).map_or(true, |t| t > expired_before) {
                return Ok(offset_of(&key).unwrap_or(last + 1));
            }
        }
        Ok(last + 1)
    }
}

#[cfg(test)]
impl Store {
    /// The offsets of `channel`'s records (the first 100).
    pub(super) fn offsets(&self, channel: &str) -> Vec<u64> {
        #[allow(clippy::unwrap_used)]
        self.read(channel, 0, u64::MAX, 100).unwrap().into_iter().map(|(offset, _)| offset).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_channel_row_reads_back_and_a_bad_one_is_refused() {
        let c = Channel { epoch: 9, first: 3, last: 7, prev: (4, 5) };
        assert_eq!(Channel::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(Channel::from_bytes(&c.to_bytes()[..39]), None);
        assert_eq!(Channel::from_bytes(&Channel { first: 9, ..c }.to_bytes()), None);
    }

    /// A data dir of its own, removed on drop.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Opens the store in `dir`, every channel's `history_size` 3.
    fn open_in(dir: &Dir) -> Opened {
        static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);
        open(&dir.0, &mut || EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed), &|_| 3).unwrap()
    }

    /// Writes frames of `channel` under `epoch` at `offsets` to `opened`'s journal, numbered from its next seq.
    fn journal(opened: &mut Opened, channel: &str, epoch: u64, offsets: impl IntoIterator<Item = u64>) {
        let mut frames = Vec::new();
        for offset in offsets {
            let record = record::encode(offset, 1, "e", &crate::encoded::Origin::default(), b"{}");
            journal::encode(&mut frames, &journal::Entry { seq: opened.seq, epoch, channel, record: &record });
            opened.seq += 1;
        }
        opened.journal.append(&frames).unwrap();
    }

    #[test]
    fn a_start_writes_into_the_store_what_the_journal_holds_past_it_within_the_size_limit() {
        let dir = Dir(std::env::temp_dir().join(format!("herald-replay-{}", std::process::id())));
        let mut opened = open_in(&dir);
        journal(&mut opened, "a", 7, 1..=2);
        journal(&mut opened, "b", 8, 1..=5);
        drop(opened);

        let mut opened = open_in(&dir);
        let channels: HashMap<String, Channel> = opened.channels.iter().cloned().collect();
        // An unclean stop (nothing marked it clean): new epochs that remember the journaled ones.
        assert_eq!(channels["a"], Channel { epoch: channels["a"].epoch, first: 1, last: 2, prev: (7, 2) });
        assert_eq!((channels["b"].first, channels["b"].last, channels["b"].prev), (3, 5, (8, 5)), "history_size 3");
        assert_eq!((opened.store.offsets("a"), opened.store.offsets("b")), (vec![1, 2], vec![3, 4, 5]));
        assert_eq!(journal::read(&dir.0).unwrap().iter().map(|(_, b)| b.len()).sum::<usize>(), 0, "journal emptied");

        // Replayed frames are not replayed again; the next ones continue the new epoch.
        let epoch = channels["a"].epoch;
        journal(&mut opened, "a", epoch, 3..=3);
        drop(opened);
        let opened = open_in(&dir);
        let channels: HashMap<String, Channel> = opened.channels.iter().cloned().collect();
        assert_eq!((channels["a"].last, channels["a"].prev), (3, (epoch, 3)));
        assert_eq!(opened.store.offsets("a"), [1, 2, 3]);
    }

    #[test]
    fn a_replay_stops_at_a_torn_frame_or_one_that_does_not_continue_its_channel() {
        let dir = Dir(std::env::temp_dir().join(format!("herald-replay-stop-{}", std::process::id())));
        let mut opened = open_in(&dir);
        journal(&mut opened, "a", 7, 1..=2);
        journal(&mut opened, "a", 7, 4..=4); // a gap: 3 is missing
        journal(&mut opened, "b", 8, 1..=1);
        drop(opened);
        let opened = open_in(&dir);
        let channels: HashMap<String, Channel> = opened.channels.iter().cloned().collect();
        assert_eq!((channels["a"].last, channels.get("b")), (2, None), "nothing after the gap");
        drop(opened);

        let mut opened = open_in(&dir);
        let epoch = opened.channels[0].1.epoch;
        journal(&mut opened, "a", epoch, 3..=4);
        let path = journal::read(&dir.0).unwrap().remove(0).0;
        drop(opened);
        // The last frame torn: cut one byte short.
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 1).unwrap();
        let opened = open_in(&dir);
        assert_eq!(opened.store.offsets("a"), [1, 2, 3], "the whole frames before the torn one");
    }

    #[test]
    fn keys_sort_by_channel_then_offset() {
        assert!(key("a", 2) < key("a", 10) && key("a", u64::MAX) < key("a:b", 0) && key("a", 9) < key("ab", 0));
        assert_eq!(offset_of(&key("orders:1", 77)), Some(77));
    }
}

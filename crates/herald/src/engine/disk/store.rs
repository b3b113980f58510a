//! The disk engine's file: one redb database in `data_dir`, its tables, and what opening it decides.
//!
//! Tables: `channels` (a channel's epoch, first and last offset, and the epoch an unclean stop replaced, with the
//! last offset it shares with the new one), `messages` (a record per `(channel, offset)`, `record.rs`) and `meta`
//! (whether the last run stopped cleanly). redb holds an exclusive lock on the file while it is open, which is
//! the data dir's lock: a second process is refused with [`OpenError::Locked`].
//!
//! Opening never stops the server over the file's contents: a file redb cannot open (truncated, damaged beyond
//! its own repair) is moved aside, named in an error log, and a new one is started; every channel then has a new
//! epoch, so every client resets rather than read a wrong message. After an unclean stop each channel gets a new
//! epoch that continues its offsets, remembering the old one and how far it survived (`Channel::prev`): a cursor
//! of the old epoch at or behind that point resumes with no gap, one past it (it saw messages the crash lost)
//! gets a reset. docs/ARCHITECTURE.md, "The disk engine", states the rule.

use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadableTable, ReadableTableMetadata, TableDefinition};

/// `channel → Channel::to_bytes`.
pub(super) const CHANNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("channels");
/// `(channel, offset) → record`.
pub(super) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// `"clean" → 1` while no process has the file open, `0` while one does.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The file's name in `data_dir`.
pub const FILE: &str = "herald.redb";

/// What the file says of one channel.
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

    pub(super) fn to_bytes(self) -> [u8; 40] {
        let mut out = [0; 40];
        for (i, v) in [self.epoch, self.first, self.last, self.prev.0, self.prev.1].into_iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| Some(u64::from_le_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        let channel = Self { epoch: word(0)?, first: word(1)?, last: word(2)?, prev: (word(3)?, word(4)?) };
        (bytes.len() == 40 && channel.epoch != 0 && channel.first <= channel.last + 1).then_some(channel)
    }
}

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process has the file open.
    #[error(
        "data_dir {0} is in use by another Herald process (it holds the lock on {FILE}); stop it, or give this one \
         another data_dir"
    )]
    Locked(PathBuf),
    /// The directory or the file cannot be created or read (permissions, a missing parent, a full disk).
    #[error("data_dir {dir}: {message}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
}

/// What opening found.
pub(super) struct Opened {
    pub(super) db: Database,
    pub(super) channels: Vec<(String, Channel)>,
    /// The last run did not stop cleanly (every channel got a new epoch that continues the old one).
    pub(super) unclean: bool,
}

/// Opens (or creates) the store in `dir`, recovers it after an unclean stop, and marks it open.
pub(super) fn open(dir: &Path, new_epoch: &mut dyn FnMut() -> u64) -> Result<Opened, OpenError> {
    let io = |message: String| OpenError::Io { dir: dir.to_path_buf(), message };
    std::fs::create_dir_all(dir).map_err(|e| io(format!("cannot create it: {e}")))?;
    let path = dir.join(FILE);
    let db = match Database::create(&path) {
        Ok(db) => db,
        Err(DatabaseError::DatabaseAlreadyOpen) => return Err(OpenError::Locked(dir.to_path_buf())),
        Err(DatabaseError::Storage(redb::StorageError::Io(e))) if !damaged_io(&e) => {
            return Err(io(format!("cannot open {FILE}: {e}")))
        }
        Err(err) => {
            let aside = dir.join(format!("{FILE}.damaged-{}", herald_proto::time::now_millis()));
            std::fs::rename(&path, &aside)
                .map_err(|e| io(format!("{FILE} is damaged ({err}) and cannot be moved: {e}")))?;
            tracing::error!(file = %path.display(), moved_to = %aside.display(), %err,
                "the data file is damaged beyond repair: moved aside, starting with an empty history (clients reset)");
            Database::create(&path).map_err(|e| io(format!("cannot create {FILE}: {e}")))?
        }
    };
    let (channels, unclean) = recover(&db, new_epoch).map_err(|e| io(format!("cannot read {FILE}: {e}")))?;
    Ok(Opened { db, channels, unclean })
}

/// An I/O error that says the file's contents are bad (cut short), not that the file cannot be reached.
fn damaged_io(err: &std::io::Error) -> bool {
    matches!(err.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData)
}

/// Reads every channel; after an unclean stop gives each a new epoch continuing the old one. Marks the file open.
fn recover(db: &Database, new_epoch: &mut dyn FnMut() -> u64) -> Result<(Vec<(String, Channel)>, bool), redb::Error> {
    let tx = db.begin_write()?;
    let mut channels = Vec::new();
    let unclean;
    {
        let mut meta = tx.open_table(META)?;
        let mut table = tx.open_table(CHANNELS)?;
        let clean = meta.get("clean")?.map(|v| v.value());
        // A new file (no mark yet, no channel) is as good as a clean one.
        unclean = clean == Some(0) || (clean.is_none() && !table.is_empty()?);
        let mut damaged = Vec::new();
        for entry in table.iter()? {
            let (name, value) = entry?;
            match Channel::from_bytes(value.value()) {
                Some(channel) => channels.push((name.value().to_string(), channel)),
                None => damaged.push(name.value().to_string()),
            }
        }
        for name in damaged {
            // Without its epoch a channel's messages cannot be placed: start it over (its clients reset).
            tracing::error!(channel = %name, "a damaged channel record: its history is dropped");
            table.remove(name.as_str())?;
            let mut messages = tx.open_table(MESSAGES)?;
            messages.retain_in((name.as_str(), 0)..=(name.as_str(), u64::MAX), |_, _| false)?;
        }
        if unclean {
            for (name, channel) in &mut channels {
                channel.prev = (channel.epoch, channel.last);
                channel.epoch = new_epoch();
                table.insert(name.as_str(), &channel.to_bytes()[..])?;
            }
        }
        meta.insert("clean", 0)?;
    }
    tx.commit()?;
    Ok((channels, unclean))
}

/// Marks the file as stopped cleanly (durably): the next start keeps every epoch.
pub(super) fn mark_clean(db: &Database) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    tx.open_table(META)?.insert("clean", 1)?;
    tx.commit()?;
    Ok(())
}

/// The records of `channel` from offset `from`, at most `limit`, up to `last`.
pub(super) fn read(
    db: &Database,
    channel: &str,
    from: u64,
    last: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, redb::Error> {
    let tx = db.begin_read()?;
    let table = match tx.open_table(MESSAGES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in table.range((channel, from)..=(channel, last))?.take(limit) {
        let (key, value) = entry?;
        out.push((key.value().1, value.value().to_vec()));
    }
    Ok(out)
}

/// The first offset of `channel` from `first` whose record is newer than `expired_before` (`last + 1`: none).
pub(super) fn first_unexpired(
    db: &Database,
    channel: &str,
    first: u64,
    last: u64,
    expired_before: u64,
) -> Result<u64, redb::Error> {
    let tx = db.begin_read()?;
    let table = match tx.open_table(MESSAGES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(last + 1),
        Err(e) => return Err(e.into()),
    };
    for entry in table.range((channel, first)..=(channel, last))? {
        let (key, value) = entry?;
        // A record without a readable time is not expired here: reading it finds it damaged.
        if super::record::time_ms(value.value()).map_or(true, |t| t > expired_before) {
            return Ok(key.value().1);
        }
    }
    Ok(last + 1)
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
}

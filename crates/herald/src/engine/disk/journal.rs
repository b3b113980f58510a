//! The disk engine's own journal (`fsync = "interval"` only): an append-only file in `data_dir/journal` that a
//! publish writes its message to, in one `write(2)`, before it is answered, so that the store (fjall) can be
//! updated behind it, by the writer's thread, many messages to a batch.
//!
//! Why a journal in front of a store that has one: fjall's commit of a single message (its journal write, three
//! inserts into its memtable's skip list, the batch's allocations) cost a publish about twice the memory engine's
//! CPU (docs/BENCHMARKS.md, "The disk engine's own journal"). Written behind, a channel's bounds are written once
//! per batch instead of once per message, and the publisher's path is an encoding and one `write(2)`.
//!
//! A frame, little-endian:
//!
//! ```text
//! length of what follows the checksum (4) | crc32 of it (4) | seq (8) | epoch (8) | channel length (2) | channel
//! | record (record.rs: its own offset, time, event, origin, data)
//! ```
//!
//! `seq` numbers frames across files; the store remembers the last one it holds (`Store::journaled`), so that a
//! replay skips what the store already has. Files are named by the `seq` of their first frame. A frame is written
//! at the file's known end with a positioned write; a write cut short (a full disk) is cut off again at once
//! (`set_len`, which needs no free space), since it may have left whole, sound frames of the refused batch that a
//! later, shorter write could end just before. Reading a file stops at its first frame that is cut short or fails
//! its checksum: what follows it in that file is never replayed (docs/ARCHITECTURE.md, "The disk engine").

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::crc32;

/// The journal's directory in `data_dir`.
pub(super) const JOURNAL: &str = "journal";
/// Bytes before the body: its length and its checksum.
const HEAD: usize = 8;
/// The body's fixed part: seq, epoch, the channel's length.
const FIXED: usize = 8 + 8 + 2;

/// One journaled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry<'a> {
    pub(super) seq: u64,
    pub(super) epoch: u64,
    pub(super) channel: &'a str,
    /// The message as `record.rs` lays it out.
    pub(super) record: &'a [u8],
}

/// Appends `entry`'s frame to `out` (the writer lays its frames out with [`encode_with`]).
#[cfg(test)]
pub(super) fn encode(out: &mut Vec<u8>, entry: &Entry<'_>) {
    encode_with(out, entry.seq, entry.epoch, entry.channel, |out| out.extend_from_slice(entry.record));
}

/// Appends to `out` the frame of a message of `channel` under `epoch`, numbered `seq`, whose record `record`
/// appends; returns where in `out` the record is.
pub(super) fn encode_with(
    out: &mut Vec<u8>,
    seq: u64,
    epoch: u64,
    channel: &str,
    record: impl FnOnce(&mut Vec<u8>),
) -> Range<usize> {
    let start = out.len();
    out.extend_from_slice(&[0; HEAD]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&(channel.len() as u16).to_le_bytes());
    out.extend_from_slice(channel.as_bytes());
    let at = out.len();
    record(out);
    let body = (out.len() - start - HEAD) as u32;
    let crc = crc32(&out[start + HEAD..]);
    out[start..start + 4].copy_from_slice(&body.to_le_bytes());
    out[start + 4..start + HEAD].copy_from_slice(&crc.to_le_bytes());
    at..out.len()
}

/// The frame at the start of `bytes` and its length; `None` when none is whole and sound there (the end of the
/// journal, a frame cut short, a checksum that fails).
pub(super) fn decode(bytes: &[u8]) -> Option<(Entry<'_>, usize)> {
    let body = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..HEAD)?.try_into().ok()?);
    let body_bytes = bytes.get(HEAD..HEAD.checked_add(body)?)?;
    if body < FIXED || crc32(body_bytes) != crc {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(body_bytes[i..i + 8].try_into().unwrap_or_default());
    let (seq, epoch) = (word(0), word(8));
    let channel_len = u16::from_le_bytes([body_bytes[16], body_bytes[17]]) as usize;
    let channel = std::str::from_utf8(body_bytes.get(FIXED..FIXED + channel_len)?).ok()?;
    let record = &body_bytes[FIXED + channel_len..];
    Some((Entry { seq, epoch, channel, record }, HEAD + body))
}

/// Every whole, sound frame from the start of `bytes`, up to the first that is not.
pub(super) fn frames(bytes: &[u8]) -> impl Iterator<Item = Entry<'_>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let (entry, len) = decode(rest)?;
        rest = &rest[len..];
        Some(entry)
    })
}

/// The journal's files in `dir`, oldest first, with the contents of each. What is not a regular file is skipped,
/// and a file that cannot be read counts as empty (cut short at its start): a damaged journal never stops a
/// start, and a replay stops where a file does not continue the one before it.
pub(super) fn read(dir: &Path) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    match std::fs::read_dir(dir.join(JOURNAL)) {
        Ok(entries) => {
            for entry in entries {
                match entry {
                    Ok(entry) if first_seq(&entry.path()).is_some() => files.push(entry.path()),
                    Ok(_) => {}
                    Err(err) => tracing::error!(%err, "an entry of the journal's directory cannot be read: skipped"),
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    files.sort_by_key(|path| first_seq(path));
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            tracing::warn!(path = %path.display(), "not a file, in the journal's directory: skipped");
            continue;
        }
        match std::fs::read(&path) {
            Ok(bytes) => out.push((path, bytes)),
            Err(err) => {
                tracing::error!(path = %path.display(), %err, "a journal file cannot be read: replayed as cut short");
                out.push((path, Vec::new()));
            }
        }
    }
    Ok(out)
}

fn first_seq(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.parse().ok()
}

/// The journal's file being written.
pub(super) struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// The end of the last whole frame written.
    len: u64,
    /// An fsync failed, or a write cut short could not be cut off: what the file holds may not be what was
    /// written, and writing on cannot be trusted until a restart.
    broken: bool,
    /// Test only: the file's size at most, past which a write is cut short with ENOSPC (a full disk).
    #[cfg(test)]
    room: Option<u64>,
    /// Test only: every fsync fails.
    #[cfg(test)]
    pub(super) failing_syncs: bool,
}

impl Journal {
    /// Starts a new, empty journal in `data_dir/journal` whose first frame will be `seq`, and deletes every older
    /// file there: the caller has made everything they held durable in the store.
    pub(super) fn start(data_dir: &Path, seq: u64) -> io::Result<Self> {
        let journal = Self::create(&data_dir.join(JOURNAL), seq)?;
        journal.delete_older();
        Ok(journal)
    }

    /// A new, empty file in `dir` whose first frame will be `seq`, its name durable.
    fn create(dir: &Path, seq: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{seq:020}"));
        let file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        // The new file's name reaches the disk before a frame relies on it.
        File::open(dir)?.sync_all()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            file,
            len: 0,
            broken: false,
            #[cfg(test)]
            room: None,
            #[cfg(test)]
            failing_syncs: false,
        })
    }

    /// Writes `frames` (whole frames) after the last whole frame, in one `write(2)` as long as the kernel takes
    /// it all.
    pub(super) fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("the journal cannot be written on since a write or an fsync of it failed: restart Herald to go on publishing"));
        }
        if let Err(err) = self.write_at_end(frames) {
            // What was written of the refused frames goes: a later, shorter write ending on one of their boundaries
            // would leave the next of them to be replayed as a message never acknowledged.
            if let Err(cut) = self.file.set_len(self.len) {
                tracing::error!(%cut, "a write cut short could not be cut off the journal: publishing stops until a restart");
                self.broken = true;
            }
            return Err(err);
        }
        self.len += frames.len() as u64;
        Ok(())
    }

    fn write_at_end(&self, frames: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(room) = self.room {
            let fits = room.saturating_sub(self.len).min(frames.len() as u64) as usize;
            if fits < frames.len() {
                self.file.write_all_at(&frames[..fits], self.len)?;
                return Err(io::Error::from_raw_os_error(28));
            }
        }
        self.file.write_all_at(frames, self.len)
    }

    /// Makes every frame written so far durable.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "the journal cannot be trusted since a write or an fsync of it failed: restart Herald",
            ));
        }
        #[cfg(test)]
        if self.failing_syncs {
            self.broken = true;
            return Err(io::Error::other("test: the fsync fails"));
        }
        self.file.sync_data().inspect_err(|_| self.broken = true)
    }

    /// Bytes of frames in the current file.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Replaces the current file by a new, empty one whose first frame will be `seq`, and deletes the old: the
    /// caller has made every frame it held durable in the store. The new file is in use before anything is
    /// deleted, so that a frame is never written to a file no longer in the directory.
    pub(super) fn rotate(&mut self, seq: u64) -> io::Result<()> {
        *self = Self::create(&self.dir, seq)?;
        self.delete_older();
        Ok(())
    }

    /// Deletes every file but the current one. A file left behind holds only what the store has: the next start
    /// reads it and skips all of it.
    fn delete_older(&self) {
        let deleted = (|| {
            for entry in std::fs::read_dir(&self.dir)? {
                let path = entry?.path();
                if path != self.path && first_seq(&path).is_some() {
                    if let Err(err) = std::fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), %err, "an old journal file could not be deleted");
                    }
                }
            }
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(err) = deleted {
            tracing::warn!(%err, "old journal files could not be deleted: the next start reads them again");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn entry<'a>(seq: u64, channel: &'a str, record: &'a [u8]) -> Entry<'a> {
        Entry { seq, epoch: 77, channel, record }
    }

    #[test]
    fn a_frame_is_laid_out_as_documented() {
        let mut out = Vec::new();
        encode(&mut out, &entry(1, "a", b"r"));
        let body = [&1u64.to_le_bytes()[..], &77u64.to_le_bytes(), &1u16.to_le_bytes(), b"a", b"r"].concat();
        let expected = [&(body.len() as u32).to_le_bytes()[..], &crc32(&body).to_le_bytes(), &body].concat();
        assert_eq!(out, expected);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("herald-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn seqs_per_file(dir: &Path) -> Vec<Vec<u64>> {
        read(dir).unwrap().iter().map(|(_, bytes)| frames(bytes).map(|e| e.seq).collect()).collect()
    }

    #[test]
    fn a_write_cut_short_is_cut_off_so_no_frame_of_the_refused_batch_is_ever_read_back() {
        let dir = scratch("cut-short");
        let mut journal = Journal::start(&dir, 5).unwrap();
        let mut one = Vec::new();
        encode(&mut one, &entry(5, "orders:1", b"first"));
        journal.append(&one).unwrap();
        // A batch of three that the disk cuts short in its third frame: its first two written whole and sound.
        let mut refused = Vec::new();
        for seq in 6..=8 {
            encode(&mut refused, &entry(seq, "orders:1", b"refused"));
        }
        let frame = refused.len() / 3;
        journal.room = Some(journal.len() + 2 * frame as u64 + 3);
        assert_eq!(journal.append(&refused).unwrap_err().raw_os_error(), Some(28));
        journal.room = None;
        // The next batch is as long as one refused frame: it ends exactly where the refused 7 began.
        let mut two = Vec::new();
        encode(&mut two, &entry(6, "orders:1", b"second!"));
        assert_eq!(two.len(), frame);
        journal.append(&two).unwrap();
        journal.sync().unwrap();
        let files = read(&dir).unwrap();
        assert_eq!(files.len(), 1);
        let back: Vec<(u64, &[u8])> = frames(&files[0].1).map(|e| (e.seq, e.record)).collect();
        assert_eq!(back, [(5, &b"first"[..]), (6, &b"second!"[..])], "nothing of the refused batch");
        journal.rotate(7).unwrap();
        let files = read(&dir).unwrap();
        assert_eq!((files.len(), files[0].1.len()), (1, 0), "only the new, empty file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rotation_that_cannot_delete_an_old_file_goes_on_writing_to_the_new_one() {
        let dir = scratch("rotate");
        let mut journal = Journal::start(&dir, 5).unwrap();
        let mut five = Vec::new();
        encode(&mut five, &entry(5, "orders:1", b"5"));
        journal.append(&five).unwrap();
        // Named as a journal file, but a directory: deleting it fails (EISDIR).
        std::fs::create_dir(dir.join(JOURNAL).join(format!("{:020}", 1))).unwrap();
        journal.rotate(6).unwrap();
        let mut six = Vec::new();
        encode(&mut six, &entry(6, "orders:1", b"6"));
        journal.append(&six).unwrap();
        journal.sync().unwrap();
        assert_eq!(seqs_per_file(&dir), [vec![6]], "the frame is in the new file, in the directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_file_that_cannot_be_read_counts_as_cut_short_and_what_is_not_a_file_is_skipped() {
        let dir = scratch("unreadable");
        let journal_dir = dir.join(JOURNAL);
        std::fs::create_dir_all(&journal_dir).unwrap();
        let mut five = Vec::new();
        encode(&mut five, &entry(5, "orders:1", b"5"));
        std::fs::write(journal_dir.join(format!("{:020}", 5)), &five).unwrap();
        // A link to itself cannot be read (ELOOP), even by root; a directory is no journal file.
        let looping = journal_dir.join(format!("{:020}", 6));
        std::os::unix::fs::symlink(&looping, &looping).unwrap();
        std::fs::create_dir(journal_dir.join(format!("{:020}", 7))).unwrap();
        let mut eight = Vec::new();
        encode(&mut eight, &entry(8, "orders:1", b"8"));
        std::fs::write(journal_dir.join(format!("{:020}", 8)), &eight).unwrap();
        assert_eq!(seqs_per_file(&dir), [vec![5], vec![], vec![8]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #[test]
        fn every_frame_reads_back_as_written(
            seqs in proptest::collection::vec(any::<u64>(), 1..5), channel in "[a-z:0-9]{1,40}",
            record: Vec<u8>, epoch: u64,
        ) {
            let mut out = Vec::new();
            for &seq in &seqs {
                encode(&mut out, &Entry { seq, epoch, channel: &channel, record: &record });
            }
            let back: Vec<Entry<'_>> = frames(&out).collect();
            prop_assert_eq!(back.len(), seqs.len());
            for (e, &seq) in back.iter().zip(&seqs) {
                prop_assert_eq!(e, &Entry { seq, epoch, channel: &channel, record: &record });
            }
        }

        #[test]
        fn a_torn_last_frame_is_dropped_and_the_ones_before_it_kept(record: Vec<u8>, cut: usize) {
            let mut out = Vec::new();
            encode(&mut out, &entry(1, "a", b"whole"));
            let whole = out.len();
            encode(&mut out, &entry(2, "b", &record));
            let cut = whole + cut % (out.len() - whole);
            let back: Vec<u64> = frames(&out[..cut]).map(|e| e.seq).collect();
            prop_assert_eq!(back, vec![1]);
        }

        #[test]
        fn any_flipped_bit_is_refused_never_misread(record: Vec<u8>, at: usize, bit in 0u8..8) {
            let mut out = Vec::new();
            encode(&mut out, &entry(9, "orders:1", &record));
            let at = at % out.len();
            out[at] ^= 1 << bit;
            // In the length, the checksum or the body: the checksum no longer matches what the length points at.
            prop_assert!(decode(&out).is_none());
        }
    }
}

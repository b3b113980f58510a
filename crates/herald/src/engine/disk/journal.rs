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
//! at the file's known end with a positioned write: a write cut short (a full disk) leaves bytes after the last
//! whole frame, which the next frame overwrites or a replay stops at. Reading stops at the first frame that is cut
//! short or fails its checksum: what follows it is never replayed (docs/ARCHITECTURE.md, "The disk engine").

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

/// The journal's files in `dir`, oldest first, with the contents of each.
pub(super) fn read(dir: &Path) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    match std::fs::read_dir(dir.join(JOURNAL)) {
        Ok(entries) => {
            for entry in entries {
                let path = entry?.path();
                if first_seq(&path).is_some() {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    files.sort_by_key(|path| first_seq(path));
    files.into_iter().map(|path| std::fs::read(&path).map(|bytes| (path, bytes))).collect()
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
    /// An fsync failed: what the kernel held may be lost, and writing on cannot be trusted until a restart.
    broken: bool,
}

impl Journal {
    /// Starts a new, empty journal in `data_dir/journal` whose first frame will be `seq`, and deletes every older
    /// file there: the caller has made everything they held durable in the store.
    pub(super) fn start(data_dir: &Path, seq: u64) -> io::Result<Self> {
        let dir = data_dir.join(JOURNAL);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{seq:020}"));
        let file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        let journal = Self { dir, path, file, len: 0, broken: false };
        journal.delete_older()?;
        Ok(journal)
    }

    /// Writes `frames` (whole frames) after the last whole frame, in one `write(2)` as long as the kernel takes
    /// it all.
    pub(super) fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("an fsync of the journal failed: restart Herald to go on publishing"));
        }
        self.file.write_all_at(frames, self.len)?;
        self.len += frames.len() as u64;
        Ok(())
    }

    /// Makes every frame written so far durable.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("an fsync of the journal failed: restart Herald"));
        }
        self.file.sync_data().inspect_err(|_| self.broken = true)
    }

    /// Bytes of frames in the current file.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Replaces the current file by a new, empty one whose first frame will be `seq`, and deletes the old: the
    /// caller has made every frame it held durable in the store.
    pub(super) fn rotate(&mut self, seq: u64) -> io::Result<()> {
        let data_dir = self.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        *self = Self::start(&data_dir, seq)?;
        Ok(())
    }

    fn delete_older(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path != self.path && first_seq(&path).is_some() {
                std::fs::remove_file(&path)?;
            }
        }
        // The new file's name and the old ones' removal reach the disk before anything relies on them.
        File::open(&self.dir)?.sync_all()
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

    #[test]
    fn a_journal_reads_back_after_a_write_cut_short_was_overwritten() {
        let dir = std::env::temp_dir().join(format!("herald-journal-{}", std::process::id()));
        let mut journal = Journal::start(&dir, 5).unwrap();
        let mut one = Vec::new();
        encode(&mut one, &entry(5, "orders:1", b"first"));
        journal.append(&one).unwrap();
        // A write the disk cut short: bytes past the last whole frame, not counted.
        journal.file.write_all_at(&[0xAB; 64], journal.len).unwrap();
        let mut two = Vec::new();
        encode(&mut two, &entry(6, "orders:1", b"2"));
        journal.append(&two).unwrap();
        journal.sync().unwrap();
        let files = read(&dir).unwrap();
        assert_eq!(files.len(), 1);
        let seqs: Vec<u64> = frames(&files[0].1).map(|e| e.seq).collect();
        assert_eq!(seqs, [5, 6], "both frames, and nothing of the garbage after them");
        journal.rotate(7).unwrap();
        let files = read(&dir).unwrap();
        assert_eq!((files.len(), files[0].1.len()), (1, 0), "only the new, empty file");
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

//! How one stored message is laid out on disk: a pure encoding with its own checksum.
//!
//! The store (fjall) checksums its journal and blocks, but a record also carries a CRC-32 of its bytes and the offset it was
//! stored at, so that whatever reaches a reader (a damaged page the store did not notice, a record under the
//! wrong key) is refused rather than answered as a message. Layout, little-endian:
//!
//! ```text
//! version (1) | crc32 of the rest (4) | offset (8) | time_ms (8) | flags (1)
//! | event length (4) | event | [sender length (4) | sender] | [user length (4) | user] | data
//! ```
//!
//! `flags`: bit 0 the origin's `data_as_value`, bit 1 a sender follows, bit 2 a user id follows.

use std::sync::Arc;

use bytes::Bytes;
use herald_proto::{ChannelName, EventName, Message, Position};

use crate::encoded::Origin;

const VERSION: u8 = 1;
const HEAD: usize = 1 + 4;

/// Why a stored record cannot be read back as a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a damaged record on disk: {0}")]
pub(super) struct Damaged(pub &'static str);

/// The bytes of a message stored at `offset`.
pub(super) fn encode(offset: u64, time_ms: u64, event: &str, origin: &Origin, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + 25 + event.len() + data.len());
    encode_into(&mut out, offset, time_ms, event, origin, data);
    out
}

/// Appends to `out` the bytes of a message stored at `offset` (a journal frame's record is written in place).
pub(super) fn encode_into(out: &mut Vec<u8>, offset: u64, time_ms: u64, event: &str, origin: &Origin, data: &[u8]) {
    let start = out.len();
    let sender = origin.sender.as_deref();
    let user = origin.user_id.as_deref();
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    let flags = u8::from(origin.data_as_value) | u8::from(sender.is_some()) << 1 | u8::from(user.is_some()) << 2;
    out.push(flags);
    for text in [Some(event), sender, user].into_iter().flatten() {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(data);
    let crc = crc32(&out[start + HEAD..]);
    out[start + 1..start + HEAD].copy_from_slice(&crc.to_le_bytes());
}

/// The message of `channel` stored as `bytes` under `position`'s offset, or why it cannot be trusted.
pub(super) fn decode(channel: &ChannelName, position: Position, bytes: &[u8]) -> Result<(Message, Origin), Damaged> {
    if bytes.len() < HEAD + 17 || bytes[0] != VERSION {
        return Err(Damaged("header"));
    }
    let crc = u32::from_le_bytes(bytes[1..HEAD].try_into().map_err(|_| Damaged("header"))?);
    let mut rest = &bytes[HEAD..];
    if crc32(rest) != crc {
        return Err(Damaged("checksum"));
    }
    let offset = take_u64(&mut rest)?;
    if offset != position.offset {
        return Err(Damaged("offset"));
    }
    let time_ms = take_u64(&mut rest)?;
    let (&flags, after) = rest.split_first().ok_or(Damaged("flags"))?;
    rest = after;
    let event = EventName::any(take_text(&mut rest)?).map_err(|_| Damaged("event"))?;
    let sender = if flags & 2 != 0 { Some(Arc::from(take_text(&mut rest)?)) } else { None };
    let user_id = if flags & 4 != 0 { Some(Arc::from(take_text(&mut rest)?)) } else { None };
    let origin = Origin { sender, user_id, data_as_value: flags & 1 != 0 };
    let message = Message { channel: channel.clone(), position, event, data: Bytes::copy_from_slice(rest), time_ms };
    Ok((message, origin))
}

/// The offset a record was stored at, without decoding the rest (for a replay of the journal).
pub(super) fn offset(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(HEAD..HEAD + 8)?.try_into().ok()?))
}

/// The time a record was stored at, without decoding the rest (for expiry).
pub(super) fn time_ms(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(HEAD + 8..HEAD + 16)?.try_into().ok()?))
}

fn take_u64(rest: &mut &[u8]) -> Result<u64, Damaged> {
    let (head, tail) = rest.split_at_checked(8).ok_or(Damaged("length"))?;
    *rest = tail;
    Ok(u64::from_le_bytes(head.try_into().map_err(|_| Damaged("length"))?))
}

fn take_text<'a>(rest: &mut &'a [u8]) -> Result<&'a str, Damaged> {
    let (len, tail) = rest.split_at_checked(4).ok_or(Damaged("length"))?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| Damaged("length"))?) as usize;
    let (text, tail) = tail.split_at_checked(len).ok_or(Damaged("length"))?;
    *rest = tail;
    std::str::from_utf8(text).map_err(|_| Damaged("text"))
}

/// CRC-32 (IEEE): the writer checksums every record it stores, and the journal (`journal.rs`) every frame, each
/// on a publisher's path. `crc32fast` folds 16 bytes at a time with the CPU's carry-less multiply; a table, a byte
/// at a time, was a tenth of a disk publish's own work in the profile (docs/BENCHMARKS.md, "The disk engine").
/// The same polynomial and conventions as before, so files written by either read back with the other.
pub(super) fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// CRC-32 (IEEE) a bit at a time, as the format defines it: what [`crc32`] must agree with.
    fn crc32_by_bits(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & 0u32.wrapping_sub(crc & 1));
            }
        }
        !crc
    }

    #[test]
    fn the_checksum_is_crc32_ieee() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    proptest::proptest! {
        #[test]
        fn the_checksum_agrees_with_the_definition(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            proptest::prop_assert_eq!(crc32(&bytes), crc32_by_bits(&bytes));
        }
    }
    use proptest::prelude::*;

    fn ch() -> ChannelName {
        ChannelName::new("orders:1").unwrap()
    }

    #[test]
    fn the_checksum_is_crc32() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_record_under_another_offset_is_refused() {
        let bytes = encode(7, 1, "message", &Origin::default(), b"{}");
        assert_eq!(decode(&ch(), Position::new(1, 8), &bytes).unwrap_err(), Damaged("offset"));
        assert_eq!((time_ms(&bytes), offset(&bytes)), (Some(1), Some(7)));
    }

    proptest! {
        #[test]
        fn every_record_reads_back_as_stored(
            offset: u64, time: u64, data: Vec<u8>, value: bool,
            sender in proptest::option::of("[a-z0-9.]{0,12}"), user in proptest::option::of(".{0,12}"),
        ) {
            let origin = Origin { sender: sender.map(Arc::from), user_id: user.map(Arc::from), data_as_value: value };
            let bytes = encode(offset, time, "ev.t:1", &origin, &data);
            let (m, back) = decode(&ch(), Position::new(3, offset), &bytes).unwrap();
            prop_assert_eq!((m.time_ms, m.event.as_str(), &m.data[..], back), (time, "ev.t:1", &data[..], origin));
        }

        #[test]
        fn any_flipped_or_cut_byte_is_refused_never_misread(data: Vec<u8>, at: usize, bit in 0u8..8, cut: bool) {
            let mut bytes = encode(5, 9, "message", &Origin::default(), &data);
            let at = at % bytes.len();
            if cut {
                bytes.truncate(at);
            } else {
                bytes[at] ^= 1 << bit;
            }
            prop_assert!(decode(&ch(), Position::new(1, 5), &bytes).is_err());
        }
    }
}

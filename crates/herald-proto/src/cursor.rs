//! Cursors: where a client stands in one or more channels.
//!
//! A cursor is opaque to clients but self-contained: it names each channel with its epoch and offset, so any
//! node can answer any request with it and nothing about a client is kept on the server. The text form is
//! base64url (no padding) of a small binary form, which is safe verbatim in URLs, headers, ETags and SSE ids:
//!
//! ```text
//! version (1 byte = 1) · count (varint) · count × [ name length (1 byte) · name · epoch (varint) · offset (varint) ]
//! ```
//!
//! Cursors come from the network (query strings, `Last-Event-ID`, `If-None-Match`), so reading them costs time
//! linear in their length and bounded by a caller's cap on channels: a text too long for that many channels is
//! refused before it is decoded, and entries are merged through a map, never by a search per entry.

use std::collections::hash_map::{Entry, HashMap};

use crate::channel::ChannelName;

const VERSION: u8 = 1;
/// The most channels one cursor may name; a longer one is refused as unreadable. A caller may set a lower cap
/// ([`Cursor::decode_at_most`]).
pub const MAX_CURSOR_CHANNELS: usize = 1024;
/// The longest entry: a name length byte, a name of 255 bytes, two varints of 10 bytes.
const MAX_ENTRY_BYTES: usize = 1 + 255 + 10 + 10;

/// A position in one channel: the epoch of its history and the offset of the last message seen.
///
/// Offset 0 means "before the first message". Epoch 0 means "the channel had no history when this position
/// was taken"; it matches any epoch at offset 0, so a client that watched an empty channel resumes from
/// the channel's first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    /// Changes only when the channel's history is lost.
    pub epoch: u64,
    /// The offset of the last message before this position.
    pub offset: u64,
}

impl Position {
    /// A position in epoch `epoch` after message `offset`.
    pub fn new(epoch: u64, offset: u64) -> Self {
        Self { epoch, offset }
    }
}

/// Why a cursor could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not base64url.
    #[error("cursor is not base64url text")]
    NotBase64,
    /// A version this build does not know.
    #[error("cursor version {0} is not supported")]
    Version(u8),
    /// The bytes ended early or ran on.
    #[error("cursor is truncated or has trailing bytes")]
    Malformed,
    /// A channel name inside is not valid.
    #[error("cursor names an invalid channel")]
    BadChannel,
    /// More channels than the cap (at most [`MAX_CURSOR_CHANNELS`]), or text too long for that many.
    #[error("cursor names more than {0} channels")]
    TooManyChannels(usize),
}

/// Positions in one or more channels, in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    entries: Vec<(ChannelName, Position)>,
}

impl Cursor {
    /// An empty cursor, naming no channel.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cursor naming one channel.
    pub fn single(channel: ChannelName, position: Position) -> Self {
        Self { entries: vec![(channel, position)] }
    }

    /// Sets `channel`'s position, replacing an earlier one. A search of the entries: to build or combine cursors of
    /// many channels, collect or [`merge`](Self::merge) them instead.
    pub fn set(&mut self, channel: ChannelName, position: Position) {
        match self.entries.iter_mut().find(|(c, _)| *c == channel) {
            Some(entry) => entry.1 = position,
            None => self.entries.push((channel, position)),
        }
    }

    /// `channel`'s position, if the cursor names it.
    pub fn get(&self, channel: &ChannelName) -> Option<Position> {
        self.entries.iter().find(|(c, _)| c == channel).map(|&(_, p)| p)
    }

    /// Every (channel, position), in order.
    pub fn entries(&self) -> &[(ChannelName, Position)] {
        &self.entries
    }

    /// Whether the cursor names no channel.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds every entry of `other`; where both name a channel, `other` wins.
    pub fn merge(&mut self, other: Cursor) {
        if other.entries.len() == 1 {
            // The common case (a message's own cursor), without a map.
            for (channel, position) in other.entries {
                self.set(channel, position);
            }
            return;
        }
        let mut entries = std::mem::take(&mut self.entries);
        entries.extend(other.entries);
        self.entries = deduplicated(entries);
    }

    /// Every (channel, position), in order, taken out of the cursor.
    pub fn into_entries(self) -> Vec<(ChannelName, Position)> {
        self.entries
    }

    /// The text form.
    pub fn encode(&self) -> String {
        encode_entries(self.entries.iter().map(|(channel, position)| (channel, *position)))
    }

    /// The text form of the cursor of one channel at `position`, without making the cursor: what every stored
    /// message's envelope carries.
    pub fn encode_one(channel: &ChannelName, position: Position) -> String {
        encode_entries(std::iter::once((channel, position)))
    }

    /// Reads the text form, of at most [`MAX_CURSOR_CHANNELS`] channels.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        Self::decode_at_most(text, MAX_CURSOR_CHANNELS)
    }

    /// Reads the text form of a cursor of at most `max` channels (and never more than [`MAX_CURSOR_CHANNELS`]).
    /// A text longer than any such cursor is refused unread.
    pub fn decode_at_most(text: &str, max: usize) -> Result<Self, CursorError> {
        let mut entries = Vec::new();
        let mut failed = None;
        Self::read_entries(text, max, |name, position| match ChannelName::new(name) {
            Ok(channel) => entries.push((channel, position)),
            Err(_) => failed = Some(CursorError::BadChannel),
        })?;
        match failed {
            Some(err) => Err(err),
            None => Ok(Self { entries: deduplicated(entries) }),
        }
    }

    /// Checks the text form of a cursor of at most `max` channels, as [`decode_at_most`](Self::decode_at_most)
    /// does, and gives each entry in order to `each`, without making a cursor: a caller that wants a few channels
    /// of a long cursor allocates nothing for the others.
    pub fn read_entries(text: &str, max: usize, mut each: impl FnMut(&str, Position)) -> Result<(), CursorError> {
        let max = max.min(MAX_CURSOR_CHANNELS);
        let longest_bytes = 1 + 10 + max * MAX_ENTRY_BYTES;
        if text.len() > longest_bytes.div_ceil(3) * 4 {
            return Err(CursorError::TooManyChannels(max));
        }
        let bytes = base64url::decode(text).ok_or(CursorError::NotBase64)?;
        let mut input = bytes.as_slice();
        let version = take(&mut input, 1)?[0];
        if version != VERSION {
            return Err(CursorError::Version(version));
        }
        let count = get_varint(&mut input)?;
        if count > max as u64 {
            return Err(CursorError::TooManyChannels(max));
        }
        for _ in 0..count {
            let len = take(&mut input, 1)?[0] as usize;
            let name = std::str::from_utf8(take(&mut input, len)?).map_err(|_| CursorError::BadChannel)?;
            if !ChannelName::is_valid(name) {
                return Err(CursorError::BadChannel);
            }
            let epoch = get_varint(&mut input)?;
            let offset = get_varint(&mut input)?;
            each(name, Position { epoch, offset });
        }
        if !input.is_empty() {
            return Err(CursorError::Malformed);
        }
        Ok(())
    }
}

/// A cursor of these entries; where several name a channel, the last one wins, in the place of the first.
impl FromIterator<(ChannelName, Position)> for Cursor {
    fn from_iter<I: IntoIterator<Item = (ChannelName, Position)>>(entries: I) -> Self {
        Self { entries: deduplicated(entries.into_iter().collect()) }
    }
}

/// `entries` with one entry per channel: its last position, in the place of its first. Linear: one map lookup per
/// entry.
fn deduplicated(entries: Vec<(ChannelName, Position)>) -> Vec<(ChannelName, Position)> {
    if entries.len() < 2 {
        return entries;
    }
    // For each entry, the position it ends with, or `None` when an earlier entry names its channel.
    let mut kept: Vec<Option<Position>> = vec![None; entries.len()];
    let mut first: HashMap<&ChannelName, usize> = HashMap::with_capacity(entries.len());
    for (i, (channel, position)) in entries.iter().enumerate() {
        match first.entry(channel) {
            Entry::Occupied(at) => kept[*at.get()] = Some(*position),
            Entry::Vacant(slot) => {
                slot.insert(i);
                kept[i] = Some(*position);
            }
        }
    }
    if first.len() == entries.len() {
        return entries;
    }
    drop(first);
    entries.into_iter().zip(kept).filter_map(|((channel, _), kept)| Some((channel, kept?))).collect()
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], CursorError> {
    if input.len() < n {
        return Err(CursorError::Malformed);
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(input: &mut &[u8]) -> Result<u64, CursorError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(input, 1)?[0];
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(CursorError::Malformed);
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CursorError::Malformed)
}

/// base64url without padding (RFC 4648 §5), the only encoding cursors use.
/// The text form of a cursor of `entries`, in their order.
fn encode_entries<'a>(entries: impl ExactSizeIterator<Item = (&'a ChannelName, Position)> + Clone) -> String {
    // The version, the count, and per entry the name's length and the name, two varints of at most 10 bytes.
    let len = 1 + 10 + entries.clone().map(|(channel, _)| 1 + channel.as_str().len() + 20).sum::<usize>();
    let mut bytes = Vec::with_capacity(len);
    bytes.push(VERSION);
    put_varint(&mut bytes, entries.len() as u64);
    for (channel, position) in entries {
        let name = channel.as_str().as_bytes();
        // A valid name is at most 255 bytes, so its length fits one byte.
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        put_varint(&mut bytes, position.epoch);
        put_varint(&mut bytes, position.offset);
    }
    base64url::encode(&bytes)
}

mod base64url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            }
        }
        // Every byte is from the alphabet: ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The value of each byte, `NONE` for a byte outside the alphabet: one lookup per character.
    const VALUES: [u8; 256] = {
        let mut values = [NONE; 256];
        let mut i = 0;
        while i < ALPHABET.len() {
            values[ALPHABET[i] as usize] = i as u8;
            i += 1;
        }
        values
    };
    const NONE: u8 = 0xff;

    fn value(c: u8) -> Option<u32> {
        let v = VALUES[c as usize];
        (v != NONE).then_some(u32::from(v))
    }

    pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
        let text = text.as_bytes();
        if text.len() % 4 == 1 {
            return None;
        }
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        for chunk in text.chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= value(c)? << (18 - 6 * i);
            }
            let bytes = chunk.len() - 1;
            // Bits below the last whole byte must be zero, so every byte string has exactly one text form.
            if n & ((1 << (24 - 8 * bytes)) - 1) != 0 {
                return None;
            }
            out.extend((0..bytes).map(|i| (n >> (16 - 8 * i)) as u8));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn channel(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    #[test]
    fn a_single_channel_cursor_has_a_stable_text_form() {
        let cursor = Cursor::single(channel("dashboard"), Position::new(7, 300));
        assert_eq!(cursor.encode(), "AQEJZGFzaGJvYXJkB6wC");
        assert_eq!(Cursor::decode("AQEJZGFzaGJvYXJkB6wC").unwrap(), cursor);
    }

    #[test]
    fn merge_lets_the_later_cursor_win() {
        let mut a = Cursor::single(channel("a"), Position::new(1, 1));
        a.set(channel("b"), Position::new(1, 5));
        let mut b = Cursor::single(channel("b"), Position::new(1, 9));
        b.set(channel("c"), Position::new(2, 2));
        a.merge(b);
        assert_eq!(a.get(&channel("a")), Some(Position::new(1, 1)));
        assert_eq!(a.get(&channel("b")), Some(Position::new(1, 9)));
        assert_eq!(a.get(&channel("c")), Some(Position::new(2, 2)));
    }

    #[test]
    fn a_channel_named_twice_keeps_its_first_place_and_its_last_position() {
        let twice = [("a", 1), ("b", 2), ("a", 3)].map(|(c, o)| (channel(c), Position::new(1, o)));
        let cursor: Cursor = twice.clone().into_iter().collect();
        let expected = [(channel("a"), Position::new(1, 3)), (channel("b"), Position::new(1, 2))];
        assert_eq!(cursor.entries(), expected);
        let mut bytes = vec![1, 3];
        for (c, p) in &twice {
            bytes.extend([1, c.as_str().as_bytes()[0], p.epoch as u8, p.offset as u8]);
        }
        assert_eq!(Cursor::decode(&base64url::encode(&bytes)).unwrap().entries(), expected);
        let mut merged = Cursor::single(channel("b"), Position::new(1, 1));
        merged.merge(Cursor::decode(&base64url::encode(&bytes)).unwrap());
        assert_eq!(merged.entries(), [expected[1].clone(), expected[0].clone()]);
    }

    #[test]
    fn a_cursor_of_more_channels_than_the_cap_is_refused_and_a_text_too_long_for_it_unread() {
        let three: Cursor = ["a", "b", "c"].map(|c| (channel(c), Position::new(1, 1))).into_iter().collect();
        assert_eq!(Cursor::decode_at_most(&three.encode(), 2), Err(CursorError::TooManyChannels(2)));
        assert_eq!(Cursor::decode_at_most(&three.encode(), 3).unwrap(), three);
        // Not even base64url, but longer than any cursor of one channel: refused by its length.
        assert_eq!(Cursor::decode_at_most(&"!".repeat(400), 1), Err(CursorError::TooManyChannels(1)));
        assert_eq!(Cursor::decode_at_most(&"!".repeat(300), 1), Err(CursorError::NotBase64));
    }

    #[test]
    fn unreadable_cursors_are_refused_with_a_reason() {
        assert_eq!(Cursor::decode("not a cursor!"), Err(CursorError::NotBase64));
        assert_eq!(Cursor::decode(""), Err(CursorError::Malformed));
        assert_eq!(Cursor::decode("Ag"), Err(CursorError::Version(2)));
        assert_eq!(Cursor::decode("AQEJZGFzaGJvYXJkB6wCAA"), Err(CursorError::Malformed));
        assert_eq!(Cursor::decode("AQEJZGFzaGJvYXJkB6w"), Err(CursorError::Malformed));
        // A name with a space inside: base64url of [1, 1, 3, 'a', ' ', 'b', 0, 0].
        assert_eq!(Cursor::decode(&base64url::encode(b"\x01\x01\x03a b\x00\x00")), Err(CursorError::BadChannel));
        // An eleven-byte varint.
        let long =
            base64url::encode(&[1, 1, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0]);
        assert_eq!(Cursor::decode(&long), Err(CursorError::Malformed));
    }

    #[test]
    fn base64url_has_one_text_form_per_byte_string() {
        assert_eq!(base64url::decode("AQ"), Some(vec![1]));
        assert_eq!(base64url::decode("AR"), None);
    }

    fn positions() -> impl Strategy<Value = Vec<(String, u64, u64)>> {
        prop::collection::vec(("[A-Za-z0-9_.:@/=,;-]{1,40}", any::<u64>(), any::<u64>()), 0..8)
    }

    proptest! {
        #[test]
        fn cursors_round_trip(entries in positions()) {
            let mut cursor = Cursor::new();
            for (name, epoch, offset) in entries {
                cursor.set(channel(&name), Position::new(epoch, offset));
            }
            let text = cursor.encode();
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(Cursor::decode(&text).unwrap(), cursor);
        }

        #[test]
        fn any_text_decodes_or_errors_without_panicking(text in ".{0,200}") {
            let _ = Cursor::decode(&text);
        }

        #[test]
        fn any_bytes_decode_or_error_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Cursor::decode(&base64url::encode(&bytes));
        }

        #[test]
        fn base64url_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(base64url::decode(&base64url::encode(&bytes)), Some(bytes));
        }
    }
}

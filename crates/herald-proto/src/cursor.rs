//! Cursors: where a client stands in one or more channels.
//!
//! A cursor is opaque to clients but self-contained: it names each channel with its epoch and offset, so any
//! node can answer any request with it and nothing about a client is kept on the server. The text form is
//! base64url (no padding) of a small binary form, which is safe verbatim in URLs, headers, ETags and SSE ids:
//!
//! ```text
//! version (1 byte = 1) · count (varint) · count × [ name length (1 byte) · name · epoch (varint) · offset (varint) ]
//! ```

use crate::channel::ChannelName;

const VERSION: u8 = 1;
/// The most channels one cursor may name; a longer one is refused as unreadable.
pub const MAX_CURSOR_CHANNELS: usize = 1024;

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
    /// More channels than [`MAX_CURSOR_CHANNELS`].
    #[error("cursor names more than {MAX_CURSOR_CHANNELS} channels")]
    TooManyChannels,
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

    /// Sets `channel`'s position, replacing an earlier one.
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
        for (channel, position) in other.entries {
            self.set(channel, position);
        }
    }

    /// The text form.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(2 + self.entries.len() * 24);
        bytes.push(VERSION);
        put_varint(&mut bytes, self.entries.len() as u64);
        for (channel, position) in &self.entries {
            let name = channel.as_str().as_bytes();
            // A valid name is at most 255 bytes, so its length fits one byte.
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name);
            put_varint(&mut bytes, position.epoch);
            put_varint(&mut bytes, position.offset);
        }
        base64url::encode(&bytes)
    }

    /// Reads the text form.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let bytes = base64url::decode(text).ok_or(CursorError::NotBase64)?;
        let mut input = bytes.as_slice();
        let version = take(&mut input, 1)?[0];
        if version != VERSION {
            return Err(CursorError::Version(version));
        }
        let count = get_varint(&mut input)?;
        if count > MAX_CURSOR_CHANNELS as u64 {
            return Err(CursorError::TooManyChannels);
        }
        let mut cursor = Cursor::new();
        for _ in 0..count {
            let len = take(&mut input, 1)?[0] as usize;
            let name = std::str::from_utf8(take(&mut input, len)?).map_err(|_| CursorError::BadChannel)?;
            let channel = ChannelName::new(name).map_err(|_| CursorError::BadChannel)?;
            let epoch = get_varint(&mut input)?;
            let offset = get_varint(&mut input)?;
            cursor.set(channel, Position { epoch, offset });
        }
        if !input.is_empty() {
            return Err(CursorError::Malformed);
        }
        Ok(cursor)
    }
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
mod base64url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn value(c: u8) -> Option<u32> {
        ALPHABET.iter().position(|&a| a == c).map(|v| v as u32)
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
        prop::collection::vec(("[A-Za-z0-9_.:@/=-]{1,40}", any::<u64>(), any::<u64>()), 0..8)
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

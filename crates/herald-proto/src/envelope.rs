//! The message envelope, Herald's one JSON shape for a message on every transport:
//!
//! ```json
//! {"channel":"dashboard","offset":7,"cursor":"…","event":"newTopSeller","data":{"top_seller":"Hassan"},"time":"2026-11-28T02:31:48.123Z"}
//! ```
//!
//! The server builds it by hand from validated parts (names need no escaping, `data` is minified JSON), once
//! per message; clients read it with serde into [`Envelope`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::{ChannelName, EventName};
use crate::cursor::{Cursor, Position};
use crate::json::push_string;
use crate::time::{write_rfc3339_millis, RFC3339_MILLIS_LEN};

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its channel.
    pub channel: ChannelName,
    /// Its epoch and offset.
    pub position: Position,
    /// Its event name.
    pub event: EventName,
    /// The published value: minified JSON text.
    pub data: Bytes,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl Message {
    /// The cursor of this message's position: `since=<it>` returns the messages after it.
    pub fn cursor(&self) -> Cursor {
        Cursor::single(self.channel.clone(), self.position)
    }

    /// The envelope as JSON, optionally with other members (each `"key":value`) before the envelope's own.
    pub fn envelope_json(&self, prefix: &str) -> Vec<u8> {
        self.envelope_json_with(prefix, &self.cursor_text())
    }

    /// The text form of [`Message::cursor`], without making the cursor.
    pub fn cursor_text(&self) -> String {
        Cursor::encode_one(&self.channel, self.position)
    }

    /// [`Message::envelope_json`] with the message's cursor already encoded (`cursor`, its
    /// [`Message::cursor_text`]): the server keeps that text too and encodes it once.
    pub fn envelope_json_with(&self, prefix: &str, cursor: &str) -> Vec<u8> {
        // The members' names and punctuation (63 bytes), the offset (at most 20 digits), the time, the event's
        // quotes; an event that needs escaping may still grow it.
        let len = 63 + 20 + RFC3339_MILLIS_LEN + 2;
        let parts = prefix.len() + self.channel.as_str().len() + cursor.len() + self.event.as_str().len();
        let mut out = Vec::with_capacity(len + parts + self.data.len());
        out.push(b'{');
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(b"\"channel\":\"");
        out.extend_from_slice(self.channel.as_str().as_bytes());
        out.extend_from_slice(b"\",\"offset\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.position.offset).as_bytes());
        out.extend_from_slice(b",\"cursor\":\"");
        out.extend_from_slice(cursor.as_bytes());
        out.extend_from_slice(b"\",\"event\":");
        push_event(&mut out, &self.event);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b",\"time\":\"");
        write_rfc3339_millis(&mut out, self.time_ms);
        out.extend_from_slice(b"\"}");
        out
    }

    /// Writes what a publisher is told of its stored message, `"channel":…,"offset":…,"cursor":…,"time":…` without
    /// the braces (the `201`'s body and the WebSocket's `published` frame), `cursor` being its
    /// [`Message::cursor_text`].
    pub fn write_receipt(&self, out: &mut Vec<u8>, cursor: &str) {
        out.extend_from_slice(b"\"channel\":\"");
        out.extend_from_slice(self.channel.as_str().as_bytes());
        out.extend_from_slice(b"\",\"offset\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.position.offset).as_bytes());
        out.extend_from_slice(b",\"cursor\":\"");
        out.extend_from_slice(cursor.as_bytes());
        out.extend_from_slice(b"\",\"time\":\"");
        write_rfc3339_millis(out, self.time_ms);
        out.push(b'"');
    }
}

/// Writes an event name as a JSON string: verbatim in quotes, or escaped when it holds `"` or `\`.
pub fn push_event(out: &mut Vec<u8>, event: &EventName) {
    if event.needs_escaping() {
        push_string(out, event.as_str());
    } else {
        out.push(b'"');
        out.extend_from_slice(event.as_str().as_bytes());
        out.push(b'"');
    }
}

/// An envelope as a client reads it. `data` stays raw JSON text, exactly as the server sent it (key order and
/// number precision intact); serialising writes the documented field order back.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Envelope {
    /// The channel.
    pub channel: String,
    /// The offset within the channel.
    pub offset: u64,
    /// The cursor of this message's position.
    pub cursor: String,
    /// The event name.
    pub event: String,
    /// The published value, as raw JSON text.
    pub data: Box<RawValue>,
    /// When it was stored (RFC 3339).
    pub time: String,
}

/// Two envelopes are equal when every field is, `data` compared as JSON text.
impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        (&self.channel, self.offset, &self.cursor, &self.event, self.data.get(), &self.time)
            == (&other.channel, other.offset, &other.cursor, &other.event, other.data.get(), &other.time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(data: &str) -> Message {
        Message {
            channel: ChannelName::new("dashboard").unwrap(),
            position: Position::new(7, 300),
            event: EventName::new("newTopSeller").unwrap(),
            data: Bytes::copy_from_slice(data.as_bytes()),
            time_ms: 1_795_833_108_123,
        }
    }

    #[test]
    fn envelope_bytes_are_exactly_the_documented_shape() {
        assert_eq!(
            String::from_utf8(message(r#"{"top_seller":"Hassan"}"#).envelope_json("")).unwrap(),
            r#"{"channel":"dashboard","offset":300,"cursor":"AQEJZGFzaGJvYXJkB6wC","event":"newTopSeller","data":{"top_seller":"Hassan"},"time":"2026-11-28T02:31:48.123Z"}"#
        );
    }

    #[test]
    fn an_event_name_from_another_protocol_is_json_escaped() {
        let mut m = message("1");
        m.event = EventName::any(r#"App\Events\"Shipped""#).unwrap();
        let env: Envelope = serde_json::from_slice(&m.envelope_json("")).unwrap();
        assert_eq!(env.event, r#"App\Events\"Shipped""#);
    }

    #[test]
    fn a_prefix_goes_before_the_envelope_members() {
        let json = message("1").envelope_json(r#""op":"message","#);
        assert!(json.starts_with(br#"{"op":"message","channel":"dashboard","#));
    }

    proptest! {
        #[test]
        fn envelopes_parse_back_into_what_was_stored(
            channel in "[A-Za-z0-9_.:@/=,;-]{1,60}",
            event in "[ -~]{1,200}",
            epoch in any::<u64>(),
            offset in any::<u64>(),
            text in ".{0,40}",
        ) {
            let data = serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap();
            let msg = Message {
                channel: ChannelName::new(&channel).unwrap(),
                position: Position::new(epoch, offset),
                event: EventName::any(&event).unwrap(),
                data: Bytes::from(data.clone()),
                time_ms: 0,
            };
            let env: Envelope = serde_json::from_slice(&msg.envelope_json("")).unwrap();
            prop_assert_eq!(serde_json::to_vec(&env).unwrap(), msg.envelope_json(""));
            prop_assert_eq!(env.channel, channel);
            prop_assert_eq!(env.offset, offset);
            prop_assert_eq!(env.event, event);
            prop_assert_eq!(env.data.get().as_bytes(), &data[..]);
            prop_assert_eq!(Cursor::decode(&env.cursor).unwrap(), msg.cursor());
        }
    }
}

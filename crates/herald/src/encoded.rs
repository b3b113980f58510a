//! A stored message together with its wire encodings, built once and shared by every subscriber.
//!
//! The envelope is encoded when the message is stored (history reads need it anyway); the other forms are
//! built the first time a transport asks for them. Subscribers receive an `Arc<EncodedMessage>`, so a
//! message fanned out to 10,000 connections is encoded once per format, not 10,000 times. The encodings are
//! plain bytes: engines build these messages and know nothing of the socket libraries that send them.
//!
//! A message also carries its [`Origin`]: what another protocol's publisher attached to it (the Pusher socket
//! that sent it, which must not get it back; the user of a client event; how a Pusher frame carries its data).
//! Engines store it with the message, so it reaches every node.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use herald_proto::ws::ServerFrame;
use herald_proto::{sse, Message};

/// What a publisher attached to a message besides its channel, event and data. Herald's own publishers attach
/// nothing; the Pusher protocol needs all three fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The connection that sent it (a Pusher socket id: the trigger's `socket_id`, or a client event's sender),
    /// which never receives it back, on whichever node it is.
    pub sender: Option<Arc<str>>,
    /// The user who sent it (a Pusher client event on a presence channel).
    pub user_id: Option<Arc<str>>,
    /// A Pusher frame carries `data` as this JSON value itself (a client event's data; a Pusher data string that
    /// is not one line of JSON, stored as a JSON string), rather than as a string holding its JSON text.
    pub data_as_value: bool,
}

impl Origin {
    /// Whether nothing is attached (a message of Herald's own publishers).
    pub fn is_empty(&self) -> bool {
        *self == Origin::default()
    }
}

/// A message and its encodings.
#[derive(Debug)]
pub struct EncodedMessage {
    /// The message.
    pub message: Message,
    /// What its publisher attached to it.
    pub origin: Origin,
    /// Its JSON envelope.
    pub envelope: Bytes,
    /// Its cursor's text.
    pub cursor: String,
    /// When this node had it: stored by the embedded engine, or received from Redis. Delivery lag counts from here.
    pub stored_at: Instant,
    /// The WebSocket text frame of its `message` frame, header included.
    ws_wire: OnceLock<Bytes>,
    /// The SSE event with its `id:` line (the message's cursor) and the published data, or the envelope.
    sse_data: OnceLock<Bytes>,
    sse_envelope: OnceLock<Bytes>,
    /// The Pusher frame, or `None` for a message Pusher clients are not sent.
    pusher_frame: OnceLock<Option<Bytes>>,
}

impl EncodedMessage {
    /// Encodes `message`, which carries no origin.
    pub fn new(message: Message) -> Arc<Self> {
        Self::with_origin(message, Origin::default())
    }

    /// Encodes `message`, published with `origin`.
    pub fn with_origin(message: Message, origin: Origin) -> Arc<Self> {
        let cursor = message.cursor_text();
        Arc::new(Self {
            envelope: Bytes::from(message.envelope_json_with("", &cursor)),
            cursor,
            stored_at: Instant::now(),
            message,
            origin,
            ws_wire: OnceLock::new(),
            sse_data: OnceLock::new(),
            sse_envelope: OnceLock::new(),
            pusher_frame: OnceLock::new(),
        })
    }

    /// The WebSocket `message` frame's text, as UTF-8 bytes (the transport wraps them in its socket's type).
    pub fn ws_frame(&self) -> Bytes {
        let wire = self.ws_wire();
        wire.slice(ws_header_len(wire)..)
    }

    /// The whole WebSocket text frame of the `message` frame, as a server writes it (unmasked, final): what a
    /// socket the fan-out writes into gets with one `write`, every subscriber the same bytes.
    pub fn ws_wire(&self) -> &Bytes {
        self.ws_wire.get_or_init(|| {
            let text = ServerFrame::message(&self.message);
            let mut header = [0u8; MAX_WS_HEADER];
            let len = ws_text_header(text.len(), &mut header);
            let mut wire = Vec::with_capacity(len + text.len());
            wire.extend_from_slice(&header[..len]);
            wire.extend_from_slice(&text);
            Bytes::from(wire)
        })
    }

    /// The SSE event without its `id:` line: `event:` and `data:` with the published data, or, for
    /// `envelope=true`, only `data:` with the envelope.
    pub fn sse_body(&self, envelope: bool) -> Bytes {
        // `id: `, the cursor, the line's end.
        self.sse_event(envelope).slice(4 + self.cursor.len() + 1..)
    }

    /// The whole SSE event of a one-channel stream: `id:` the message's cursor, then [`Self::sse_body`].
    pub fn sse_event(&self, envelope: bool) -> &Bytes {
        let id = Some(self.cursor.as_str());
        if envelope {
            self.sse_envelope.get_or_init(|| Bytes::from(sse::event(id, None, &self.envelope)))
        } else {
            let event = Some(self.message.event.as_str());
            self.sse_data.get_or_init(|| Bytes::from(sse::event(id, event, &self.message.data)))
        }
    }

    /// The Pusher frame's text, built by `encode` (the Pusher protocol's encoder, which this module does not
    /// know) the first time a subscriber asks, and shared after; `None` when Pusher clients are not sent it.
    pub fn pusher_frame(&self, encode: impl FnOnce(&Self) -> Option<Bytes>) -> Option<Bytes> {
        self.pusher_frame.get_or_init(|| encode(self)).clone()
    }

    /// Bytes of memory this message holds, for the history budget.
    pub fn weight(&self) -> usize {
        let origin =
            self.origin.sender.as_ref().map_or(0, |s| s.len()) + self.origin.user_id.as_ref().map_or(0, |u| u.len());
        std::mem::size_of::<Self>() + self.message.data.len() + self.envelope.len() + self.cursor.len() + origin
    }
}

/// The longest WebSocket frame header a server writes: 2 bytes and a 64-bit length (no mask).
const MAX_WS_HEADER: usize = 10;

/// Writes the header of an unmasked, final WebSocket text frame of `len` bytes into `header`; returns its length
/// (RFC 6455 section 5.2: 7-bit, 16-bit or 64-bit length).
fn ws_text_header(len: usize, header: &mut [u8; MAX_WS_HEADER]) -> usize {
    header[0] = 0x81;
    if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The length of the header [`ws_text_header`] wrote at the start of `wire`.
fn ws_header_len(wire: &[u8]) -> usize {
    match wire[1] {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use herald_proto::{ChannelName, EventName, Position};
    use proptest::prelude::*;

    use super::*;

    fn header(len: usize) -> Vec<u8> {
        let mut header = [0u8; MAX_WS_HEADER];
        let n = ws_text_header(len, &mut header);
        header[..n].to_vec()
    }

    #[test]
    fn text_frame_headers_take_each_length_form_of_rfc_6455() {
        assert_eq!(header(0), [0x81, 0]);
        assert_eq!(header(125), [0x81, 125]);
        assert_eq!(header(126), [0x81, 126, 0, 126]);
        assert_eq!(header(65_535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(header(65_536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    fn message(data: Vec<u8>, event: &str, offset: u64) -> Arc<EncodedMessage> {
        EncodedMessage::new(Message {
            channel: ChannelName::new("orders.42").unwrap(),
            position: Position::new(7, offset),
            event: EventName::new(event).unwrap(),
            data: Bytes::from(data),
            time_ms: 1,
        })
    }

    proptest! {
        /// The shared wire bytes are the frame's header and text, and the event's `id:` line and body, whatever
        /// the size (each length form of the header) and the data (SSE splits lines).
        #[test]
        fn the_wire_forms_are_the_header_or_the_id_line_before_the_shared_forms(
            len in prop_oneof![0usize..300, 65_400usize..65_700],
            byte in prop::sample::select(b"ax\n\r\"\\ ".to_vec()),
            offset in 0u64..u64::MAX,
        ) {
            let m = message(vec![byte; len], "update", offset);
            let text = ServerFrame::message(&m.message);
            prop_assert_eq!(&m.ws_frame()[..], &text[..]);
            prop_assert_eq!(&m.ws_wire()[..], [header(text.len()), text].concat());
            for envelope in [false, true] {
                let id_line = format!("id: {}\n", m.cursor);
                prop_assert_eq!(&m.sse_event(envelope)[..], [id_line.as_bytes(), &m.sse_body(envelope)].concat());
            }
            let event = Some(m.message.event.as_str());
            prop_assert_eq!(&m.sse_body(false)[..], sse::event(None, event, &m.message.data));
            prop_assert_eq!(&m.sse_body(true)[..], sse::event(None, None, &m.envelope));
        }
    }
}

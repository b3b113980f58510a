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
    ws_frame: OnceLock<Bytes>,
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
        Arc::new(Self {
            envelope: Bytes::from(message.envelope_json("")),
            cursor: message.cursor().encode(),
            stored_at: Instant::now(),
            message,
            origin,
            ws_frame: OnceLock::new(),
            sse_data: OnceLock::new(),
            sse_envelope: OnceLock::new(),
            pusher_frame: OnceLock::new(),
        })
    }

    /// The WebSocket `message` frame's text, as UTF-8 bytes (the transport wraps them in its socket's type).
    pub fn ws_frame(&self) -> Bytes {
        self.ws_frame.get_or_init(|| Bytes::from(ServerFrame::message(&self.message))).clone()
    }

    /// The SSE event without its `id:` line: `event:` and `data:` with the published data, or, for
    /// `envelope=true`, only `data:` with the envelope.
    pub fn sse_body(&self, envelope: bool) -> Bytes {
        if envelope {
            self.sse_envelope.get_or_init(|| Bytes::from(sse::event(None, None, &self.envelope))).clone()
        } else {
            let event = Some(self.message.event.as_str());
            self.sse_data.get_or_init(|| Bytes::from(sse::event(None, event, &self.message.data))).clone()
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

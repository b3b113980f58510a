//! A stored message together with its wire encodings, built once and shared by every subscriber.
//!
//! The envelope is encoded when the message is stored (history reads need it anyway); the other forms are
//! built the first time a transport asks for them. Subscribers receive an `Arc<EncodedMessage>`, so a
//! message fanned out to 10,000 connections is encoded once per format, not 10,000 times. The encodings are
//! plain bytes: engines build these messages and know nothing of the socket libraries that send them.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use herald_proto::ws::ServerFrame;
use herald_proto::{sse, Message};

/// A message and its encodings.
#[derive(Debug)]
pub struct EncodedMessage {
    /// The message.
    pub message: Message,
    /// Its JSON envelope.
    pub envelope: Bytes,
    /// Its cursor's text.
    pub cursor: String,
    /// When this node had it: stored by the embedded engine, or received from Redis. Delivery lag counts from here.
    pub stored_at: Instant,
    ws_frame: OnceLock<Bytes>,
    sse_data: OnceLock<Bytes>,
    sse_envelope: OnceLock<Bytes>,
}

impl EncodedMessage {
    /// Encodes `message`.
    pub fn new(message: Message) -> Arc<Self> {
        Arc::new(Self {
            envelope: Bytes::from(message.envelope_json("")),
            cursor: message.cursor().encode(),
            stored_at: Instant::now(),
            message,
            ws_frame: OnceLock::new(),
            sse_data: OnceLock::new(),
            sse_envelope: OnceLock::new(),
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

    /// Bytes of memory this message holds, for the history budget.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.message.data.len() + self.envelope.len() + self.cursor.len()
    }
}

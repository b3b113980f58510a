//! Herald's wire formats, with no I/O.
//!
//! Everything that crosses the network is defined here as pure functions over bytes and strings, so that the
//! server, the Rust client and the benchmarks agree on every byte, and so that each format can be
//! property-tested and fuzzed on its own: channel and event names, cursors, the JSON message envelope, presence
//! (members, joins, leaves), the Server-Sent Events framing and the WebSocket protocol.

pub mod channel;
pub mod cursor;
pub mod envelope;
pub mod json;
pub mod presence;
pub mod sse;
pub mod time;
pub mod ws;

pub use channel::{ChannelName, EventName, NameError};
pub use cursor::{Cursor, CursorError, Position, MAX_CURSOR_CHANNELS};
pub use envelope::{Envelope, Message};

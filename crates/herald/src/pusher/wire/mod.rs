//! The Pusher Channels protocol's wire format, with no I/O: what the official clients and SDKs send and expect,
//! byte for byte.
//!
//! - `names`: channel names, their kinds (public, private, encrypted, presence, cache) and the server-to-user
//!   channel;
//! - `socket_id`: socket ids (`^\d+\.\d+$`), unique across nodes;
//! - `frames`: client frames parsed into typed requests, server frames encoded to exact bytes;
//! - `data`: how a Pusher `data` string is stored as a Herald message, and how a stored message's data goes out;
//! - `signature`: channel authorization, user sign-in and HTTP API signatures (HMAC-SHA256, MD5);
//! - `close`: the close codes and what each means to a client;
//! - `sockjs`: the line framing of pusher-js's HTTP fallbacks.
//!
//! It lives beside the protocol's handlers rather than in `herald-proto`, which holds Herald's own formats; like
//! them, every function here is pure and tested by properties and exact bytes.

pub mod close;
pub mod data;
pub mod frames;
pub mod names;
pub mod signature;
pub mod socket_id;
pub mod sockjs;

pub use close::Close;
pub use frames::{ClientFrame, FrameRefusal, ServerFrame};
pub use names::{ChannelKind, PusherChannel};
pub use socket_id::SocketId;

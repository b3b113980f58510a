//! Herald, a real-time delivery server.
//!
//! A backend publishes a message to a channel with one HTTP POST; browsers receive it by short polling, long
//! polling, Server-Sent Events or WebSocket, all from the same ordered, gap-free channel history and with one
//! resume cursor. Reading order, from the outside in:
//!
//! - [`server`] binds, serves and shuts down;
//! - [`http`] routes requests to the [`transport`] modules (`latest`, `poll`, `sse`, `ws`) and to publishing;
//! - [`pusher`] speaks the Pusher Channels protocol on the same hub;
//! - [`hub`] knows channels, publishers and subscribers, and nothing of HTTP;
//! - [`engine`] stores histories and assigns offsets (`memory` today);
//! - [`auth`] decides who may publish and subscribe, [`limits`] how much anyone may take;
//! - [`webhooks`] tell a backend of channels' lifecycle (occupied, vacated, members, client events);
//! - wire formats live in the `herald-proto` crate, pure and property-tested.

pub mod auth;
pub mod config;
pub mod demo;
pub mod encoded;
pub mod engine;
pub mod error;
pub mod heartbeat;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod pusher;
pub mod refusal;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod transport;
pub mod webhooks;

pub use config::Config;
pub use server::Server;

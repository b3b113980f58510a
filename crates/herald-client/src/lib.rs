//! A Rust client for Herald, the real-time delivery server: publish over HTTP, subscribe over WebSocket,
//! Server-Sent Events, long polling or short polling.
//!
//! It exists so that Herald's CLI, its integration tests and its benchmarks all speak to the server through
//! one implementation of the public contract (`docs/API.md`), reusing the wire formats of `herald-proto`.
//! It is deliberately small: plain HTTP/1.1 on hyper's low-level client, one connection per request, and
//! **no automatic reconnection** — a subscription that drops ends visibly, and
//! [`Subscription::cursor`] tells where to resume.
//!
//! ```no_run
//! use herald_client::{Client, Event, SubscribeOptions, Transport};
//!
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:7070")?;
//! let mut sub = client.subscribe(SubscribeOptions::new(["dashboard"], Transport::Sse)).await?;
//! client.publish("dashboard", Some("newTopSeller"), &serde_json::json!({"top_seller": "Hassan"})).await?;
//! while let Some(event) = sub.next().await {
//!     match event? {
//!         Event::Message(envelope) => println!("{} #{}: {}", envelope.channel, envelope.offset, envelope.data),
//!         Event::Reset { channels } => eprintln!("lost messages on {channels:?}"),
//!     }
//! }
//! let resume_from = sub.cursor();
//! # let _ = resume_from;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod http;
mod io;
mod net;
mod publish;
pub mod sse_parser;
pub mod subscribe;
mod url;
mod websocket;

pub use client::Client;
pub use error::ClientError;
pub use herald_proto::Envelope;
pub use http::{HttpConnection, HttpResponse, HttpStream, MAX_RESPONSE_BYTES};
pub use publish::Published;
pub use subscribe::{Event, SubscribeOptions, Subscription, Transport};
pub use websocket::TextWebSocket;

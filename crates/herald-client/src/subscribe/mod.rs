//! Subscribing: one [`Subscription`] type over the four transports, so that a test or a benchmark can run
//! the same scenario over each and compare.
//!
//! Every transport gives the same guarantees:
//!
//! - [`Client::subscribe`] returns once the server has fixed where the subscription starts (the WebSocket's
//!   `subscribed` frames, the SSE stream's opening block, the first poll's answer): a message published after
//!   it returns is delivered.
//! - Without `since` or `last`, only messages published from then on are delivered, on every transport (the
//!   polling transports ask for `since=latest` first). `since` is a cursor that may name several channels;
//!   `last` replays the newest N retained messages of each channel the cursor does not name.
//! - A lost history is an [`Event::Reset`], before what is still retained.
//! - [`Subscription::cursor`] is, at any moment, the position right after the last event returned, covering
//!   every channel: pass it as `since` to resume exactly there.
//! - There is **no automatic reconnection** (v1): a dropped connection ends the subscription, visibly
//!   (`None`, or an error such as [`ClientError::Closed`] with the WebSocket close code), so that tests and
//!   benchmarks see every drop. Resume by subscribing again with the cursor.

mod poll;
mod sse;
mod ws;

pub use poll::{LONG_POLL_WAIT_SECS, POLL_LIMIT};

use std::time::Duration;

use futures_util::Stream;
use herald_proto::Envelope;

use crate::client::Client;
use crate::error::ClientError;

/// How messages travel from Herald to the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `GET /v1/ws`: one subscribe frame per channel.
    WebSocket,
    /// `GET /v1/sse?…&envelope=true`: a Server-Sent Events stream of envelopes.
    Sse,
    /// `GET /v1/poll?…&wait=30` in a loop: the server holds each request until there is news.
    LongPoll,
    /// `GET /v1/poll?…` in a loop, waiting `interval` between two requests (none when the previous answer
    /// was cut short by the server's `limit`).
    Poll {
        /// The pause between two requests.
        interval: Duration,
    },
}

/// What to subscribe to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// The channels (at least one).
    pub channels: Vec<String>,
    /// The transport.
    pub transport: Transport,
    /// Resume after this cursor, for every channel it names.
    pub since: Option<String>,
    /// Replay the newest N retained messages of each channel that `since` does not name.
    pub last: Option<u32>,
}

impl SubscribeOptions {
    /// `channels` over `transport`, from now on (no `since`, no `last`).
    pub fn new<S: Into<String>>(channels: impl IntoIterator<Item = S>, transport: Transport) -> Self {
        Self { channels: channels.into_iter().map(Into::into).collect(), transport, since: None, last: None }
    }

    /// Resumes after `cursor`.
    pub fn since(mut self, cursor: impl Into<String>) -> Self {
        self.since = Some(cursor.into());
        self
    }

    /// Replays the newest `n` retained messages of each channel the cursor does not name.
    pub fn last(mut self, n: u32) -> Self {
        self.last = Some(n);
        self
    }
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message.
    Message(Envelope),
    /// Messages of these channels were lost (their history is gone); what follows is what is still retained.
    Reset {
        /// The channels concerned.
        channels: Vec<String>,
    },
}

enum Inner {
    WebSocket(ws::WsSubscription),
    Sse(sse::SseSubscription),
    Poll(poll::PollSubscription),
}

/// A live subscription: call [`Subscription::next`] until it returns `None`. Dropping it closes its
/// connection.
pub struct Subscription {
    inner: Inner,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("cursor", &self.cursor()).finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event; `None` once the subscription has ended (the server closed the stream, or an error
    /// was returned: the first error ends the subscription).
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        match &mut self.inner {
            Inner::WebSocket(sub) => sub.next().await,
            Inner::Sse(sub) => sub.next().await,
            Inner::Poll(sub) => sub.next().await,
        }
    }

    /// The cursor right after the last event returned by [`Subscription::next`], covering every channel of
    /// the subscription: subscribe again with it as `since` to resume without a gap or a duplicate.
    pub fn cursor(&self) -> String {
        match &self.inner {
            Inner::WebSocket(sub) => sub.cursor(),
            Inner::Sse(sub) => sub.cursor(),
            Inner::Poll(sub) => sub.cursor(),
        }
    }

    /// Ends the subscription politely (a WebSocket close frame); dropping it also closes the connection.
    pub async fn close(self) -> Result<(), ClientError> {
        match self.inner {
            Inner::WebSocket(sub) => sub.close().await,
            Inner::Sse(_) | Inner::Poll(_) => Ok(()),
        }
    }

    /// The subscription as a `Stream` (which gives up access to [`Subscription::cursor`]).
    pub fn into_stream(self) -> impl Stream<Item = Result<Event, ClientError>> + Send {
        futures_util::stream::unfold(self, |mut sub| async move { sub.next().await.map(|item| (item, sub)) })
    }
}

impl Client {
    /// Subscribes to `options.channels` over `options.transport`; returns once the server has fixed where
    /// the subscription starts. See the [module documentation](crate::subscribe) for the guarantees.
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, ClientError> {
        if options.channels.is_empty() {
            return Err(ClientError::InvalidRequest("a subscription needs at least one channel".into()));
        }
        let inner = match options.transport {
            Transport::WebSocket => Inner::WebSocket(ws::WsSubscription::open(self, &options).await?),
            Transport::Sse => Inner::Sse(sse::SseSubscription::open(self, &options).await?),
            Transport::LongPoll => Inner::Poll(poll::PollSubscription::open(self, &options, poll::Mode::Long).await?),
            Transport::Poll { interval } => {
                Inner::Poll(poll::PollSubscription::open(self, &options, poll::Mode::Short(interval)).await?)
            }
        };
        Ok(Subscription { inner })
    }
}

/// Reads a cursor the server sent, as a protocol error when it cannot be read.
fn server_cursor(text: &str) -> Result<herald_proto::Cursor, ClientError> {
    herald_proto::Cursor::decode(text)
        .map_err(|e| ClientError::Protocol(format!("Herald sent a bad cursor {text:?}: {e}")))
}

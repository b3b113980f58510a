//! `GET /v1/sse`: Server-Sent Events, one response that carries every message of its channels.
//!
//! The stream subscribes before it reads history, opens with a `retry:` and the `id` of its start position
//! (so a browser that drops before the first message still resumes without a gap; when the start is a reset,
//! the `herald.reset` event is in that same block, so the id is never recorded without it), replays history
//! from the cursor (`Last-Event-ID`, then `since`, then `last`), then follows live messages. Every event's `id` is a
//! cursor over all the stream's channels. The stream ends on shutdown or when the client is too slow; the
//! browser reconnects with `Last-Event-ID` by itself. A stream of private channels also ends when its token
//! expires, after an `herald.error` event that says so (its reconnection with the same token is then refused
//! with `401 token_expired`, which stops the browser's retries until the page brings a new token).
//!
//! Direct writes (`direct_writes`): a one-channel stream the server answers on its plain-TCP socket lends the
//! socket to the hub's fan-out while it waits for its next chunk, and takes it back when it wakes
//! (`hub/direct.rs`): what a partial write of the fan-out left goes first in its next chunk.
//!
//! Presence: a stream whose token names a user (`sub`) is a member of each of its channels of a presence namespace;
//! with `presence=true` it also opens with each such channel's members (`herald.presence`, after the replay) and
//! carries their joins and leaves (`herald.join`, `herald.leave`), none with an `id`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::{Bytes, BytesMut};
use herald_proto::{sse, ChannelName, Cursor};

use crate::config::TransportKind;
use crate::encoded::EncodedMessage;
use crate::error::ApiError;
use crate::heartbeat::{Beat, Heartbeats};
use crate::http::client_ip::ClientIp;
use crate::http::credentials::authorize_read;
use crate::http::query::Query;
use crate::http::{AppState, SseSocket};
use crate::hub::{DirectWire, Item, PresenceChange, Start, Subscription};
use crate::limits::Admission;
use crate::metrics::{Lag, Transport};
use crate::shutdown::Shutdown;

/// Live messages written in one chunk at most, so one busy stream cannot hold its task forever.
const MAX_BATCH: usize = 64;

/// One open stream.
struct Stream {
    subscription: Subscription,
    /// The position as of the last event written, over every channel: each event's `id`. Kept for streams of
    /// several channels only; with one, a message's own cursor is the stream's (and an idle stream is smaller).
    cursor: Option<Cursor>,
    envelope: bool,
    /// The next `: ping`, on the server's shared clock.
    heartbeat: Beat,
    heartbeats: Arc<Heartbeats>,
    shutdown: Shutdown,
    first: Option<Bytes>,
    /// The stream has said its last word.
    ended: bool,
    /// Live messages of the last chunk: it has been written when the next one is asked for.
    lag: Lag,
    _admission: Admission,
}

impl Stream {
    /// Writes `message` with the id of the stream's position right after it.
    fn push_message(&mut self, out: &mut BytesMut, message: &EncodedMessage) {
        let Some(cursor) = self.cursor.as_mut() else {
            // One channel: the message's own cursor, the event every such stream writes.
            out.extend_from_slice(message.sse_event(self.envelope));
            return;
        };
        cursor.set(message.message.channel.clone(), message.message.position);
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(cursor.encode().as_bytes());
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&message.sse_body(self.envelope));
    }

    /// The next chunk of the body, or `None` to end the stream. Asked for only once the last one is written, so
    /// the socket may be lent to the fan-out (`direct_writes`) while this waits: it is taken back on every way
    /// out. One async fn, not two nested: a nested one would add its own state to every idle stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        self.lag.written(self.subscription.hub().metrics(), Transport::Sse);
        if self.ended {
            return None;
        }
        self.subscription.lend();
        let chunk = loop {
            let live = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break None,
                () = self.subscription.too_slow() => break None,
                () = self.subscription.expired() => {
                    self.ended = true;
                    break Some(Bytes::from(error_event("token_expired", "the token expired; reconnect with a new one")));
                }
                () = self.heartbeats.at(self.heartbeat.due()) => {
                    self.heartbeat.advance();
                    break Some(Bytes::from(sse::comment("ping")));
                }
                live = self.subscription.recv() => live,
            };
            let mut out = BytesMut::new();
            let mut written = 0;
            // (`follow` takes the socket back.)
            let batch = self.subscription.follow(live, MAX_BATCH).await;
            // A failed catch-up read: write what was handed over, then end, so the browser resumes from its last
            // id (the message that needed the read is not delivered otherwise, and its channel may go quiet).
            self.ended = batch.error.is_some();
            for item in batch.items {
                match item {
                    Item::Message(message) => {
                        self.push_message(&mut out, &message);
                        self.lag.push(message.stored_at);
                        written += 1;
                    }
                    // No id: the ids of the messages after it move the position, so a stream cut in between
                    // resumes from before the reset and is told again.
                    Item::Reset { channel, from } => {
                        if let Some(cursor) = self.cursor.as_mut() {
                            cursor.set(channel.clone(), from);
                        }
                        out.extend_from_slice(&sse::event(None, Some(RESET_EVENT), &reset_data(&[channel])));
                    }
                    Item::Presence(event) => out.extend_from_slice(&event.sse_body(|e| {
                        let name = if e.change == PresenceChange::Join { JOIN_EVENT } else { LEAVE_EVENT };
                        let data = herald_proto::presence::change(&e.channel, &e.member.text());
                        Bytes::from(sse::event(None, Some(name), &data))
                    })),
                }
            }
            if !out.is_empty() {
                self.subscription.hub().metrics().delivered(Transport::Sse, written);
                break Some(out.freeze());
            }
            if self.ended {
                break None;
            }
        };
        self.subscription.take_back();
        self.after_lend(chunk)
    }

    /// Puts what a partial write of the fan-out left before `chunk`; before the end, it is a chunk of its own.
    fn after_lend(&mut self, chunk: Option<Bytes>) -> Option<Bytes> {
        let Some(rest) = self.subscription.take_rest() else { return chunk };
        match chunk {
            Some(chunk) => {
                let mut out = BytesMut::with_capacity(rest.len() + chunk.len());
                out.extend_from_slice(&rest);
                out.extend_from_slice(&chunk);
                Some(out.freeze())
            }
            None => {
                self.ended = true;
                Some(rest)
            }
        }
    }
}

/// `event: herald.error` with `{"code","message"}`: why the server ends the stream.
fn error_event(code: &str, message: &str) -> Vec<u8> {
    let data = serde_json::to_vec(&serde_json::json!({ "code": code, "message": message })).unwrap_or_default();
    sse::event(None, Some("herald.error"), &data)
}

/// The event type that says messages of some channels were lost.
const RESET_EVENT: &str = "herald.reset";
/// The event types of presence: a channel's members, a member that joined, one that left.
const PRESENCE_EVENT: &str = "herald.presence";
const JOIN_EVENT: &str = "herald.join";
const LEAVE_EVENT: &str = "herald.leave";

/// `{"channels":[…]}`: the data of a reset.
fn reset_data(channels: &[ChannelName]) -> Vec<u8> {
    let names: Vec<&str> = channels.iter().map(ChannelName::as_str).collect();
    serde_json::to_vec(&serde_json::json!({ "channels": names })).unwrap_or_default()
}

/// `GET /v1/sse?channel=…`.
pub async fn sse(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RawQuery(raw): RawQuery,
    socket: Option<Extension<SseSocket>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.require(TransportKind::Sse, "sse")?;
    let hub = &state.hub;
    let config = hub.config();
    let query = Query::parse(raw.as_deref());
    let channels = super::requested_channels(&state, &query, ip)?;
    let claims = authorize_read(&state, &headers, &query, &channels)?;
    let expires = super::TokenDeadline::of(&state, claims.as_ref(), &channels).map(|t| t.at());
    let envelope = query.flag("envelope")?;
    let follow_presence = query.flag("presence")?;
    let last = query.number("last")?;
    // Last-Event-ID wins over `since`: it is where the browser really stopped.
    // A cursor the server gave names no more channels than a request may: a longer one is refused unread.
    let max = config.max_channels_per_request;
    let last_event_id = headers.get("last-event-id").map(|v| v.to_str().unwrap_or("!"));
    let resume = last_event_id.map(|id| Cursor::decode_at_most(id, max)).transpose()?;
    let since = query.since_for(&channels, max)?;
    let (resume, latest) = match resume {
        Some(cursor) => (Some(cursor), false),
        None => (since.cursor, since.latest),
    };

    let admission = state.limits.admit(ip)?;
    let mut subscription = hub.subscription(Transport::Sse);
    subscription.set_deadline(expires);
    let stop_writing = crate::http::StopWriting(subscription.slow_signal());
    let mut opened = Vec::with_capacity(channels.len());
    let mut reset = Vec::new();
    let mut cursor = Cursor::new();
    let mut presence = Vec::new();
    for channel in channels {
        let start = super::start_for(&channel, resume.as_ref(), latest, last, Start::Now);
        let read = subscription.subscribe(&channel, start, usize::MAX).await?;
        super::note_cache_miss(&state, &channel, start, read.messages.len());
        super::present(&state, &mut subscription, &channel, claims.as_ref()).await?;
        if follow_presence && hub.has_presence(&channel) {
            let members = subscription.members(&channel).await?;
            presence.push(sse::event(
                None,
                Some(PRESENCE_EVENT),
                &herald_proto::presence::members(&channel, &members.texts()),
            ));
        }
        if read.reset {
            reset.push(channel.clone());
        }
        cursor.set(channel, read.start);
        opened.push(read.messages);
    }
    let opening_id = cursor.encode();
    // One channel only: a stream of several gives each event an id over all of them, which the fan-out's shared
    // bytes do not have.
    if let Some(Extension(SseSocket(socket))) = socket.filter(|_| config.direct_writes && opened.len() == 1) {
        // The stream takes the socket back through its subscription: no handle to keep.
        let _ = subscription.attach_direct(socket, DirectWire::Sse { envelope });
    }
    let mut stream = Stream {
        subscription,
        cursor: (opened.len() > 1).then_some(cursor),
        envelope,
        heartbeat: Beat::every(config.sse_heartbeat),
        heartbeats: state.heartbeats.clone(),
        shutdown: state.shutdown.clone(),
        first: None,
        ended: false,
        lag: Lag::default(),
        _admission: admission,
    };
    // A reset and the position after it travel in one block: an id alone would be committed by a browser even
    // if the connection died before the reset reached it, and its next resume would skip what was lost.
    let reset = (!reset.is_empty()).then(|| reset_data(&reset));
    let opening = sse::preamble(config.sse_retry_ms, &opening_id, reset.as_deref().map(|d| (RESET_EVENT, d)));
    let mut first = BytesMut::from(&opening[..]);
    let replayed: usize = opened.iter().map(Vec::len).sum();
    for message in opened.iter().flatten() {
        stream.push_message(&mut first, message);
    }
    hub.metrics().delivered(Transport::Sse, replayed as u64);
    // Without an id: a list of members is no position, and a stream that reopens reads it again.
    presence.iter().for_each(|event| first.extend_from_slice(event));
    stream.first = Some(first.freeze());

    // The stream ends itself on the shutdown signal, which lets the server's graceful shutdown finish.
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), stream))
    });
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ];
    let mut response = (headers, Body::from_stream(body)).into_response();
    response.extensions_mut().insert(stop_writing);
    Ok(response)
}

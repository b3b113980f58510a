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

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use herald_proto::{sse, ChannelName, Cursor};
use tokio::time::{interval_at, Instant, Interval};

use crate::config::TransportKind;
use crate::encoded::EncodedMessage;
use crate::engine::Start;
use crate::error::ApiError;
use crate::http::client_ip::ClientIp;
use crate::http::credentials::authorize_read;
use crate::http::query::Query;
use crate::http::AppState;
use crate::hub::{Connection, HubError, Tracker};
use crate::limits::Admission;
use crate::metrics::Transport;
use crate::shutdown::Shutdown;

/// Live messages written in one chunk at most, so one busy stream cannot hold its task forever.
const MAX_BATCH: usize = 64;

/// One open stream.
struct Stream {
    connection: Connection,
    trackers: Vec<(ChannelName, Tracker)>,
    envelope: bool,
    heartbeat: Interval,
    shutdown: Shutdown,
    first: Option<Bytes>,
    /// When the token the stream relies on runs out.
    expires: Option<Instant>,
    /// The stream has said its last word.
    ended: bool,
    _admission: Admission,
}

impl Stream {
    /// The cursor over every channel of the stream.
    fn cursor(&self) -> String {
        let mut cursor = Cursor::new();
        for (channel, tracker) in &self.trackers {
            cursor.set(channel.clone(), tracker.position());
        }
        cursor.encode()
    }

    fn push_message(&self, out: &mut BytesMut, message: &EncodedMessage) {
        // With one channel the stream's cursor is the message's own, already encoded.
        let id = if self.trackers.len() == 1 { message.cursor.clone() } else { self.cursor() };
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&message.sse_body(self.envelope));
    }

    /// Follows one live message into `out`; returns how many messages were written.
    async fn follow(&mut self, out: &mut BytesMut, live: Arc<EncodedMessage>) -> Result<u64, HubError> {
        let channel = live.message.channel.clone();
        let Some(i) = self.trackers.iter().position(|(c, _)| *c == channel) else { return Ok(0) };
        let mut tracker = self.trackers[i].1;
        let followed = self.connection.hub().follow(&mut tracker, live).await?;
        if followed.reset {
            out.extend_from_slice(&reset_event(&[channel]));
        }
        // Each event's id must cover the other channels too, so the stream's tracker moves message by message.
        for message in &followed.messages {
            self.trackers[i].1.advance(message.message.position);
            self.push_message(out, message);
        }
        self.trackers[i].1 = tracker;
        Ok(followed.messages.len() as u64)
    }

    /// The next chunk of the body, or `None` to end the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.ended {
            return None;
        }
        loop {
            let live = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                () = self.connection.too_slow() => return None,
                () = super::until(self.expires) => {
                    self.ended = true;
                    return Some(Bytes::from(error_event("token_expired", "the token expired; reconnect with a new one")));
                }
                _ = self.heartbeat.tick() => return Some(Bytes::from(sse::comment("ping"))),
                live = self.connection.recv() => live?,
            };
            let mut out = BytesMut::new();
            let mut written = self.follow(&mut out, live).await.ok()?;
            for _ in 1..MAX_BATCH {
                let Some(live) = self.connection.try_recv() else { break };
                written += self.follow(&mut out, live).await.ok()?;
            }
            if !out.is_empty() {
                self.connection.hub().metrics().delivered(Transport::Sse, written);
                return Some(out.freeze());
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

/// `{"channels":[…]}`: the data of a reset.
fn reset_data(channels: &[ChannelName]) -> Vec<u8> {
    let names: Vec<&str> = channels.iter().map(ChannelName::as_str).collect();
    serde_json::to_vec(&serde_json::json!({ "channels": names })).unwrap_or_default()
}

/// A reset found while following live messages. It carries no id: the ids of the messages after it move the
/// position, so a stream cut between the two resumes from before the reset and is told again.
fn reset_event(channels: &[ChannelName]) -> Vec<u8> {
    sse::event(None, Some(RESET_EVENT), &reset_data(channels))
}

/// `GET /v1/sse?channel=…`.
pub async fn sse(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.require(TransportKind::Sse, "sse")?;
    let hub = &state.hub;
    let config = hub.config();
    let query = Query::parse(raw.as_deref());
    let channels = super::requested_channels(&state, &query, ip)?;
    let claims = authorize_read(&state, &headers, &query, &channels)?;
    let relies_on_token = channels.iter().any(|c| state.auth.is_private(c));
    let expires = claims.as_ref().filter(|_| relies_on_token).map(|c| super::token_deadline(&state, c));
    let envelope = query.flag("envelope")?;
    let last = query.number("last")?;
    // Last-Event-ID wins over `since`: it is where the browser really stopped.
    let resume = headers.get("last-event-id").map(|v| Cursor::decode(v.to_str().unwrap_or("!"))).transpose()?;
    let since = query.since()?;
    let (cursor, latest) = match resume {
        Some(cursor) => (Some(cursor), false),
        None => (since.cursor, since.latest),
    };

    let admission = state.limits.admit(ip)?;
    let mut connection = hub.connect(Transport::Sse);
    let stop_writing = super::StopWriting(connection.slow_signal());
    for channel in &channels {
        connection.subscribe(channel).await;
    }
    let mut trackers = Vec::with_capacity(channels.len());
    let mut replay = Vec::new();
    let mut reset = Vec::new();
    for channel in channels {
        let start = super::start_for(&channel, cursor.as_ref(), latest, last, Start::Now);
        let read = hub.read(&channel, start, usize::MAX).await?;
        if read.reset {
            reset.push(channel.clone());
        }
        trackers.push((channel, Tracker::new(read.start)));
        replay.extend(read.messages);
    }
    let heartbeat = config.sse_heartbeat;
    let mut stream = Stream {
        connection,
        trackers,
        envelope,
        heartbeat: interval_at(Instant::now() + heartbeat, heartbeat),
        shutdown: state.shutdown.clone(),
        first: None,
        expires,
        ended: false,
        _admission: admission,
    };
    // A reset and the position after it travel in one block: an id alone would be committed by a browser even
    // if the connection died before the reset reached it, and its next resume would skip what was lost.
    let reset = (!reset.is_empty()).then(|| reset_data(&reset));
    let opening = sse::preamble(config.sse_retry_ms, &stream.cursor(), reset.as_deref().map(|d| (RESET_EVENT, d)));
    let mut first = BytesMut::from(&opening[..]);
    for message in &replay {
        if let Some((_, tracker)) = stream.trackers.iter_mut().find(|(c, _)| *c == message.message.channel) {
            tracker.advance(message.message.position);
        }
        stream.push_message(&mut first, message);
    }
    hub.metrics().delivered(Transport::Sse, replay.len() as u64);
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

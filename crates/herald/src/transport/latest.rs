//! `GET /v1/channels/{channel}/latest`: the newest message's data as a plain JSON document.
//!
//! Made for pages written against an ordinary JSON endpoint: the body is exactly the published data, the ETag
//! is the message's cursor, and `If-None-Match` gives `304`. With `wait`, a request that already has the newest
//! value is held until a newer one arrives (long polling with nothing but HTTP caching semantics). Of a private
//! channel, it is held no longer than its token is accepted, and is then `401 token_expired`, as a poll is.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_proto::{ChannelName, Cursor, Position};

use super::TokenDeadline;
use crate::config::TransportKind;
use crate::encoded::EncodedMessage;
use crate::error::ApiError;
use crate::http::client_ip::ClientIp;
use crate::http::credentials::authorize_read;
use crate::http::query::Query;
use crate::http::{AppState, ChannelPath};
use crate::hub::{Item, Start};
use crate::metrics::Transport;

/// The ETags of an `If-None-Match` that are read; the others are taken for ETags not of this server.
const MAX_ETAGS: usize = 16;

/// What `If-None-Match` said.
enum Known {
    /// No header.
    Nothing,
    /// `*`: any current value.
    Any,
    /// These positions of the channel.
    Positions(Vec<Position>),
}

impl Known {
    fn parse(headers: &HeaderMap, channel: &ChannelName) -> Self {
        let Some(value) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else {
            return Known::Nothing;
        };
        if value.trim() == "*" {
            return Known::Any;
        }
        // An ETag that is not one of ours counts as older than anything: the current value is sent. Ours are
        // cursors of one channel, so a longer one is not read, and only the first `MAX_ETAGS` are (a cache keeps
        // a few variants; more cost time, not answers).
        let positions = value
            .split(',')
            .take(MAX_ETAGS)
            .filter_map(|tag| {
                let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
                Cursor::decode_at_most(tag, 1).ok()?.get(channel)
            })
            .collect();
        Known::Positions(positions)
    }

    fn given(&self) -> bool {
        !matches!(self, Known::Nothing)
    }

    fn has(&self, message: &EncodedMessage) -> bool {
        match self {
            Known::Nothing => false,
            Known::Any => true,
            Known::Positions(p) => p.contains(&message.message.position),
        }
    }
}

fn etag(message: &EncodedMessage) -> HeaderValue {
    // A cursor is base64url text, always a valid header value.
    HeaderValue::from_str(&format!("\"{}\"", message.cursor)).unwrap_or(HeaderValue::from_static("\"\""))
}

fn current(message: &EncodedMessage) -> Response {
    let m = &message.message;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag(message)),
        (
            header::HeaderName::from_static("x-herald-event"),
            HeaderValue::from_str(m.event.as_str()).unwrap_or(HeaderValue::from_static("message")),
        ),
        (header::HeaderName::from_static("x-herald-offset"), HeaderValue::from(m.position.offset)),
    ];
    (StatusCode::OK, headers, m.data.clone()).into_response()
}

fn not_modified(message: Option<&EncodedMessage>) -> Response {
    let mut response = (StatusCode::NOT_MODIFIED, [(header::CACHE_CONTROL, "no-cache")]).into_response();
    if let Some(message) = message {
        response.headers_mut().insert(header::ETAG, etag(message));
    }
    response
}

fn empty(channel: &ChannelName) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "channel_empty", format!("channel {channel} has no message yet"))
        .into_response()
}

/// `GET /v1/channels/{channel}/latest[?wait=N]`.
pub async fn latest(
    State(state): State<AppState>,
    ChannelPath(channel): ChannelPath,
    ClientIp(ip): ClientIp,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.require(TransportKind::Poll, "poll")?;
    let query = Query::parse(raw.as_deref());
    let claims = authorize_read(&state, &headers, &query, std::slice::from_ref(&channel))?;
    let token = TokenDeadline::of(&state, claims.as_ref(), std::slice::from_ref(&channel));
    // Nothing is answered under a token once it is no longer accepted.
    let in_time = || token.map_or(Ok(()), |t| t.check(&state));
    let wait = super::poll::wait_param(&state, &query)?;
    let _admission = (!wait.is_zero()).then(|| state.limits.admit(ip)).transpose()?;
    let known = Known::parse(&headers, &channel);
    let hub = &state.hub;
    let transport = if wait.is_zero() { Transport::Poll } else { Transport::LongPoll };
    let deliver = |message: &EncodedMessage| {
        in_time()?;
        hub.metrics().delivered(transport, 1);
        Ok(current(message))
    };
    // A held request subscribes before it reads, so a message published in between is not missed.
    let held = !wait.is_zero();
    let mut subscription = if held { hub.subscription(transport) } else { hub.reader() };
    let opened = subscription.subscribe(&channel, Start::Newest(1), 1).await?;
    let newest: Option<Arc<EncodedMessage>> = opened.messages.into_iter().next();
    match &newest {
        Some(message) if !known.has(message) => return deliver(message),
        _ if held => {
            // Held no longer than the wait, nor than the token is accepted (the subscription's deadline).
            subscription.set_deadline(token.map(|t| t.at()));
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let expired = subscription.expired();
                let live = tokio::select! {
                    live = subscription.recv() => live,
                    () = expired => break,
                    () = tokio::time::sleep_until(deadline) => break,
                    () = state.shutdown.cancelled() => break,
                };
                let newer =
                    subscription.follow(live, usize::MAX).await.into_result()?.into_iter().rev().find_map(|item| {
                        match item {
                            Item::Message(message) => Some(message),
                            Item::Reset { .. } | Item::Presence(_) => None,
                        }
                    });
                if let Some(newer) = newer {
                    hub.metrics().delivery_lag(transport, newer.stored_at);
                    return deliver(&newer);
                }
            }
        }
        _ => {}
    }
    // Without a wait an empty channel is a 404 whatever the request knew; after a wait, a client that sent an
    // ETag is told nothing changed.
    let unchanged = if held { known.given() } else { newest.is_some() };
    in_time()?;
    Ok(if unchanged { not_modified(newest.as_deref()) } else { empty(&channel) })
}

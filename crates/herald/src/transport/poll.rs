//! Polling for every message: `GET /v1/channels/{channel}/messages` and `GET /v1/poll` (several channels).
//!
//! Without `wait` this is short polling: history after the cursor, at once. With `wait`, when there is nothing
//! new, the request is held until a message arrives, the wait ends or the server shuts down. A held poll is a
//! hub `Subscription` (registered before history is read, so a message published in between is delivered
//! exactly once); a short poll is a subscription that only reads.
//!
//! A poll of private channels relies on its token: it is held no longer than the token is accepted, and a poll
//! whose answer would be taken after that instant is `401 token_expired` instead (nothing that arrived after the
//! deadline is ever delivered under the token; the client's cursor does not move, so it misses nothing when it
//! asks again with a new token).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use herald_proto::{ChannelName, Cursor};

use super::TokenDeadline;
use crate::auth::Claims;
use crate::config::TransportKind;
use crate::encoded::EncodedMessage;
use crate::error::ApiError;
use crate::http::client_ip::ClientIp;
use crate::http::credentials::authorize_read;
use crate::http::query::Query;
use crate::http::{AppState, ChannelPath};
use crate::hub::{Item, Start};
use crate::metrics::{Lag, Transport};

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

/// What a poll answers.
struct Batch {
    messages: Vec<Arc<EncodedMessage>>,
    cursor: Cursor,
    reset: Vec<ChannelName>,
}

/// The parameters common to both endpoints.
struct PollRequest {
    starts: Vec<(ChannelName, Start)>,
    limit: usize,
    wait: Duration,
    token: Option<TokenDeadline>,
}

impl PollRequest {
    fn parse(
        state: &AppState,
        query: &Query,
        channels: Vec<ChannelName>,
        claims: Option<&Claims>,
    ) -> Result<Self, ApiError> {
        let token = TokenDeadline::of(state, claims, &channels);
        let since = query.since_for(&channels, state.hub.config().max_channels_per_request)?;
        let last = query.number("last")?;
        let starts = channels
            .into_iter()
            .map(|c| {
                let start = super::start_for(&c, since.cursor.as_ref(), since.latest, last, Start::Oldest);
                (c, start)
            })
            .collect();
        let limit = query.number("limit")?.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
        Ok(Self { starts, limit, wait: wait_param(state, query)?, token })
    }
}

/// `wait=N` seconds, clamped to `max_wait_secs`.
pub(crate) fn wait_param(state: &AppState, query: &Query) -> Result<Duration, ApiError> {
    let wait = Duration::from_secs(query.number("wait")?.unwrap_or(0));
    Ok(wait.min(state.hub.config().max_wait))
}

async fn collect(state: &AppState, request: PollRequest) -> Result<Batch, ApiError> {
    let hub = &state.hub;
    let holding = !request.wait.is_zero();
    let mut subscription = if holding { hub.subscription(Transport::LongPoll) } else { hub.reader() };
    let mut remaining = request.limit;
    let mut batch = Batch { messages: Vec::new(), cursor: Cursor::new(), reset: Vec::new() };
    // Live messages a held poll answers; timed when the answer is handed to the HTTP layer.
    let mut lag = Lag::default();
    for (channel, start) in &request.starts {
        let opened = subscription.subscribe(channel, *start, remaining).await?;
        remaining -= opened.messages.len();
        if opened.reset {
            batch.reset.push(channel.clone());
        }
        batch.messages.extend(opened.messages);
    }
    if holding && batch.messages.is_empty() {
        // Held no longer than the wait, nor than the token is accepted (the subscription's deadline).
        subscription.set_deadline(request.token.map(|t| t.at()));
        let expired = subscription.expired();
        let deadline = tokio::time::Instant::now() + request.wait;
        let live = tokio::select! {
            live = subscription.recv() => Some(live),
            () = expired => None,
            () = tokio::time::sleep_until(deadline) => None,
            () = state.shutdown.cancelled() => None,
        };
        // The first message, and what arrived with it, up to the limit.
        if let Some(live) = live {
            for item in subscription.follow(live, remaining).await.into_result()? {
                match item {
                    Item::Message(message) => {
                        lag.push(message.stored_at);
                        batch.messages.push(message);
                    }
                    Item::Reset { channel, .. } if !batch.reset.contains(&channel) => batch.reset.push(channel),
                    Item::Reset { .. } | Item::Presence(_) => {}
                }
            }
        }
    }
    batch.cursor = subscription.cursor();
    if let Some(token) = request.token {
        token.check(state)?;
    }
    let transport = if holding { Transport::LongPoll } else { Transport::Poll };
    hub.metrics().delivered(transport, batch.messages.len() as u64);
    lag.written(hub.metrics(), transport);
    Ok(batch)
}

fn answer(batch: Batch, with_reset_channels: bool) -> Response {
    let size: usize = batch.messages.iter().map(|m| m.envelope.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 128);
    body.extend_from_slice(b"{\"messages\":[");
    for (i, message) in batch.messages.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&message.envelope);
    }
    body.extend_from_slice(
        format!("],\"cursor\":\"{}\",\"reset\":{}", batch.cursor.encode(), !batch.reset.is_empty()).as_bytes(),
    );
    if with_reset_channels {
        let names: Vec<&str> = batch.reset.iter().map(ChannelName::as_str).collect();
        body.extend_from_slice(b",\"reset_channels\":");
        body.extend_from_slice(&serde_json::to_vec(&names).unwrap_or_else(|_| b"[]".to_vec()));
    }
    body.push(b'}');
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /v1/channels/{channel}/messages`.
pub async fn channel_messages(
    State(state): State<AppState>,
    ChannelPath(channel): ChannelPath,
    ClientIp(ip): ClientIp,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.require(TransportKind::Poll, "poll")?;
    let query = Query::parse(raw.as_deref());
    let claims = authorize_read(&state, &headers, &query, std::slice::from_ref(&channel))?;
    let request = PollRequest::parse(&state, &query, vec![channel], claims.as_ref())?;
    // A held poll is a connection, under the connection limits; a short poll is not.
    let _admission = (!request.wait.is_zero()).then(|| state.limits.admit(ip)).transpose()?;
    Ok(answer(collect(&state, request).await?, false))
}

/// `GET /v1/poll?channel=…`.
pub async fn poll(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.require(TransportKind::Poll, "poll")?;
    let query = Query::parse(raw.as_deref());
    let channels = super::requested_channels(&state, &query, ip)?;
    let claims = authorize_read(&state, &headers, &query, &channels)?;
    let request = PollRequest::parse(&state, &query, channels, claims.as_ref())?;
    let _admission = (!request.wait.is_zero()).then(|| state.limits.admit(ip)).transpose()?;
    Ok(answer(collect(&state, request).await?, true))
}

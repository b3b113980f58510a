//! `GET /v1/ws`: WebSocket, JSON text frames, many channels per connection, both directions.
//!
//! One task per connection selects over the socket, the connection's queue of live messages, its next ping on the
//! server's shared heartbeat clock (`heartbeat.rs`) and the shutdown signal. Requests are parsed by `herald_proto::ws`; a bad frame gets an `error` frame and the
//! connection stays usable. A subscription is registered before its history is read and followed by a
//! tracker, so replay and live messages join without a gap or a repeat.
//!
//! Access: the handshake is refused for a foreign `Origin` (`403`), a bad token (`401`) or a connection limit
//! (`429`). A token comes with the handshake (`Authorization: Bearer` or `?token=`) or in an `auth` frame, which
//! also replaces it before it expires. Subscriptions to private channels rely on the token: when it expires they
//! end, each with an `ended` frame, and the connection stays open for a new `auth` and a resubscription from
//! the client's cursors.
//!
//! Direct writes (`direct_writes`): a plain-TCP connection lends its socket to the hub's fan-out whenever its task
//! waits with everything written, and takes it back as soon as it wakes (`hub/direct.rs`); the live messages the
//! fan-out writes meanwhile never wake the task.
//!
//! Presence: a connection whose token names a user (`sub`) is a member of each channel of a presence namespace it
//! subscribes to, presenting the token's `info`; a `presence` frame reads a subscribed channel's members, and
//! their joins and leaves follow as `join` and `leave` frames, in order with the channel's messages.

use std::collections::HashSet;
use std::future::Future;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald_proto::ws::{ClientFrame, FrameError, RequestId, ServerFrame};
use herald_proto::{ChannelName, Cursor, EventName};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};

use crate::auth::{AuthError, Claims, TokenError};
use crate::config::TransportKind;
use crate::encoded::EncodedMessage;
use crate::error::ApiError;
use crate::heartbeat::Beat;
use crate::http::client_ip::ClientIp;
use crate::http::cors::websocket_origin_allowed;
use crate::http::credentials::authorize_read;
use crate::http::query::Query;
use crate::http::websocket::{self, UpgradeRejection, WebSocket, WebSocketUpgrade};
use crate::http::AppState;
use crate::hub::{DirectWire, EventKind, Item, LifecycleEvent, PresenceChange, Start, Subscription};
use crate::limits::{Admission, TokenBucket};
use crate::metrics::{Lag, Transport};
use crate::refusal::Refusal;

/// Close code: the server is going away; reconnect and resume with your cursors.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Close code: a frame was larger than `max_frame_bytes`.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the connection's queue overflowed; reconnect and resume with your cursors.
pub const CLOSE_SLOW_CONSUMER: u16 = 4001;
/// Close code: a history read the connection needed failed (Redis unreachable); reconnect and resume with your
/// cursors. 1011: the server met a condition that kept it from fulfilling the request.
pub const CLOSE_ENGINE_UNAVAILABLE: u16 = 1011;

/// How long a close frame may take to send before the connection is simply dropped.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Live messages sent per wake-up at most, before the task looks at the socket again.
const MAX_BATCH: usize = 64;

/// `GET /v1/ws`.
pub async fn ws(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, UpgradeRejection>,
) -> Result<Response, ApiError> {
    // A disabled transport is `404 transport_disabled` whatever the request, so this comes before the upgrade's
    // own checks.
    state.require(TransportKind::WebSocket, "ws")?;
    let upgrade = match upgrade {
        Ok(upgrade) if state.hub.config().direct_writes => upgrade.with_plain_tcp(),
        Ok(upgrade) => upgrade,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let text_header = |name| headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or("?"));
    let origin = text_header(header::ORIGIN);
    if !websocket_origin_allowed(&state.hub.config().cors_origins, origin, text_header(header::HOST)) {
        let origin = origin.unwrap_or_default().to_owned();
        state.limits.refused(Refusal::OriginForbidden, || format!("{ip}: a WebSocket from origin {origin:?}"));
        let message = format!("WebSocket connections from {origin} are not allowed here");
        return Err(ApiError::new(StatusCode::FORBIDDEN, "origin_forbidden", message));
    }
    let claims = authorize_read(&state, &headers, &Query::parse(raw.as_deref()), &[])?;
    let admission = state.limits.admit(ip)?;
    // Boxed: the upgrade's callback waits in its task, which keeps room for what the callback held after it ran.
    let upgrading = Box::new((state.clone(), Access::new(&state, claims, admission)));
    let max = state.hub.config().max_frame_bytes;
    let tracker = state.shutdown.tracker().clone();
    let config = websocket::config(max);
    // The connection's future is boxed, and made with the socket in its place: the upgrade's task keeps room for
    // what it holds at each step, and a socket or session moved from one future into the next takes room in
    // each (5.4 KiB of task per idle Pusher connection before, docs/BENCHMARKS.md).
    Ok(upgrade.on_upgrade(config, move |socket| {
        let (state, access) = *upgrading;
        Box::pin(tracker.track_future(Session::new(state, socket, access).run()))
    }))
}

/// What the connection's token allows and until when, and what the connection may still take.
struct Access {
    /// Boxed: most connections have none, and an idle connection should not keep room for one.
    claims: Option<Box<Claims>>,
    /// The token ran out and no new one came.
    expired: bool,
    /// Subscriptions that needed the token: they end with it.
    private: HashSet<ChannelName>,
    bucket: TokenBucket,
    /// The connection's address, and its place in the count of connections per address.
    admission: Admission,
}

impl Access {
    fn new(state: &AppState, claims: Option<Claims>, admission: Admission) -> Self {
        let bucket = state.limits.connection_bucket();
        let claims = claims.map(Box::new);
        Self { claims, expired: false, private: HashSet::new(), bucket, admission }
    }

    /// The claims to check a request with; after expiry, the request is refused as `token_expired`.
    fn claims(&self, state: &AppState) -> Result<Option<&Claims>, AuthError> {
        match &self.claims {
            Some(claims) if self.expired => {
                Err(state.auth.refused(AuthError::Token(TokenError::Expired { exp: claims.exp })))
            }
            claims => Ok(claims.as_deref()),
        }
    }
}

/// One WebSocket connection.
struct Session {
    state: AppState,
    socket: WebSocket,
    subscription: Subscription,
    access: Access,
    /// Live messages fed to the socket and not yet flushed.
    lag: Lag,
}

fn refused(id: Option<RequestId>, err: AuthError) -> FrameError {
    FrameError { id, code: err.code(), message: err.to_string() }
}

/// What woke a waiting session.
enum Woke {
    /// A frame from the client, or the end of its frames.
    Frame(Option<Result<WsMessage, WsError>>),
    /// Live messages are queued.
    Live(crate::hub::Live),
    /// The connection's heartbeat is due.
    Beat,
    /// The token ran out.
    Expired,
}

/// Why a session ended.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer left or the socket failed: nothing to say.
    Gone,
}

fn text(frame: &ServerFrame<'_>) -> WsMessage {
    WsMessage::Text(Utf8Bytes::from(frame.encode()))
}

impl Session {
    fn new(state: AppState, mut socket: WebSocket, access: Access) -> Self {
        // The connection's token, if any, has a deadline; what relies on it (its private channels) ends there.
        let mut subscription = state.hub.subscription(Transport::WebSocket);
        subscription.set_deadline(access.claims.as_deref().map(|c| super::token_deadline(&state, c)));
        // With `direct_writes` on plain TCP, the socket can be lent to the fan-out ([`Subscription::lends`]).
        let direct = websocket::plain_socket(&socket)
            .and_then(|stream| subscription.attach_direct(stream, DirectWire::WebSocket));
        if let Some(handle) = direct {
            websocket::lend_through(&mut socket, handle);
        }
        Self { state, socket, subscription, access, lag: Lag::default() }
    }

    /// Not an `async fn`: one that takes `mut self` keeps the session twice in its future (the argument and the
    /// mutable binding made of it, 768 bytes each); an `async move` block captures it once.
    #[allow(clippy::manual_async_fn)] // The lint's `async fn` is the double copy above.
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let end = self.serve().await;
            if let End::Close(code, reason) = end {
                let frame = CloseFrame { code: code.into(), reason: Utf8Bytes::from_static(reason) };
                // A peer that stopped reading may never take the close frame: do not wait for it forever.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.send(WsMessage::Close(Some(frame)))).await;
            }
        }
    }

    /// Runs the session until it ends. Shutdown and the slow-consumer signal interrupt any step, including a
    /// write blocked on a peer that stopped reading.
    async fn serve(&mut self) -> End {
        let mut ping = Beat::every(self.state.hub.config().ws_ping);
        let stop = self.state.shutdown.token();
        let mut last_heard = Instant::now();
        // Made once, not per wake-up: each registers with its token when first polled (that bookkeeping was about
        // 4% of a fan-out profile).
        let stopped = stop.cancelled();
        let slow = self.subscription.slow_signal().cancelled_owned();
        tokio::pin!(stopped, slow);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return End::Close(CLOSE_GOING_AWAY, "server shutting down"),
                () = &mut slow => return End::Close(CLOSE_SLOW_CONSUMER, "slow consumer"),
                end = self.step(&mut ping, &mut last_heard) => {
                    if let Some(end) = end {
                        return end;
                    }
                }
            }
        }
    }

    /// Waits for one thing to do and does it: a client frame, live messages, or a ping. While it waits, the
    /// socket is lent to the fan-out when it can be: every step ends with everything written (each branch
    /// flushes), and each branch takes the socket back before anything else.
    async fn step(&mut self, ping: &mut Beat, last_heard: &mut Instant) -> Option<End> {
        let expired = self.subscription.expired();
        if self.subscription.lends() && websocket::is_settled(&self.socket) {
            self.subscription.lend();
        }
        // Only the waiting is done here, and what woke the session is handled in a future of its own (boxed where
        // it has much to do): every idle connection's future keeps room for what this one holds while it waits,
        // and a value held across several of its awaits (a frame, the select's output) takes room in all of them.
        let woke = tokio::select! {
            frame = self.socket.next() => Woke::Frame(frame),
            live = self.subscription.recv() => Woke::Live(live),
            () = self.state.heartbeats.at(ping.due()) => Woke::Beat,
            () = expired => Woke::Expired,
        };
        // Moved into a call: matched here, `woke` would take room in the waiting state too.
        self.handle(woke, ping, last_heard).await
    }

    /// Does what woke the session.
    async fn handle(&mut self, woke: Woke, ping: &mut Beat, last_heard: &mut Instant) -> Option<End> {
        match woke {
            Woke::Frame(frame) => {
                self.subscription.take_back();
                *last_heard = Instant::now();
                Box::pin(self.received(frame)).await
            }
            // (`follow` takes the socket back.) One allocation per wake-up, for up to `MAX_BATCH` messages.
            Woke::Live(live) => Box::pin(self.deliver(live)).await,
            Woke::Beat => {
                self.subscription.take_back();
                ping.advance();
                if last_heard.elapsed() > ping.period() * 2 {
                    return Some(End::Gone);
                }
                // Boxed like the rest: this future is kept beside the waiting one.
                Box::pin(self.send(WsMessage::Ping(Bytes::new()))).await;
                None
            }
            Woke::Expired => {
                self.subscription.take_back();
                Box::pin(self.expire()).await;
                None
            }
        }
    }

    /// A frame from the client, or its end.
    async fn received(&mut self, frame: Option<Result<WsMessage, WsError>>) -> Option<End> {
        match frame {
            Some(Ok(WsMessage::Text(text))) => self.request(text.as_str()).await,
            Some(Ok(WsMessage::Binary(_))) => {
                let message = "send JSON text frames".into();
                let err = FrameError { id: None, code: "binary_not_supported", message };
                self.send(text(&ServerFrame::Error(&err))).await;
            }
            Some(Ok(WsMessage::Close(_))) | None => return Some(End::Gone),
            // Ping and Pong only prove the peer is alive. The socket answers a ping as it reads it: what the peer
            // did not take yet is written now, so that nothing of it is left half-written when the socket is lent
            // again.
            Some(Ok(_)) => {
                if self.subscription.lends() {
                    let _ = self.socket.flush().await;
                }
            }
            Some(Err(err)) => {
                let end = too_big(err);
                if end.is_some() {
                    let (ip, max) = (self.access.admission.ip(), self.state.hub.config().max_frame_bytes);
                    self.state.limits.refused(Refusal::FrameSize, || format!("{ip}: a frame over {max} bytes"));
                }
                return Some(end.unwrap_or(End::Gone));
            }
        }
        None
    }

    /// Live messages: written and flushed.
    async fn deliver(&mut self, live: crate::hub::Live) -> Option<End> {
        let complete = self.live(live).await;
        if self.socket.flush().await.is_err() {
            return Some(End::Gone);
        }
        self.lag.written(self.state.hub.metrics(), Transport::WebSocket);
        if !complete {
            return Some(End::Close(CLOSE_ENGINE_UNAVAILABLE, "engine unavailable: resume with your cursors"));
        }
        None
    }

    /// The token ran out: every subscription that needed it ends, with an `ended` frame each.
    async fn expire(&mut self) {
        self.subscription.set_deadline(None);
        self.access.expired = true;
        if let Some(claims) = &self.access.claims {
            self.state.auth.refused(AuthError::Token(TokenError::Expired { exp: claims.exp }));
        }
        let mut ending: Vec<ChannelName> = self.access.private.drain().collect();
        ending.sort_unstable();
        let message = "the token expired: send a new one in an `auth` frame, then subscribe again with your cursor";
        for channel in ending {
            self.end(&channel, "token_expired", message).await;
        }
        let _ = self.socket.flush().await;
    }

    /// Ends a subscription on the server's initiative.
    async fn end(&mut self, channel: &ChannelName, code: &'static str, message: &str) {
        self.subscription.unsubscribe(channel);
        self.access.private.remove(channel);
        self.feed(text(&ServerFrame::Ended { channel, code, message })).await;
    }

    /// `auth`: a token for this connection, replacing any earlier one. Private subscriptions the new token does
    /// not grant end.
    async fn authenticate(&mut self, token: String, id: Option<RequestId>) -> Result<Option<WsMessage>, FrameError> {
        let claims = self.state.auth.verify(&token).map_err(|err| refused(id.clone(), err))?;
        let mut lost: Vec<ChannelName> = self
            .access
            .private
            .iter()
            .filter(|channel| self.state.auth.subscribe(Some(&claims), channel).is_err())
            .cloned()
            .collect();
        lost.sort_unstable();
        for channel in lost {
            self.end(&channel, "channel_forbidden", "the new token does not grant this channel").await;
        }
        self.subscription.set_deadline(Some(super::token_deadline(&self.state, &claims)));
        self.access.expired = false;
        let answer = text(&ServerFrame::Authenticated { sub: claims.sub.as_deref(), exp: claims.exp, id: id.as_ref() });
        let same_user = self.access.claims.as_ref().is_some_and(|c| (&c.sub, &c.info) == (&claims.sub, &claims.info));
        self.access.claims = Some(Box::new(claims));
        if !same_user {
            self.present_again().await;
        }
        Ok(Some(answer))
    }

    /// The token names another user (or presents other info): each presence channel's membership moves to it (the
    /// old one leaves after the grace). A subscription the new user cannot join ends.
    async fn present_again(&mut self) {
        let hub = &self.state.hub;
        let channels: Vec<ChannelName> =
            self.subscription.channels().filter(|c| hub.has_presence(c)).cloned().collect();
        for channel in channels {
            self.subscription.leave(&channel);
            let joined =
                super::present(&self.state, &mut self.subscription, &channel, self.access.claims.as_deref()).await;
            if let Err(err) = joined {
                self.end(&channel, err.code(), &err.to_string()).await;
            }
        }
    }

    /// Sends a frame; a failed send ends the session through the next `recv`.
    async fn send(&mut self, message: WsMessage) {
        let _ = self.socket.send(message).await;
    }

    /// Queues a frame without flushing, for batches.
    async fn feed(&mut self, message: WsMessage) {
        let _ = self.socket.feed(message).await;
    }

    /// Queues a message's frame, encoded once for all its subscribers, without flushing.
    async fn feed_wire(&mut self, message: &EncodedMessage) {
        let _ = self.socket.feed_wire(message.ws_wire()).await;
    }

    /// Sends what a live message (and what was queued with it) turned into; false when a catch-up read failed,
    /// after which the connection must end: the message that needed it is not delivered, and only a resume from
    /// the client's cursors brings it (the channel may publish nothing more).
    async fn live(&mut self, live: crate::hub::Live) -> bool {
        let batch = self.subscription.follow(live, MAX_BATCH).await;
        let mut delivered = 0;
        for item in batch.items {
            match item {
                Item::Message(message) => {
                    delivered += 1;
                    self.lag.push(message.stored_at);
                    self.feed_wire(&message).await;
                }
                Item::Reset { channel, from } => {
                    let cursor = Cursor::single(channel.clone(), from).encode();
                    self.feed(text(&ServerFrame::Reset { channel: &channel, cursor: &cursor })).await;
                }
                Item::Presence(event) => {
                    let frame = event.ws_frame(|e| {
                        let join = e.change == PresenceChange::Join;
                        Bytes::from(ServerFrame::Change { channel: &e.channel, join, member: e.member.text() }.encode())
                    });
                    self.feed(WsMessage::Text(Utf8Bytes::try_from(frame).unwrap_or_default())).await;
                }
            }
        }
        self.state.hub.metrics().delivered(Transport::WebSocket, delivered);
        batch.error.is_none()
    }

    async fn request(&mut self, frame: &str) {
        let answer = match ClientFrame::parse(frame) {
            Ok(ClientFrame::Subscribe { channel, cursor, last, id }) => self.subscribe(channel, cursor, last, id).await,
            Ok(ClientFrame::Unsubscribe { channel, id }) => {
                if self.subscription.unsubscribe(&channel) {
                    self.access.private.remove(&channel);
                    Ok(Some(text(&ServerFrame::Unsubscribed { channel: &channel, id: id.as_ref() })))
                } else {
                    Err(FrameError { id, code: "not_subscribed", message: format!("not subscribed to {channel}") })
                }
            }
            Ok(ClientFrame::Publish { channel, event, data, id }) => self.publish(channel, event, data, id).await,
            Ok(ClientFrame::Ping { id }) => Ok(Some(text(&ServerFrame::Pong { id: id.as_ref() }))),
            Ok(ClientFrame::Auth { token, id }) => self.authenticate(token, id).await,
            Ok(ClientFrame::Presence { channel, id }) => self.presence(channel, id).await,
            Err(err) => Err(err),
        };
        match answer {
            Ok(Some(message)) => self.send(message).await,
            Ok(None) => {
                let _ = self.socket.flush().await;
            }
            Err(err) => self.send(text(&ServerFrame::Error(&err))).await,
        }
    }

    async fn subscribe(
        &mut self,
        channel: ChannelName,
        cursor: Option<Cursor>,
        last: Option<u32>,
        id: Option<RequestId>,
    ) -> Result<Option<WsMessage>, FrameError> {
        let max = self.state.hub.config().max_subscriptions_per_connection;
        if self.subscription.is_subscribed(&channel) {
            return Err(FrameError {
                id,
                code: "already_subscribed",
                message: format!("already subscribed to {channel}"),
            });
        }
        if self.subscription.len() >= max {
            let ip = self.access.admission.ip();
            self.state.limits.refused(Refusal::Subscriptions, || format!("{ip}: more than {max} subscriptions"));
            let message = format!("at most {max} subscriptions per connection");
            return Err(FrameError { id, code: "too_many_subscriptions", message });
        }
        let allowed = self.access.claims(&self.state).and_then(|c| self.state.auth.subscribe(c, &channel));
        allowed.map_err(|err| refused(id.clone(), err))?;
        if self.state.auth.is_private(&channel) {
            self.access.private.insert(channel.clone());
        }
        let start = super::start_for(&channel, cursor.as_ref(), false, last.map(u64::from), Start::Now);
        let opened = match self.subscription.subscribe(&channel, start, usize::MAX).await {
            Ok(opened) => opened,
            Err(err) => {
                self.access.private.remove(&channel);
                return Err(FrameError { id, code: "engine_unavailable", message: err.to_string() });
            }
        };
        // A subscriber whose token names a user is a member of a presence channel, or not subscribed at all.
        let claims = self.access.claims.as_deref().filter(|_| !self.access.expired);
        if let Err(err) = super::present(&self.state, &mut self.subscription, &channel, claims).await {
            self.subscription.unsubscribe(&channel);
            self.access.private.remove(&channel);
            return Err(FrameError { id, code: err.code(), message: err.to_string() });
        }
        super::note_cache_miss(&self.state, &channel, start, opened.messages.len());
        let start_cursor = Cursor::single(channel.clone(), opened.start).encode();
        let subscribed =
            ServerFrame::Subscribed { channel: &channel, cursor: &start_cursor, reset: opened.reset, id: id.as_ref() };
        self.feed(text(&subscribed)).await;
        self.state.hub.metrics().delivered(Transport::WebSocket, opened.messages.len() as u64);
        for message in opened.messages {
            self.feed_wire(&message).await;
        }
        // Everything was queued on the socket; the caller flushes.
        Ok(None)
    }

    /// `presence`: the members of a subscribed channel of a presence namespace; their joins and leaves follow.
    async fn presence(&mut self, channel: ChannelName, id: Option<RequestId>) -> Result<Option<WsMessage>, FrameError> {
        if !self.state.hub.has_presence(&channel) {
            let message = format!("{channel} has no presence: its namespace does not set `presence = true`");
            return Err(FrameError { id, code: "presence_disabled", message });
        }
        let members = self.subscription.members(&channel).await;
        let members =
            members.map_err(|err| FrameError { id: id.clone(), code: err.code(), message: err.to_string() })?;
        Ok(Some(text(&ServerFrame::Presence { channel: &channel, members: &members.texts(), id: id.as_ref() })))
    }

    async fn publish(
        &mut self,
        channel: ChannelName,
        event: EventName,
        data: Vec<u8>,
        id: Option<RequestId>,
    ) -> Result<Option<WsMessage>, FrameError> {
        let allowed = self.access.claims(&self.state).and_then(|c| self.state.auth.client_publish(c, &channel));
        allowed.map_err(|err| refused(id.clone(), err))?;
        let (state, access) = (&self.state, &mut self.access);
        if let Err(err) = state.limits.publish_on_connection(&mut access.bucket, access.admission.ip()) {
            return Err(FrameError { id, code: err.code(), message: err.to_string() });
        }
        let message = match self.state.hub.publish(channel, event, Bytes::from(data)).await {
            Ok(message) => message,
            Err(err) => return Err(FrameError { id, code: "engine_unavailable", message: err.to_string() }),
        };
        let m = &message.message;
        if self.state.webhooks.wants(EventKind::ClientEvent, &m.channel) {
            let mut event = LifecycleEvent::new(EventKind::ClientEvent, m.channel.clone(), m.time_ms);
            event.event = Some(m.event.as_str().to_owned());
            event.data = Some(String::from_utf8_lossy(&m.data).into_owned());
            event.user_id = self.access.claims.as_ref().and_then(|c| c.sub.clone());
            self.state.webhooks.emit(event);
        }
        Ok(Some(text(&ServerFrame::Published { message: m, id: id.as_ref() })))
    }
}

/// A frame over `max_frame_bytes` closes with 1009.
fn too_big(err: WsError) -> Option<End> {
    matches!(err, WsError::Capacity(_)).then_some(End::Close(CLOSE_TOO_BIG, "frame too large"))
}

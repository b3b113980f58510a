//! One Pusher connection, from `pusher:connection_established` to its close, over frames in and frames out.
//!
//! The session knows nothing of sockets: it reads [`Inbound`] from a `Stream` and writes [`Outbound`] to a
//! `Sink`, so the WebSocket and the HTTP fallbacks drive the same session, and a test can drive it with channels.
//! One task selects over shutdown, the slow-consumer signal, the client's frames, the subscription's live
//! messages, the signed-in user's queue and the activity check, on the server's shared heartbeat clock
//! (`heartbeat.rs`: at most a tick, 100 ms, after its time).
//!
//! - Subscriptions go through the hub's [`Subscription`] (registered before any read, followed by its trackers),
//!   starting now, or, on a cache channel, with the newest retained message (else `pusher:cache_miss`).
//! - Each live message goes out as its shared Pusher frame, except to the socket that sent it (its origin's
//!   `sender`, on whichever node that socket is).
//! - Client events are published through the hub like any message, with the sender in their origin.
//! - After `activity_timeout` without a frame from the client the server pings; without an answer within
//!   `pong_timeout` it closes with 4201.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use herald_proto::{ChannelName, EventName};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apps::{App, AppAdmission};
use super::users::{Control, SignedIn, CONTROL_QUEUE};
use super::wire::names::server_to_user;
use super::wire::{data, signature, ChannelKind, ClientFrame, Close, PusherChannel, ServerFrame, SocketId};
use super::{frame_of, presence_frame_of, Pusher};
use crate::http::AppState;
use crate::hub::{EventKind, Item, LifecycleEvent, Member, Members, Origin, PresenceError, Start, Subscription};
use crate::limits::{Admission, TokenBucket};
use crate::metrics::Transport;
use crate::refusal::Refusal;

/// Live messages sent per wake-up at most, before the session looks at the client again.
const MAX_BATCH: usize = 64;

/// What a session reads from its transport.
#[derive(Debug)]
pub enum Inbound {
    /// A text frame.
    Text(String),
    /// A binary frame: not part of the protocol.
    Binary,
    /// A frame over `max_frame_bytes`: the session closes with 1009.
    TooBig,
}

/// What a session writes to its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A text frame.
    Text(Bytes),
    /// Close with this code and reason; nothing follows.
    Close(u16, &'static str),
}

/// Why a session ended.
enum End {
    /// Close with a protocol code, after a `pusher:error` saying why.
    Close(Close),
    /// Close with a WebSocket code (1009: a frame too large).
    Raw(u16, &'static str),
    /// The client left or its transport failed: nothing to say.
    Gone,
}

/// What a connection joined on one channel.
struct Joined {
    channel: PusherChannel,
    /// The user it presents on a presence channel.
    member: Option<Member>,
}

/// A signed-in user of this connection.
struct User {
    id: String,
    _registration: SignedIn,
}

/// What a connection holds against the server's and the app's limits, given back when it ends.
pub struct Admissions {
    /// Its place under `max_connections` and `max_connections_per_ip`.
    pub server: Admission,
    /// Its place under the app's `max_connections`.
    pub app: AppAdmission,
}

/// One connection.
pub struct Session {
    state: AppState,
    pusher: Arc<Pusher>,
    app: Arc<App>,
    socket_id: SocketId,
    ip: IpAddr,
    subscription: Subscription,
    /// The app's channels this connection joined, with their Herald channels: a list, not a map (a map's first
    /// insert allocates room for four, about 430 bytes of every idle connection; a connection has few channels,
    /// at most `max_subscriptions_per_connection`).
    joined: Vec<(ChannelName, Joined)>,
    user: Option<User>,
    /// What the user registry hands this connection once it signed in, made at the first sign-in: a tokio queue
    /// allocates its first block up front (1.5 KiB), which a connection that never signs in does not need.
    control: Option<(mpsc::Sender<Control>, mpsc::Receiver<Control>)>,
    /// Cancelled when the control queue overflowed.
    overflow: CancellationToken,
    client_events: TokenBucket,
    /// When the client last sent a frame, and whether the server pinged since.
    last_heard: Instant,
    pinged: Option<Instant>,
    _admissions: Admissions,
}

impl Session {
    /// A session of `app` for a client at `ip`, with a new socket id.
    pub fn new(state: AppState, pusher: Arc<Pusher>, app: Arc<App>, ip: IpAddr, admissions: Admissions) -> Self {
        let subscription = state.hub.subscription(Transport::Pusher);
        Self {
            socket_id: pusher.socket_ids.next(),
            client_events: TokenBucket::new(app.limits.client_events_per_second),
            state,
            pusher,
            app,
            ip,
            subscription,
            joined: Vec::new(),
            user: None,
            control: None,
            overflow: CancellationToken::new(),
            last_heard: Instant::now(),
            pinged: None,
            _admissions: admissions,
        }
    }

    /// The connection's socket id.
    pub fn socket_id(&self) -> &SocketId {
        &self.socket_id
    }

    /// Runs the session until it ends: the client left, the server closed it, or shutdown.
    ///
    /// Not an `async fn`: one that takes `mut` arguments keeps each of them twice in its future (the argument and
    /// the mutable binding made of it; the session alone is over 500 bytes); an `async move` block captures them
    /// once.
    #[allow(clippy::manual_async_fn)] // The lint's `async fn` is the double copy above.
    pub fn run<I, O>(mut self, mut inbound: I, mut outbound: O) -> impl Future<Output = ()>
    where
        I: Stream<Item = Inbound> + Unpin,
        O: Sink<Outbound> + Unpin,
    {
        async move {
            let timeout = self.state.hub.config().pusher.activity_timeout.as_secs();
            let hello =
                ServerFrame::ConnectionEstablished { socket_id: self.socket_id.as_str(), activity_timeout: timeout };
            if outbound.send(Outbound::Text(Bytes::from(hello.encode()))).await.is_err() {
                return;
            }
            let end = self.serve(&mut inbound, &mut outbound).await;
            let close = match end {
                End::Close(close) => {
                    let error = ServerFrame::Error { code: Some(close.code()), message: close.reason() };
                    let _ = outbound.feed(Outbound::Text(Bytes::from(error.encode()))).await;
                    Outbound::Close(close.code(), close.reason())
                }
                End::Raw(code, reason) => Outbound::Close(code, reason),
                End::Gone => return,
            };
            // A client that stopped reading may never take the close: do not wait for it forever.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), outbound.send(close)).await;
        }
    }

    /// Serves until the session ends. Shutdown and the slow-consumer signals interrupt any step, a write blocked on
    /// a client that stopped reading included.
    async fn serve<I, O>(&mut self, inbound: &mut I, outbound: &mut O) -> End
    where
        I: Stream<Item = Inbound> + Unpin,
        O: Sink<Outbound> + Unpin,
    {
        let stop = self.state.shutdown.token();
        let stopped = stop.cancelled();
        let slow = self.subscription.slow_signal().cancelled_owned();
        let overflow = self.overflow.clone().cancelled_owned();
        tokio::pin!(stopped, slow, overflow);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return End::Close(Close::Reconnect),
                () = &mut slow => return End::Close(Close::OverCapacity),
                () = &mut overflow => return End::Close(Close::OverCapacity),
                end = self.step(inbound, outbound) => {
                    if let Some(end) = end {
                        return end;
                    }
                }
            }
        }
    }

    /// When the activity timer fires next: a ping after `activity_timeout` of silence, then the close after
    /// `pong_timeout` without an answer.
    fn next_check(&self) -> Instant {
        let settings = &self.state.hub.config().pusher;
        match self.pinged {
            Some(at) => at + settings.pong_timeout,
            None => self.last_heard + settings.activity_timeout,
        }
    }

    /// Waits for one thing to do and does it.
    async fn step<I, O>(&mut self, inbound: &mut I, outbound: &mut O) -> Option<End>
    where
        I: Stream<Item = Inbound> + Unpin,
        O: Sink<Outbound> + Unpin,
    {
        let check = self.next_check();
        tokio::select! {
            frame = inbound.next() => {
                self.last_heard = Instant::now();
                self.pinged = None;
                let end = match frame {
                    // Boxed: answering a request (subscribing, joining a presence, publishing) takes far more state
                    // than waiting does, and an unboxed branch would size every idle connection's task by it.
                    Some(Inbound::Text(text)) => Box::pin(self.request(&text, outbound)).await,
                    Some(Inbound::Binary) => {
                        send(outbound, ServerFrame::Error { code: None, message: "send JSON text frames" }).await
                    }
                    Some(Inbound::TooBig) => {
                        let (ip, max) = (self.ip, self.state.hub.config().max_frame_bytes);
                        self.state.limits.refused(Refusal::FrameSize, || format!("{ip}: a Pusher frame over {max} bytes"));
                        Some(End::Raw(1009, "frame too large"))
                    }
                    None => Some(End::Gone),
                };
                if end.is_none() && outbound.flush().await.is_err() {
                    return Some(End::Gone);
                }
                end
            }
            live = self.subscription.recv() => {
                let complete = self.live(live, outbound).await;
                if outbound.flush().await.is_err() {
                    return Some(End::Gone);
                }
                (!complete).then_some(End::Close(Close::OverCapacity))
            }
            Some(control) = next_control(&mut self.control) => match control {
                Control::Frame(frame) => {
                    if outbound.send(Outbound::Text(frame)).await.is_err() {
                        return Some(End::Gone);
                    }
                    None
                }
                Control::Terminate => Some(End::Close(Close::Unauthorized)),
            },
            () = self.state.heartbeats.at(check) => {
                if self.pinged.is_some() {
                    return Some(End::Close(Close::PongNotReceived));
                }
                self.pinged = Some(Instant::now());
                let end = send(outbound, ServerFrame::Ping).await;
                if end.is_none() && outbound.flush().await.is_err() {
                    return Some(End::Gone);
                }
                end
            }
        }
    }

    /// Writes what a live message (and what was queued with it) turned into; false when a history read it needed
    /// failed, after which the connection ends (Pusher has no resume: the client reconnects and subscribes again).
    async fn live<O: Sink<Outbound> + Unpin>(&mut self, live: crate::hub::Live, outbound: &mut O) -> bool {
        let batch = self.subscription.follow(live, MAX_BATCH).await;
        let mut delivered = 0;
        for item in batch.items {
            let frame = match item {
                Item::Message(message) if message.origin.sender.as_deref() != Some(self.socket_id.as_str()) => {
                    delivered += 1;
                    frame_of(&message)
                }
                Item::Presence(event) => presence_frame_of(&event),
                // Its own message; or a reset, which has no Pusher frame: the protocol cannot say what was lost.
                Item::Message(_) | Item::Reset { .. } => None,
            };
            if let Some(frame) = frame {
                let _ = outbound.feed(Outbound::Text(frame)).await;
            }
        }
        self.state.hub.metrics().delivered(Transport::Pusher, delivered);
        batch.error.is_none()
    }

    /// Answers one client frame. Frames that are refused get a `pusher:error` and the connection stays open.
    async fn request<O: Sink<Outbound> + Unpin>(&mut self, text: &str, outbound: &mut O) -> Option<End> {
        match ClientFrame::parse(text) {
            Ok(ClientFrame::Ping) => send(outbound, ServerFrame::Pong).await,
            Ok(ClientFrame::Pong) => None,
            Ok(ClientFrame::Subscribe { channel, auth, channel_data }) => {
                self.subscribe(&channel, auth.as_deref(), channel_data.as_deref(), outbound).await
            }
            Ok(ClientFrame::Unsubscribe { channel }) => {
                self.unsubscribe(&channel);
                None
            }
            Ok(ClientFrame::Signin { auth, user_data }) => self.sign_in(&auth, &user_data, outbound).await,
            Ok(ClientFrame::ClientEvent { event, channel, data }) => {
                self.client_event(&event, &channel, &data, outbound).await
            }
            Ok(ClientFrame::Other { event }) => {
                let message = format!("the server does not handle {event:?} from clients");
                send(outbound, ServerFrame::Error { code: None, message: &message }).await
            }
            Err(refusal) => send(outbound, ServerFrame::Error { code: None, message: &refusal.0 }).await,
        }
    }

    async fn subscribe<O: Sink<Outbound> + Unpin>(
        &mut self,
        name: &str,
        auth: Option<&str>,
        channel_data: Option<&str>,
        outbound: &mut O,
    ) -> Option<End> {
        if let Some(user) = server_to_user(name) {
            // A signed-in user's own channel: its events come through the user registry, not a Herald channel.
            return match &self.user {
                Some(signed_in) if signed_in.id == user => succeeded(outbound, name, "{}").await,
                _ => refuse(outbound, name, "AuthError", "sign in as this user first", 401).await,
            };
        }
        let channel = match PusherChannel::parse(name) {
            Ok(channel) => channel,
            Err(err) => return refuse(outbound, name, "InvalidChannel", &err.to_string(), 400).await,
        };
        let Ok(herald) = self.app.herald_channel(&channel) else {
            return refuse(outbound, name, "InvalidChannel", "not a channel name", 400).await;
        };
        if self.joined(&herald).is_some() {
            return succeeded(outbound, name, "{}").await;
        }
        let max = self.state.hub.config().max_subscriptions_per_connection;
        if self.joined.len() >= max {
            let ip = self.ip;
            self.state.limits.refused(Refusal::Subscriptions, || format!("{ip}: more than {max} Pusher subscriptions"));
            let error = format!("at most {max} subscriptions per connection");
            return refuse(outbound, name, "LimitReached", &error, 400).await;
        }
        if channel.kind().needs_auth() {
            let presence_data = (channel.kind() == ChannelKind::Presence).then_some(channel_data.unwrap_or_default());
            let text = signature::channel_text(self.socket_id.as_str(), name, presence_data);
            if !signature::check_auth(auth.unwrap_or_default(), &self.app.key, self.app.secret(), &text) {
                let (ip, app) = (self.ip, &self.app.id);
                self.state.limits.refused(Refusal::PusherChannelAuth, || {
                    format!("{ip}: a bad authorization for {name} of app {app}")
                });
                let error = format!("the authorization of {name} does not match the app's signature for this socket");
                return refuse(outbound, name, "AuthError", &error, 401).await;
            }
        }
        let member = match channel.kind() {
            ChannelKind::Presence => match self.member(channel_data) {
                Ok(member) => Some(member),
                Err(error) => return refuse(outbound, name, "InvalidChannelData", &error, 400).await,
            },
            _ => None,
        };
        let start = if channel.is_cache() { Start::Newest(1) } else { Start::Now };
        let opened = match self.subscription.subscribe(&herald, start, 1).await {
            Ok(opened) => opened,
            Err(err) => return refuse(outbound, name, "ServerError", &err.to_string(), 503).await,
        };
        let data = match &member {
            None => "{}".to_string(),
            Some(member) => match self.join(&herald, member).await {
                Ok(members) => presence_data(&members),
                Err(err) => {
                    self.subscription.unsubscribe(&herald);
                    let (kind, status) = match err {
                        PresenceError::Full { .. } => ("LimitReached", 403),
                        PresenceError::InvalidUserId(_) | PresenceError::InvalidUserInfo(_) => {
                            ("InvalidChannelData", 400)
                        }
                        _ => ("ServerError", 503),
                    };
                    return refuse(outbound, name, kind, &err.to_string(), status).await;
                }
            },
        };
        let cache = channel.is_cache();
        if self.joined.is_empty() {
            // Most connections join one channel: room for exactly that one.
            self.joined.reserve_exact(1);
        }
        self.joined.push((herald, Joined { channel, member }));
        if let end @ Some(_) = succeeded(outbound, name, &data).await {
            return end;
        }
        if cache {
            let last = opened.messages.last().filter(|m| m.origin.sender.as_deref() != Some(self.socket_id.as_str()));
            match last.and_then(|m| frame_of(m)) {
                Some(frame) => {
                    self.state.hub.metrics().delivered(Transport::Pusher, 1);
                    return write(outbound, frame).await;
                }
                None => {
                    if let Some((herald, _)) = self.joined.iter().find(|(_, j)| j.channel.as_str() == name) {
                        let now = herald_proto::time::now_millis();
                        self.state.webhooks.emit(LifecycleEvent::new(EventKind::CacheMiss, herald.clone(), now));
                    }
                    return send(outbound, ServerFrame::CacheMiss { channel: name }).await;
                }
            }
        }
        None
    }

    /// The member a presence subscription presents: `channel_data`'s `user_id` (a string, or a number taken as its
    /// digits) and `user_info` (any JSON, `null` when absent).
    fn member(&self, channel_data: Option<&str>) -> Result<Member, String> {
        let data: serde_json::Value = channel_data
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or("a presence subscription's channel_data is a JSON object with a user_id")?;
        let user_id = match data.get("user_id") {
            Some(serde_json::Value::String(id)) => id.clone(),
            Some(serde_json::Value::Number(id)) => id.to_string(),
            _ => return Err("channel_data's user_id is a string (or a number)".into()),
        };
        let info = data.get("user_info").map(|info| info.to_string());
        let max = self.state.hub.config().max_presence_info_bytes;
        crate::hub::member(&user_id, info.as_deref(), max).map_err(|e| e.to_string())
    }

    /// Joins `channel`'s presence as `member` and answers its members: first registers for their changes (so none
    /// falls between the list and what follows), then joins, whose answer is the list; the connection's own join
    /// is never told back to it.
    async fn join(&mut self, channel: &ChannelName, member: &Member) -> Result<Members, PresenceError> {
        self.subscription.members(channel).await?;
        Ok(self.subscription.join(channel, member).await?.members)
    }

    /// What the connection joined on Herald channel `herald`, if it did.
    fn joined(&self, herald: &ChannelName) -> Option<&Joined> {
        self.joined.iter().find(|(joined, _)| joined == herald).map(|(_, joined)| joined)
    }

    fn unsubscribe(&mut self, name: &str) {
        let Ok(channel) = PusherChannel::parse(name) else { return };
        let Ok(herald) = self.app.herald_channel(&channel) else { return };
        if let Some(i) = self.joined.iter().position(|(joined, _)| *joined == herald) {
            self.joined.swap_remove(i);
            self.subscription.unsubscribe(&herald);
        }
    }

    async fn sign_in<O: Sink<Outbound> + Unpin>(
        &mut self,
        auth: &str,
        user_data: &str,
        outbound: &mut O,
    ) -> Option<End> {
        let text = signature::user_text(self.socket_id.as_str(), user_data);
        let user = serde_json::from_str::<serde_json::Value>(user_data)
            .ok()
            .and_then(|data| data.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            .filter(|id| !id.is_empty());
        let signed = signature::check_auth(auth, &self.app.key, self.app.secret(), &text);
        let Some(id) = user.filter(|_| signed) else {
            let (ip, app) = (self.ip, &self.app.id);
            self.state.limits.refused(Refusal::PusherSignin, || format!("{ip}: a bad sign-in to app {app}"));
            return Some(End::Close(Close::Unauthorized));
        };
        let queue = self.control.get_or_insert_with(|| mpsc::channel(CONTROL_QUEUE)).0.clone();
        let registration = self.pusher.users.sign_in(&self.app.id, &id, queue, self.overflow.clone());
        self.user = Some(User { id, _registration: registration });
        send(outbound, ServerFrame::SigninSuccess { user_data }).await
    }

    async fn client_event<O: Sink<Outbound> + Unpin>(
        &mut self,
        event: &str,
        name: &str,
        data: &str,
        outbound: &mut O,
    ) -> Option<End> {
        if !self.app.client_events {
            return error(outbound, "client events are not enabled for this app").await;
        }
        let joined = PusherChannel::parse(name)
            .ok()
            .and_then(|channel| self.app.herald_channel(&channel).ok())
            .and_then(|herald| self.joined(&herald).map(|joined| (herald, joined)));
        let Some((herald, joined)) = joined else {
            return error(outbound, &format!("subscribe to {name} before sending client events on it")).await;
        };
        if !joined.channel.kind().allows_client_events() {
            return error(outbound, "client events are only for private- and presence- channels").await;
        }
        let user_id = joined.member.as_ref().map(|m| m.user_id.clone());
        let max = self.app.limits.max_event_bytes;
        if data.len() > max {
            let ip = self.ip;
            self.state.limits.refused(Refusal::PusherEventSize, || format!("{ip}: a client event over {max} bytes"));
            return error(outbound, &format!("a client event's data may be at most {max} bytes")).await;
        }
        let Ok(event) = EventName::any(event) else {
            return error(outbound, "an event name is 1 to 200 printable ASCII characters").await;
        };
        if self.client_events.take().is_err() {
            let (ip, rate) = (self.ip, self.app.limits.client_events_per_second);
            self.state
                .limits
                .refused(Refusal::PusherClientEventRate, || format!("{ip}: more than {rate} client events a second"));
            return Some(End::Close(Close::ClientEventRate));
        }
        let origin = Origin {
            sender: Some(self.socket_id.shared()),
            user_id: user_id.as_deref().map(Arc::from),
            data_as_value: true,
        };
        let webhook = self.state.webhooks.wants(EventKind::ClientEvent, &herald).then(|| LifecycleEvent {
            user_id,
            event: Some(event.to_string()),
            data: Some(data.to_string()),
            socket_id: Some(self.socket_id.to_string()),
            ..LifecycleEvent::new(EventKind::ClientEvent, herald.clone(), herald_proto::time::now_millis())
        });
        match self.state.hub.publish_from(herald, event, data::from_client(data), origin).await {
            Ok(_) => {
                if let Some(webhook) = webhook {
                    self.state.webhooks.emit(webhook);
                }
                None
            }
            Err(err) => error(outbound, &err.to_string()).await,
        }
    }
}

/// A presence subscription's data: `{"presence":{"ids":[…],"hash":{id:info},"count":N}}`.
fn presence_data(members: &Members) -> String {
    let mut ids = Vec::with_capacity(members.count() * 8);
    let mut hash = Vec::with_capacity(members.count() * 24);
    for (i, member) in members.members.iter().enumerate() {
        if i > 0 {
            ids.push(b',');
            hash.push(b',');
        }
        herald_proto::json::push_string(&mut ids, &member.user_id);
        herald_proto::json::push_string(&mut hash, &member.user_id);
        hash.push(b':');
        hash.extend_from_slice(&member.user_info);
    }
    format!(
        r#"{{"presence":{{"ids":[{}],"hash":{{{}}},"count":{}}}}}"#,
        String::from_utf8_lossy(&ids),
        String::from_utf8_lossy(&hash),
        members.count()
    )
}

/// The next thing the user registry handed the connection; never, before it signed in.
async fn next_control(control: &mut Option<(mpsc::Sender<Control>, mpsc::Receiver<Control>)>) -> Option<Control> {
    match control {
        Some((_, queue)) => queue.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes a frame without flushing; `Some(End::Gone)` when the transport failed.
async fn write<O: Sink<Outbound> + Unpin>(outbound: &mut O, frame: Bytes) -> Option<End> {
    outbound.feed(Outbound::Text(frame)).await.err().map(|_| End::Gone)
}

async fn send<O: Sink<Outbound> + Unpin>(outbound: &mut O, frame: ServerFrame<'_>) -> Option<End> {
    write(outbound, Bytes::from(frame.encode())).await
}

async fn error<O: Sink<Outbound> + Unpin>(outbound: &mut O, message: &str) -> Option<End> {
    send(outbound, ServerFrame::Error { code: None, message }).await
}

async fn succeeded<O: Sink<Outbound> + Unpin>(outbound: &mut O, channel: &str, data: &str) -> Option<End> {
    send(outbound, ServerFrame::SubscriptionSucceeded { channel, data }).await
}

async fn refuse<O: Sink<Outbound> + Unpin>(
    outbound: &mut O,
    channel: &str,
    kind: &str,
    error: &str,
    status: u16,
) -> Option<End> {
    send(outbound, ServerFrame::SubscriptionError { channel, kind, error, status }).await
}

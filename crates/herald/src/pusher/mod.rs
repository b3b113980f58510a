//! The Pusher Channels protocol, so that apps written for Pusher, Laravel Echo or Reverb work against Herald by
//! changing a host name (docs/PUSHER.md).
//!
//! - `wire/`: the protocol's frames, names, data mapping, signatures and close codes, pure;
//! - `apps`: the configured apps, each in a Herald namespace of its own;
//! - `admission`: whether a new connection is served (protocol, app, origin, limits), or its close code;
//! - `session`: one client connection, written over frames in and frames out, so that the WebSocket
//!   (`websocket`) and the HTTP fallbacks (`fallback`: `xhr_streaming`, `xhr_polling`) drive the same session;
//! - `api/`: the HTTP API under `/apps/{id}/…`, its signature checked by `api/signed.rs`;
//! - `users` and `signals`: signed-in users on this node, and the cross-node signals (server-to-user events,
//!   terminated connections) that reach them.
//!
//! A Pusher app uses the hub like every transport: its connections open a `Subscription` (counted as transport
//! `pusher`), the HTTP API publishes through `Hub::publish_from` with the sender's socket id in the message's
//! origin, and each message's Pusher frame is encoded once and shared by every subscriber.

pub mod admission;
pub mod api;
pub mod apps;
pub mod fallback;
pub mod session;
pub mod signals;
pub mod users;
pub mod websocket;
pub mod wire;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::encoded::EncodedMessage;
use crate::http::client_ip::ClientIp;
use crate::http::AppState;
use crate::hub::{EventKind, PresenceChange, PresenceEvent};
use crate::webhooks::{PusherApp, PusherWebhook, Webhooks};
use apps::Apps;
use users::Users;
use wire::socket_id::SocketIds;
use wire::ServerFrame;

/// The Pusher protocol's state on this node.
pub struct Pusher {
    /// The configured apps.
    pub apps: Apps,
    /// This node's socket ids.
    pub socket_ids: SocketIds,
    /// Signed-in users on this node.
    pub users: Arc<Users>,
    /// The sessions of pusher-js's HTTP fallbacks on this node.
    pub http_sessions: fallback::HttpSessions,
}

impl Pusher {
    /// The apps of the configuration.
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            apps: Apps::new(&config.pusher),
            socket_ids: SocketIds::default(),
            users: Arc::new(Users::default()),
            http_sessions: fallback::HttpSessions::default(),
        })
    }

    /// Hands the signals every node sends to this node's connections, until shutdown: run it as a task.
    pub fn follow_signals(
        self: &Arc<Self>,
        state: &AppState,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        signals::follow(state.hub.clone(), self.users.clone(), state.shutdown.clone())
    }
}

/// Registers every app's webhooks with the server's (Pusher's format, signed with the app's key and secret, naming
/// the app's channels without its namespace); a URL or an event name that cannot be used is refused naming its key.
pub fn register_webhooks(config: &Config, webhooks: &Webhooks) -> Result<(), ConfigError> {
    for (i, app) in config.pusher.apps.iter().enumerate() {
        let mut hooks = Vec::with_capacity(app.webhooks.len());
        for (j, hook) in app.webhooks.iter().enumerate() {
            let key = format!("pusher.apps[{i}].webhooks[{j}]");
            let events = hook
                .events
                .iter()
                .map(|name| {
                    EventKind::from_name(name).ok_or_else(|| {
                        ConfigError::invalid(format!("{key}.events"), format!("no webhook event {name:?}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            hooks.push(PusherWebhook { url: hook.url.clone(), events });
        }
        let registered = PusherApp {
            app_id: app.id.clone(),
            key: app.key.clone(),
            secret: app.secret.clone(),
            channel_prefix: format!("{}:", app.namespace()),
            webhooks: hooks,
        };
        webhooks
            .register_pusher_app(registered)
            .map_err(|err| ConfigError::invalid(format!("pusher.apps[{i}].webhooks"), err.to_string()))?;
    }
    Ok(())
}

/// What the protocol's handlers share: the server's state and the protocol's.
#[derive(Clone)]
pub struct PusherState {
    /// The server's state.
    pub app: AppState,
    /// The protocol's.
    pub pusher: Arc<Pusher>,
}

impl FromRef<PusherState> for AppState {
    fn from_ref(state: &PusherState) -> Self {
        state.app.clone()
    }
}

impl FromRequestParts<PusherState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &PusherState) -> Result<Self, Self::Rejection> {
        ClientIp::from_request_parts(parts, &state.app).await
    }
}

/// A stored message's Pusher frame, or `None` for one Pusher clients are not sent: a channel outside an app's
/// namespace, or an event named like the protocol's own (`pusher:…`, `pusher_internal:…`), which a Herald
/// publisher could otherwise use to forge presence events.
fn message_frame(message: &EncodedMessage) -> Option<Bytes> {
    let event = message.message.event.as_str();
    if event.starts_with("pusher:") || event.starts_with("pusher_internal:") {
        return None;
    }
    let (_, channel) = message.message.channel.as_str().split_once(':')?;
    let frame = ServerFrame::Event {
        event,
        channel,
        data: &message.message.data,
        data_as_value: message.origin.data_as_value,
        user_id: message.origin.user_id.as_deref(),
    };
    Some(Bytes::from(frame.encode()))
}

/// The message's frame, encoded once for all its subscribers.
pub fn frame_of(message: &EncodedMessage) -> Option<Bytes> {
    message.pusher_frame(message_frame)
}

/// A presence change's Pusher frame (`pusher_internal:member_added` or `member_removed`), encoded once for all
/// the channel's Pusher followers.
pub fn presence_frame_of(event: &PresenceEvent) -> Option<Bytes> {
    event.pusher_frame(|event| {
        let (_, channel) = event.channel.as_str().split_once(':')?;
        let user_id = event.member.user_id.as_str();
        let frame = match event.change {
            PresenceChange::Join => {
                let user_info = std::str::from_utf8(&event.member.user_info).unwrap_or("null");
                ServerFrame::MemberAdded { channel, user_id, user_info }
            }
            PresenceChange::Leave => ServerFrame::MemberRemoved { channel, user_id },
        };
        Some(Bytes::from(frame.encode()))
    })
}

//! The labels of Herald's series: how a client is connected, who read history to fill a gap, why a request was
//! refused. Each is a closed set, so every labelled series has a fixed number of values.

/// How a client is connected, for per-transport series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket.
    WebSocket,
    /// Server-Sent Events.
    Sse,
    /// A held long poll (short polls are requests, not connections).
    LongPoll,
    /// A short poll.
    Poll,
    /// A Pusher Channels connection (its WebSocket or its HTTP fallbacks).
    Pusher,
}

impl Transport {
    /// Every transport, in the order `/metrics` lists them.
    pub const ALL: [Transport; 5] =
        [Transport::WebSocket, Transport::Sse, Transport::LongPoll, Transport::Poll, Transport::Pusher];

    /// The `transport` label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
            Transport::LongPoll => "long_poll",
            Transport::Poll => "poll",
            Transport::Pusher => "pusher",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// What an accepted connection speaks, for `herald_http_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1 in the clear.
    Http1,
    /// HTTP/1.1 over TLS.
    Http1Tls,
    /// HTTP/2 over TLS.
    Http2Tls,
}

impl Wire {
    /// Every wire, in the order `/metrics` lists them.
    pub const ALL: [Wire; 3] = [Wire::Http1, Wire::Http1Tls, Wire::Http2Tls];

    /// The `protocol` and `tls` labels.
    pub fn labels(self) -> [(&'static str, &'static str); 2] {
        match self {
            Wire::Http1 => [("protocol", "http/1.1"), ("tls", "false")],
            Wire::Http1Tls => [("protocol", "http/1.1"), ("tls", "true")],
            Wire::Http2Tls => [("protocol", "h2"), ("tls", "true")],
        }
    }
}

/// Who read history to fill a gap in a live feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// One subscription's tracker saw a gap and read what it lacked.
    Subscriber,
    /// A node's Pub/Sub link came back and read each followed channel once, for all its subscribers.
    Node,
}

/// What an engine was asked: the `op` label of `herald_engine_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineOp {
    /// Store a message (Redis: the publish script).
    Publish,
    /// Read history (Redis: the read script).
    Read,
}

impl EngineOp {
    /// Both, in the order `/metrics` lists them.
    pub const ALL: [EngineOp; 2] = [EngineOp::Publish, EngineOp::Read];

    /// The `op` label.
    pub fn label(self) -> &'static str {
        match self {
            EngineOp::Publish => "publish",
            EngineOp::Read => "read",
        }
    }
}

/// Why a request was refused: the `reason` label of `herald_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A publish without a key, where keys are configured.
    KeyRequired,
    /// A publish with a key that is not configured.
    InvalidKey,
    /// A private channel asked for without a token.
    TokenRequired,
    /// A token that is malformed, wrongly signed or whose claims do not hold.
    InvalidToken,
    /// A token past its `exp`.
    TokenExpired,
    /// A key or token that does not reach the channel.
    ChannelForbidden,
    /// A WebSocket publish where the namespace does not allow it.
    ClientPublishForbidden,
    /// A WebSocket from an origin that is not allowed.
    OriginForbidden,
    /// A request to the admin API without a configured admin key.
    AdminKey,
    /// A Pusher connection with a key no app has, or an HTTP API request for an id no app has.
    PusherUnknownApp,
    /// A Pusher HTTP API request whose signature, timestamp or body MD5 does not hold.
    PusherSignature,
    /// A Pusher subscription whose channel authorization does not hold.
    PusherChannelAuth,
    /// A Pusher sign-in whose signature or user data does not hold.
    PusherSignin,
    /// `max_connections` reached.
    Connections,
    /// `max_connections_per_ip` reached.
    ConnectionsPerIp,
    /// `publish_rate_per_connection` exceeded.
    PublishRateConnection,
    /// `publish_rate_per_key` exceeded.
    PublishRateKey,
    /// `max_subscriptions_per_connection` reached.
    Subscriptions,
    /// `max_channels_per_request` exceeded.
    ChannelsPerRequest,
    /// A body over `max_body_bytes`.
    BodySize,
    /// A WebSocket frame over `max_frame_bytes`.
    FrameSize,
    /// A Pusher app's `max_connections` reached on this node.
    PusherConnections,
    /// A Pusher connection's client events over `client_events_per_second`.
    PusherClientEventRate,
    /// A Pusher event's data over `max_event_bytes`.
    PusherEventSize,
    /// A Pusher trigger naming more than `max_channels_per_event` channels.
    PusherChannelsPerEvent,
    /// A Pusher batch of more than `max_batch_events` events.
    PusherBatchSize,
}

impl Refusal {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Refusal; 26] = [
        Refusal::KeyRequired,
        Refusal::InvalidKey,
        Refusal::TokenRequired,
        Refusal::InvalidToken,
        Refusal::TokenExpired,
        Refusal::ChannelForbidden,
        Refusal::ClientPublishForbidden,
        Refusal::OriginForbidden,
        Refusal::AdminKey,
        Refusal::PusherUnknownApp,
        Refusal::PusherSignature,
        Refusal::PusherChannelAuth,
        Refusal::PusherSignin,
        Refusal::Connections,
        Refusal::ConnectionsPerIp,
        Refusal::PublishRateConnection,
        Refusal::PublishRateKey,
        Refusal::Subscriptions,
        Refusal::ChannelsPerRequest,
        Refusal::BodySize,
        Refusal::FrameSize,
        Refusal::PusherConnections,
        Refusal::PusherClientEventRate,
        Refusal::PusherEventSize,
        Refusal::PusherChannelsPerEvent,
        Refusal::PusherBatchSize,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::KeyRequired => "key_required",
            Refusal::InvalidKey => "invalid_key",
            Refusal::TokenRequired => "token_required",
            Refusal::InvalidToken => "invalid_token",
            Refusal::TokenExpired => "token_expired",
            Refusal::ChannelForbidden => "channel_forbidden",
            Refusal::ClientPublishForbidden => "client_publish_forbidden",
            Refusal::OriginForbidden => "origin_forbidden",
            Refusal::AdminKey => "invalid_admin_key",
            Refusal::PusherUnknownApp => "pusher_unknown_app",
            Refusal::PusherSignature => "pusher_signature",
            Refusal::PusherChannelAuth => "pusher_channel_auth",
            Refusal::PusherSignin => "pusher_signin",
            Refusal::Connections => "max_connections",
            Refusal::ConnectionsPerIp => "max_connections_per_ip",
            Refusal::PublishRateConnection => "publish_rate_per_connection",
            Refusal::PublishRateKey => "publish_rate_per_key",
            Refusal::Subscriptions => "max_subscriptions_per_connection",
            Refusal::ChannelsPerRequest => "max_channels_per_request",
            Refusal::BodySize => "max_body_bytes",
            Refusal::FrameSize => "max_frame_bytes",
            Refusal::PusherConnections => "pusher_max_connections",
            Refusal::PusherClientEventRate => "pusher_client_events_per_second",
            Refusal::PusherEventSize => "pusher_max_event_bytes",
            Refusal::PusherChannelsPerEvent => "pusher_max_channels_per_event",
            Refusal::PusherBatchSize => "pusher_max_batch_events",
        }
    }

    /// The position in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the reason is a limit (logged as a warning) rather than bad credentials.
    pub(crate) fn is_limit(self) -> bool {
        self.index() >= Refusal::Connections.index()
    }
}

impl CatchUp {
    /// Both readers, in the order `/metrics` lists them.
    pub const ALL: [CatchUp; 2] = [CatchUp::Subscriber, CatchUp::Node];

    /// The `by` label.
    pub fn label(self) -> &'static str {
        match self {
            CatchUp::Subscriber => "subscriber",
            CatchUp::Node => "node",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_place_and_a_distinct_label() {
        for (i, reason) in Refusal::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let mut labels: Vec<&str> = Refusal::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}

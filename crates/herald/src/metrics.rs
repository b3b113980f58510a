//! Counters and gauges, rendered in the Prometheus text format at `/metrics`.
//!
//! Plain atomics, no registry: the hot path pays one relaxed increment, and the set of series is small and
//! fixed, so rendering them by hand keeps the dependency tree lean.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

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
    const ALL: [Transport; 5] =
        [Transport::WebSocket, Transport::Sse, Transport::LongPoll, Transport::Poll, Transport::Pusher];

    fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
            Transport::LongPoll => "long_poll",
            Transport::Poll => "poll",
            Transport::Pusher => "pusher",
        }
    }

    fn index(self) -> usize {
        self as usize
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
    pub const ALL: [Refusal; 25] = [
        Refusal::KeyRequired,
        Refusal::InvalidKey,
        Refusal::TokenRequired,
        Refusal::InvalidToken,
        Refusal::TokenExpired,
        Refusal::ChannelForbidden,
        Refusal::ClientPublishForbidden,
        Refusal::OriginForbidden,
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

#[derive(Default)]
struct PerTransport([AtomicU64; Transport::ALL.len()]);

impl PerTransport {
    fn add(&self, t: Transport, n: u64) {
        self.0[t.index()].fetch_add(n, Relaxed);
    }
    fn get(&self, t: Transport) -> u64 {
        self.0[t.index()].load(Relaxed)
    }
}

/// One webhook endpoint's series, labelled `endpoint="<name>"`.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    endpoint: String,
    /// Events delivered (the receiver answered 2xx).
    pub sent: AtomicU64,
    /// Requests tried again after a failure.
    pub retried: AtomicU64,
    /// Requests that failed: an answer other than 2xx, a timeout, no connection.
    pub failed: AtomicU64,
    /// Events lost because the endpoint fell further behind than `webhook_queue`.
    pub dropped: AtomicU64,
    /// Events waiting for the endpoint now.
    pub queue_depth: AtomicU64,
    /// Milliseconds from events' observation to their delivery, summed, and how many.
    pub latency_ms_sum: AtomicU64,
    /// How many deliveries `latency_ms_sum` adds up.
    pub latency_count: AtomicU64,
}

/// Every series Herald exports.
#[derive(Default)]
pub struct Metrics {
    connections: PerTransport,
    delivered: PerTransport,
    slow_consumer_disconnects: PerTransport,
    published: AtomicU64,
    history_reads: AtomicU64,
    catch_up_reads: [AtomicU64; 2],
    refusals: [AtomicU64; Refusal::ALL.len()],
    webhooks: Mutex<Vec<Arc<WebhookMetrics>>>,
    webhook_events_unlogged: AtomicU64,
}

impl Metrics {
    /// Counts a connection until the guard is dropped.
    pub fn connection(self: &Arc<Self>, transport: Transport) -> ConnectionGuard {
        self.connections.add(transport, 1);
        ConnectionGuard { metrics: self.clone(), transport }
    }

    /// Open connections of `transport` now.
    pub fn connections(&self, transport: Transport) -> u64 {
        self.connections.get(transport)
    }

    /// Counts `n` messages written to clients.
    pub fn delivered(&self, transport: Transport, n: u64) {
        self.delivered.add(transport, n);
    }

    /// Counts a subscriber dropped for being too slow.
    pub fn slow_consumer(&self, transport: Transport) {
        self.slow_consumer_disconnects.add(transport, 1);
    }

    /// Counts a stored message.
    pub fn published(&self) {
        self.published.fetch_add(1, Relaxed);
    }

    /// Counts a read of a channel's history: a subscription's start, a poll, or a catch-up.
    pub fn history_read(&self) {
        self.history_reads.fetch_add(1, Relaxed);
    }

    /// Counts a read that fills a gap in a live feed (after a dropped Pub/Sub link, say).
    pub fn catch_up_read(&self, by: CatchUp) {
        self.catch_up_reads[by as usize].fetch_add(1, Relaxed);
    }

    /// Counts a refused request.
    pub fn refused(&self, reason: Refusal) {
        self.refusals[reason.index()].fetch_add(1, Relaxed);
    }

    /// Requests refused for `reason` so far.
    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.refusals[reason.index()].load(Relaxed)
    }

    /// The series of the webhook endpoint `endpoint` (made on first use).
    pub fn webhook(&self, endpoint: &str) -> Arc<WebhookMetrics> {
        let mut all = self.webhooks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = all.iter().find(|m| m.endpoint == endpoint) {
            return found.clone();
        }
        let made = Arc::new(WebhookMetrics { endpoint: endpoint.to_owned(), ..WebhookMetrics::default() });
        all.push(made.clone());
        made
    }

    /// Counts an event a client caused (a publish, a cache miss) that webhooks would have heard of, dropped
    /// because the queue to the log was full.
    pub fn webhook_event_unlogged(&self) {
        self.webhook_events_unlogged.fetch_add(1, Relaxed);
    }

    /// The Prometheus text, with the engine's gauges appended.
    pub fn render(&self, channels: u64, history_messages: u64, history_bytes: u64) -> String {
        let mut out = String::with_capacity(2048);
        let series: [(&str, &str, &str, &PerTransport); 3] = [
            ("herald_connections", "gauge", "Open connections by transport.", &self.connections),
            ("herald_messages_delivered_total", "counter", "Messages written to clients.", &self.delivered),
            (
                "herald_slow_consumer_disconnects_total",
                "counter",
                "Subscribers disconnected because their queue was full.",
                &self.slow_consumer_disconnects,
            ),
        ];
        for (name, kind, help, values) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for t in Transport::ALL {
                let _ = writeln!(out, "{name}{{transport=\"{}\"}} {}", t.label(), values.get(t));
            }
        }
        let scalars = [
            ("herald_messages_published_total", "counter", "Messages stored.", self.published.load(Relaxed)),
            ("herald_history_reads_total", "counter", "History reads.", self.history_reads.load(Relaxed)),
            ("herald_channels", "gauge", "Channels held by the engine.", channels),
            ("herald_history_messages", "gauge", "Messages held in history.", history_messages),
            ("herald_history_bytes", "gauge", "Bytes of messages held in history.", history_bytes),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        let name = "herald_catch_up_reads_total";
        let _ = writeln!(out, "# HELP {name} History reads that filled a gap in a live feed, by who read.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (by, label) in [(CatchUp::Subscriber, "subscriber"), (CatchUp::Node, "node")] {
            let _ = writeln!(out, "{name}{{by=\"{label}\"}} {}", self.catch_up_reads[by as usize].load(Relaxed));
        }
        let name = "herald_refusals_total";
        let _ = writeln!(out, "# HELP {name} Requests refused for their credentials or a limit, by reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for reason in Refusal::ALL {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", reason.label(), self.refusals(reason));
        }
        self.render_webhooks(&mut out);
        out
    }

    fn render_webhooks(&self, out: &mut String) {
        let webhooks = self.webhooks.lock().unwrap_or_else(PoisonError::into_inner);
        type Value = fn(&WebhookMetrics) -> f64;
        let series: [(&str, &str, &str, Value); 7] = [
            ("herald_webhook_events_sent_total", "counter", "Events delivered to the endpoint.", |m| {
                m.sent.load(Relaxed) as f64
            }),
            ("herald_webhook_retries_total", "counter", "Requests tried again after a failure.", |m| {
                m.retried.load(Relaxed) as f64
            }),
            (
                "herald_webhook_failures_total",
                "counter",
                "Requests that failed (not 2xx, timeout, no connection).",
                |m| m.failed.load(Relaxed) as f64,
            ),
            ("herald_webhook_events_dropped_total", "counter", "Events lost past webhook_queue.", |m| {
                m.dropped.load(Relaxed) as f64
            }),
            ("herald_webhook_queue_depth", "gauge", "Events waiting for the endpoint.", |m| {
                m.queue_depth.load(Relaxed) as f64
            }),
            ("herald_webhook_latency_seconds_sum", "counter", "Seconds from events to their delivery, summed.", |m| {
                m.latency_ms_sum.load(Relaxed) as f64 / 1000.0
            }),
            ("herald_webhook_latency_seconds_count", "counter", "Deliveries the latency sum adds up.", |m| {
                m.latency_count.load(Relaxed) as f64
            }),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for m in webhooks.iter() {
                let _ = writeln!(out, "{name}{{endpoint=\"{}\"}} {}", m.endpoint, value(m));
            }
        }
        let name = "herald_webhook_events_unlogged_total";
        let _ = writeln!(
            out,
            "# HELP {name} Client events and cache misses dropped before the webhook log: its queue was full."
        );
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", self.webhook_events_unlogged.load(Relaxed));
    }
}

/// Decrements a connection gauge when dropped.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections.0[self.transport.index()].fetch_sub(1, Relaxed);
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

//! Every series Herald exports, rendered at `/metrics` in the Prometheus text format (0.0.4) by
//! prometheus-client, the Prometheus project's own Rust crate.
//!
//! The hot path stays cheap: a counter or gauge is one relaxed atomic add (prometheus-client's `Counter` and
//! `Gauge`), a labelled series is picked from a fixed array (`labelled.rs`), never looked up in a map, and a
//! histogram observation is one short uncontended lock. Series labelled by something open-ended are bounded:
//! namespaces are the configured ones plus `(default)`, and channels appear only in the admin page's busiest
//! channels (`busiest.rs`, a fixed number of slots), never as a label. Why prometheus-client and not `metrics` with
//! its Prometheus exporter: the exporter keeps every histogram sample until the next scrape (650 MB after 40
//! million observations in a measurement) and records one in 75–160 ns against 21–32 ns here, and its recorder is
//! global to the process where each server here has its own registry.

mod busiest;
mod labelled;
mod labels;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use herald_proto::ChannelName;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use busiest::{Busiest, TRACKED as BUSIEST_TRACKED, WINDOW as BUSIEST_WINDOW};
use labelled::Labelled;
pub use labels::{CatchUp, EngineOp, Refusal, Transport, Wire};
pub use webhooks::WebhookMetrics;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The `namespace` label of channels whose namespace is not configured (and of channels without one). A configured
/// namespace cannot be called this: parentheses are not allowed in a namespace name.
pub const DEFAULT_NAMESPACE_LABEL: &str = "(default)";

/// Publish handling, request to `201`: microseconds in memory, a Redis round trip otherwise.
const PUBLISH_BUCKETS: [f64; 15] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// One message into every local queue: from one subscriber to tens of thousands.
const FANOUT_BUCKETS: [f64; 13] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];
/// Stored (or received from Redis) to written to the socket: sub-millisecond when idle, seconds for a client that
/// is falling behind.
const LAG_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// One engine call: microseconds in memory, a Redis round trip (2 s at most, the command timeout) otherwise.
const ENGINE_BUCKETS: [f64; 16] =
    [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Messages one history read returned.
const READ_SIZE_BUCKETS: [f64; 8] = [0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0];

/// The configured namespaces, by name, for the `namespace` label: index 0 is [`DEFAULT_NAMESPACE_LABEL`].
#[derive(Debug, Default)]
struct Namespaces {
    index: HashMap<String, usize>,
}

impl Namespaces {
    fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> (Self, Vec<String>) {
        let mut names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        names.sort_unstable();
        names.dedup();
        let index = names.iter().enumerate().map(|(i, name)| (name.clone(), i + 1)).collect();
        names.insert(0, DEFAULT_NAMESPACE_LABEL.to_string());
        (Self { index }, names)
    }

    fn of(&self, channel: &ChannelName) -> usize {
        channel.namespace().and_then(|ns| self.index.get(ns)).copied().unwrap_or(0)
    }
}

/// Per-namespace series.
#[derive(Debug)]
struct PerNamespace {
    published: Labelled<Counter>,
    queued: Labelled<Counter>,
    subscriptions: Labelled<Gauge>,
}

/// Every series Herald exports, and the busiest channels.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Labelled<Gauge>,
    delivered: Labelled<Counter>,
    slow_consumer_disconnects: Labelled<Counter>,
    direct_writes: Labelled<Counter>,
    fanout_waits: Counter,
    fanout_dropped: Counter,
    published: Counter,
    history_reads: Counter,
    catch_up_reads: Labelled<Counter>,
    replication_shortfalls: Counter,
    shard_changes: Counter,
    cluster_shards: Gauge,
    cluster_shards_reachable: Gauge,
    cluster_failovers: Counter,
    refusals: Labelled<Counter>,
    channels: Gauge,
    history_messages: Gauge,
    history_bytes: Gauge,
    publish_seconds: Histogram,
    fanout_seconds: Histogram,
    delivery_lag: Labelled<Histogram>,
    engine_seconds: Labelled<Histogram>,
    history_read_messages: Histogram,
    namespaces: Namespaces,
    per_namespace: PerNamespace,
    busiest: Busiest,
    /// Open client connections by wire (one gauge per [`Wire`], in order), shared with the family registered.
    http_connections: Vec<Gauge>,
    tls_handshake_failures: Counter,
    webhooks: webhooks::Webhooks,
}

impl Default for Metrics {
    /// Metrics of a server without configured namespaces.
    fn default() -> Self {
        Self::new(std::iter::empty())
    }
}

fn labels<T: Copy>(all: &[T], label: impl Fn(T) -> &'static str) -> Vec<String> {
    all.iter().map(|t| label(*t).to_string()).collect()
}

impl Metrics {
    /// Every series, with one `namespace` label value per configured namespace (and `(default)`).
    pub fn new<'a>(namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        let transports = || labels(&Transport::ALL, Transport::label);
        let per_transport = |key| Labelled::new(key, transports(), Counter::default);
        let histogram = |buckets: &[f64]| Histogram::new(buckets.iter().copied());
        let (namespaces, names) = Namespaces::new(namespaces);
        let per_namespace = PerNamespace {
            published: Labelled::new("namespace", names.clone(), Counter::default),
            queued: Labelled::new("namespace", names.clone(), Counter::default),
            subscriptions: Labelled::new("namespace", names, Gauge::default),
        };
        let mut metrics = Self {
            registry: Registry::default(),
            connections: Labelled::new("transport", transports(), Gauge::default),
            delivered: per_transport("transport"),
            slow_consumer_disconnects: per_transport("transport"),
            direct_writes: per_transport("transport"),
            fanout_waits: Counter::default(),
            fanout_dropped: Counter::default(),
            published: Counter::default(),
            history_reads: Counter::default(),
            catch_up_reads: Labelled::new("by", labels(&CatchUp::ALL, CatchUp::label), Counter::default),
            replication_shortfalls: Counter::default(),
            shard_changes: Counter::default(),
            cluster_shards: Gauge::default(),
            cluster_shards_reachable: Gauge::default(),
            cluster_failovers: Counter::default(),
            refusals: Labelled::new("reason", labels(&Refusal::ALL, Refusal::label), Counter::default),
            channels: Gauge::default(),
            history_messages: Gauge::default(),
            history_bytes: Gauge::default(),
            publish_seconds: histogram(&PUBLISH_BUCKETS),
            fanout_seconds: histogram(&FANOUT_BUCKETS),
            delivery_lag: Labelled::new("transport", transports(), || histogram(&LAG_BUCKETS)),
            engine_seconds: Labelled::new("op", labels(&EngineOp::ALL, EngineOp::label), || histogram(&ENGINE_BUCKETS)),
            history_read_messages: histogram(&READ_SIZE_BUCKETS),
            namespaces,
            per_namespace,
            busiest: Busiest::default(),
            http_connections: Vec::new(),
            tls_handshake_failures: Counter::default(),
            webhooks: webhooks::Webhooks::default(),
        };
        metrics.register();
        metrics
    }

    /// Names every series (counters without `_total`: the encoder adds it).
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register("herald_connections", "Open connections by transport", self.connections.clone());
        r.register("herald_messages_published", "Messages stored", self.published.clone());
        r.register("herald_messages_delivered", "Messages written to clients", self.delivered.clone());
        r.register(
            "herald_slow_consumer_disconnects",
            "Subscribers disconnected because their queue was full",
            self.slow_consumer_disconnects.clone(),
        );
        r.register(
            "herald_direct_writes",
            "Messages the fan-out wrote straight into a subscriber's socket (direct_writes), by transport",
            self.direct_writes.clone(),
        );
        r.register(
            "herald_fanout_waits",
            "Publishes that waited for room in the fan-out worker's queue (direct_writes)",
            self.fanout_waits.clone(),
        );
        r.register(
            "herald_fanout_dropped",
            "Messages of other nodes or changes of members dropped for a fan-out worker's full queue (direct_writes)",
            self.fanout_dropped.clone(),
        );
        r.register("herald_history_reads", "History reads", self.history_reads.clone());
        r.register(
            "herald_catch_up_reads",
            "History reads that filled a gap in a live feed, by who read",
            self.catch_up_reads.clone(),
        );
        r.register(
            "herald_redis_replication_shortfalls",
            "Publishes answered 503 because fewer than redis_wait_replicas replicas acknowledged them in time",
            self.replication_shortfalls.clone(),
        );
        r.register(
            "herald_redis_shard_changes",
            "Redis Cluster: links to a shard lost, or watched slots moved away, as seen by sharded Pub/Sub",
            self.shard_changes.clone(),
        );
        r.register(
            "herald_redis_cluster_shards",
            "Redis Cluster: primaries owning slots, as the cluster last reported them",
            self.cluster_shards.clone(),
        );
        r.register(
            "herald_redis_cluster_shards_reachable",
            "Redis Cluster: primaries owning slots that the cluster does not flag as failing",
            self.cluster_shards_reachable.clone(),
        );
        r.register(
            "herald_redis_cluster_failovers",
            "Redis Cluster: primaries that stopped owning slots (a failover or a resharding) since the node started",
            self.cluster_failovers.clone(),
        );
        r.register(
            "herald_refusals",
            "Requests refused for their credentials or a limit, by reason",
            self.refusals.clone(),
        );
        r.register("herald_channels", "Channels held by the engine", self.channels.clone());
        r.register("herald_history_messages", "Messages held in history", self.history_messages.clone());
        r.register("herald_history_bytes", "Bytes of messages held in history", self.history_bytes.clone());
        r.register(
            "herald_publish_seconds",
            "Time from a publish request to its 201 answer",
            self.publish_seconds.clone(),
        );
        r.register(
            "herald_fanout_seconds",
            "Time to hand one message to every local subscriber's queue",
            self.fanout_seconds.clone(),
        );
        r.register(
            "herald_delivery_lag_seconds",
            "Time from a message stored (or received from Redis) to its frame written to a client, by transport",
            self.delivery_lag.clone(),
        );
        r.register(
            "herald_engine_seconds",
            "Time of one engine call: storing a message or reading history",
            self.engine_seconds.clone(),
        );
        r.register(
            "herald_history_read_messages",
            "Messages returned by one history read",
            self.history_read_messages.clone(),
        );
        let ns = &self.per_namespace;
        r.register(
            "herald_namespace_messages_published",
            "Messages stored through this node, by namespace",
            ns.published.clone(),
        );
        r.register(
            "herald_namespace_messages_queued",
            "Messages handed to local subscribers' queues, by namespace",
            ns.queued.clone(),
        );
        r.register(
            "herald_namespace_subscriptions",
            "Channel subscriptions of open connections, by namespace",
            ns.subscriptions.clone(),
        );
        // Two labels per series, so a family; its three gauges are made here, never looked up on the way.
        let wires = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        self.http_connections = Wire::ALL.iter().map(|w| wires.get_or_create(&w.labels()).clone()).collect();
        r.register(
            "herald_http_connections",
            "Open client connections, by protocol (one HTTP/2 connection carries many streams)",
            wires,
        );
        r.register(
            "herald_tls_handshake_failures",
            "TLS handshakes that failed or did not finish in time",
            self.tls_handshake_failures.clone(),
        );
    }

    /// Counts a connection until the guard is dropped.
    pub fn connection(self: &Arc<Self>, transport: Transport) -> ConnectionGuard {
        self.connections.get(transport.index()).inc();
        ConnectionGuard { metrics: self.clone(), transport }
    }

    /// Counts an accepted connection, by what it speaks, until the guard is dropped.
    pub fn http_connection(self: Arc<Self>, wire: Wire) -> HttpConnectionGuard {
        self.http_connections[wire as usize].inc();
        HttpConnectionGuard { metrics: self, wire }
    }

    /// Counts a TLS handshake that failed or timed out.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// Open connections of `transport` now.
    pub fn connections(&self, transport: Transport) -> u64 {
        self.connections.get(transport.index()).get().max(0) as u64
    }

    /// Counts `n` messages written to clients.
    pub fn delivered(&self, transport: Transport, n: u64) {
        self.delivered.get(transport.index()).inc_by(n);
    }

    /// Messages written to clients of `transport` so far.
    pub fn delivered_total(&self, transport: Transport) -> u64 {
        self.delivered.get(transport.index()).get()
    }

    /// Counts a subscriber dropped for being too slow.
    pub fn slow_consumer(&self, transport: Transport) {
        self.slow_consumer_disconnects.get(transport.index()).inc();
    }

    /// Counts `n` messages the fan-out wrote to sockets of `transport` itself (also counted as delivered), and
    /// times the lag of the message they were copies of: the first such message, then one in [`LAG_SAMPLE`], as
    /// a connection does with its own writes.
    pub fn written_by_fanout(&self, transport: Transport, n: u64, stored_at: Instant) {
        self.delivered.get(transport.index()).inc_by(n);
        let before = self.direct_writes.get(transport.index()).inc_by(n);
        if before == 0 || before / u64::from(LAG_SAMPLE) != (before + n) / u64::from(LAG_SAMPLE) {
            let lag = Instant::now().saturating_duration_since(stored_at);
            self.delivery_lag.get(transport.index()).observe(lag.as_secs_f64());
        }
    }

    /// Messages the fan-out wrote to sockets of `transport` so far.
    pub fn direct_writes(&self, transport: Transport) -> u64 {
        self.direct_writes.get(transport.index()).get()
    }

    /// Counts a publish that waited for room in the fan-out worker's queue.
    pub fn fanout_waited(&self) {
        self.fanout_waits.inc();
    }

    /// Counts a hand-off dropped for a fan-out worker's full queue.
    pub fn fanout_dropped(&self) {
        self.fanout_dropped.inc();
    }

    /// Subscribers of `transport` dropped for being too slow so far.
    pub fn slow_consumers(&self, transport: Transport) -> u64 {
        self.slow_consumer_disconnects.get(transport.index()).get()
    }

    /// Counts a stored message.
    pub fn published(&self) {
        self.published.inc();
    }

    /// Counts a message stored on `channel` through this node, in all and for its namespace.
    pub fn published_on(&self, channel: &ChannelName) {
        self.published.inc();
        self.per_namespace.published.get(self.namespaces.of(channel)).inc();
    }

    /// Messages stored through this node so far.
    pub fn published_total(&self) -> u64 {
        self.published.get()
    }

    /// Counts a read of a channel's history: a subscription's start, a poll, or a catch-up.
    pub fn history_read(&self) {
        self.history_reads.inc();
    }

    /// Counts a read that fills a gap in a live feed (after a dropped Pub/Sub link, say).
    pub fn catch_up_read(&self, by: CatchUp) {
        self.catch_up_reads.get(by as usize).inc();
    }

    /// Counts a publish whose replication `WAIT` fell short.
    pub fn replication_shortfall(&self) {
        self.replication_shortfalls.inc();
    }

    /// Counts a lost link to a Redis Cluster shard, or a watched slot that moved away.
    pub fn shard_change(&self) {
        self.shard_changes.inc();
    }

    /// Redis Cluster shard changes seen so far.
    pub fn shard_changes(&self) -> u64 {
        self.shard_changes.get()
    }

    /// Records the Redis Cluster's shards: how many own slots, how many are reachable, and primaries gone since
    /// the last look.
    pub fn cluster_shards(&self, known: u64, reachable: u64, gone: u64) {
        self.cluster_shards.set(known as i64);
        self.cluster_shards_reachable.set(reachable as i64);
        self.cluster_failovers.inc_by(gone);
    }

    /// Counts a refused request.
    pub fn refused(&self, reason: Refusal) {
        self.refusals.get(reason.index()).inc();
    }

    /// Requests refused for `reason` so far.
    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.refusals.get(reason.index()).get()
    }

    /// Times a publish request answered `201`, from `started`.
    pub fn publish_answered(&self, started: Instant) {
        self.publish_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// Records a message handed to the local subscribers of `channel`: `queued` of them took it, and the fan-out
    /// is timed from `started`, the instant the message was built (`None`: nobody subscribes here, nothing timed).
    pub fn fanned_out(&self, channel: &ChannelName, queued: u64, started: Option<Instant>) {
        if let Some(started) = started {
            self.fanout_seconds.observe(started.elapsed().as_secs_f64());
        }
        if queued > 0 {
            self.per_namespace.queued.get(self.namespaces.of(channel)).inc_by(queued);
        }
        self.busiest.record(channel);
    }

    /// Times a store that began at `started` and whose message was built at `stored_at` (the memory engine: appended,
    /// before its fan-out; Redis: the publish script answered).
    pub fn engine_stored(&self, started: Instant, stored_at: Instant) {
        let took = stored_at.saturating_duration_since(started);
        self.engine_seconds.get(EngineOp::Publish as usize).observe(took.as_secs_f64());
    }

    /// Times an engine call that began at `started`.
    pub fn engine_call(&self, op: EngineOp, started: Instant) {
        self.engine_seconds.get(op as usize).observe(started.elapsed().as_secs_f64());
    }

    /// Records the size of one history read.
    pub fn history_read_size(&self, messages: usize) {
        self.history_read_messages.observe(messages as f64);
    }

    /// A subscription to `channel` opened.
    pub fn subscribed(&self, channel: &ChannelName) {
        self.per_namespace.subscriptions.get(self.namespaces.of(channel)).inc();
    }

    /// A subscription to `channel` ended.
    pub fn unsubscribed(&self, channel: &ChannelName) {
        self.per_namespace.subscriptions.get(self.namespaces.of(channel)).dec();
    }

    /// Each namespace label with its messages published, messages queued and open subscriptions.
    pub fn namespaces(&self) -> Vec<(String, u64, u64, u64)> {
        let ns = &self.per_namespace;
        ns.published
            .iter()
            .zip(ns.queued.iter())
            .zip(ns.subscriptions.iter())
            .map(|(((name, published), (_, queued)), (_, subscriptions))| {
                (name.to_string(), published.get(), queued.get(), subscriptions.get().max(0) as u64)
            })
            .collect()
    }

    /// The busiest channels of this node.
    pub fn busiest(&self) -> &Busiest {
        &self.busiest
    }

    /// The Prometheus text, with the engine's gauges.
    pub fn render(&self, channels: u64, history_messages: u64, history_bytes: u64) -> String {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.channels.set(gauge(channels));
        self.history_messages.set(gauge(history_messages));
        self.history_bytes.set(gauge(history_bytes));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        self.webhooks.render(&mut out);
        out
    }

    /// The series of the webhook endpoint `endpoint` (made on first use).
    pub fn webhook(&self, endpoint: &str) -> Arc<WebhookMetrics> {
        self.webhooks.endpoint(endpoint)
    }

    /// Counts an event a client caused (a publish, a cache miss) that webhooks would have heard of, dropped
    /// because the queue to the log was full.
    pub fn webhook_event_unlogged(&self) {
        self.webhooks.unlogged();
    }
}

impl Metrics {
    /// Records the delivery lag of one live message stored (or received) at `stored_at` and written now.
    pub fn delivery_lag(&self, transport: Transport, stored_at: Instant) {
        let lag = Instant::now().saturating_duration_since(stored_at);
        self.delivery_lag.get(transport.index()).observe(lag.as_secs_f64());
    }
}

/// One live message in this many is timed per connection, the first always. Timing each one costs a clock
/// reading (50-70 ns on this project's VMs) and a histogram update (20-30 ns) per message per subscriber, a third
/// of the fan-out benchmark's 300 ns per subscriber; one in 16 costs about 6 ns, and still gives tens of thousands
/// of samples a second under load.
pub const LAG_SAMPLE: u32 = 16;

/// Live messages handed to a connection's socket and not yet timed (one in [`LAG_SAMPLE`]): once the socket has
/// written them, [`Lag::written`] records each one's delivery lag. Kept by the connection and reused, so timing
/// costs no allocation, and one clock reading per sampled batch.
#[derive(Debug, Default)]
pub struct Lag {
    stored: Vec<Instant>,
    seen: u32,
}

impl Lag {
    /// A message stored (or received) at `stored_at` was handed to the socket.
    pub fn push(&mut self, stored_at: Instant) {
        if self.seen % LAG_SAMPLE == 0 {
            self.stored.push(stored_at);
        }
        self.seen = self.seen.wrapping_add(1);
    }

    /// Everything pushed since the last call has been written to the socket now.
    pub fn written(&mut self, metrics: &Metrics, transport: Transport) {
        if self.stored.is_empty() {
            return;
        }
        let now = Instant::now();
        let histogram = metrics.delivery_lag.get(transport.index());
        for stored_at in self.stored.drain(..) {
            histogram.observe(now.saturating_duration_since(stored_at).as_secs_f64());
        }
    }
}

/// Decrements `herald_http_connections` when dropped.
#[derive(Debug)]
pub struct HttpConnectionGuard {
    metrics: Arc<Metrics>,
    wire: Wire,
}

impl Drop for HttpConnectionGuard {
    fn drop(&mut self) {
        self.metrics.http_connections[self.wire as usize].dec();
    }
}

/// Decrements a connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections.get(self.transport.index()).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keep_their_names_and_types_and_counters_their_total_suffix() {
        let metrics = Metrics::new(["chat"]);
        metrics.published_on(&ChannelName::new("chat:lobby").unwrap());
        metrics.published_on(&ChannelName::new("orders:1").unwrap());
        let text = metrics.render(2, 3, 4);
        for line in [
            "# TYPE herald_messages_published_total counter",
            "herald_messages_published_total 2",
            "herald_connections{transport=\"ws\"} 0",
            "herald_history_bytes 4",
            "herald_namespace_messages_published_total{namespace=\"chat\"} 1",
            "herald_namespace_messages_published_total{namespace=\"(default)\"} 1",
            "# TYPE herald_delivery_lag_seconds histogram",
            "herald_refusals_total{reason=\"invalid_admin_key\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_connection_times_the_first_written_message_and_one_in_lag_sample_after_it() {
        let metrics = Metrics::default();
        let mut lag = Lag::default();
        for _ in 0..=LAG_SAMPLE {
            lag.push(Instant::now());
        }
        lag.written(&metrics, Transport::Sse);
        lag.written(&metrics, Transport::Sse);
        let text = metrics.render(0, 0, 0);
        assert!(text.lines().any(|l| l == "herald_delivery_lag_seconds_count{transport=\"sse\"} 2"), "{text}");
    }
}

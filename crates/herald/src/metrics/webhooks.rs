//! The webhook endpoints' series, labelled `endpoint="<name>"`: made when an endpoint first delivers (the
//! endpoints are configured, so their number is bounded), and rendered after the registry's series.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// One webhook endpoint's series.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    endpoint: String,
    /// Events delivered (the receiver answered 2xx).
    pub sent: AtomicU64,
    /// Requests tried again after a failure.
    pub retried: AtomicU64,
    /// Requests that failed: an answer other than 2xx, a timeout, no connection.
    pub failed: AtomicU64,
    /// Of the failed requests, those whose TLS handshake failed (an untrusted certificate, another name).
    pub tls_failed: AtomicU64,
    /// Events lost because the endpoint fell further behind than `webhook_queue`.
    pub dropped: AtomicU64,
    /// Events waiting for the endpoint now.
    pub queue_depth: AtomicU64,
    /// Milliseconds from events' observation to their delivery, summed, and how many.
    pub latency_ms_sum: AtomicU64,
    /// How many deliveries `latency_ms_sum` adds up.
    pub latency_count: AtomicU64,
}

/// Every endpoint's series, and the events dropped before the webhook log.
#[derive(Debug, Default)]
pub(super) struct Webhooks {
    endpoints: Mutex<Vec<Arc<WebhookMetrics>>>,
    unlogged: AtomicU64,
}

impl Webhooks {
    /// The series of `endpoint` (made on first use).
    pub(super) fn endpoint(&self, endpoint: &str) -> Arc<WebhookMetrics> {
        let mut all = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = all.iter().find(|m| m.endpoint == endpoint) {
            return found.clone();
        }
        let made = Arc::new(WebhookMetrics { endpoint: endpoint.to_owned(), ..WebhookMetrics::default() });
        all.push(made.clone());
        made
    }

    /// Counts an event dropped because the queue to the webhook log was full.
    pub(super) fn unlogged(&self) {
        self.unlogged.fetch_add(1, Relaxed);
    }

    /// Appends the series in the Prometheus text format.
    pub(super) fn render(&self, out: &mut String) {
        let webhooks = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        type Value = fn(&WebhookMetrics) -> f64;
        let series: [(&str, &str, &str, Value); 8] = [
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
            (
                "herald_webhook_tls_failures_total",
                "counter",
                "Failed requests whose TLS handshake failed (untrusted certificate, wrong name).",
                |m| m.tls_failed.load(Relaxed) as f64,
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
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", self.unlogged.load(Relaxed));
    }
}

//! Delivery: one node of the cluster leads, and sends each endpoint its events, in log order, at least once.
//!
//! Every node runs [`lead`]: it asks the log to make it (or keep it) the leader every third of
//! `presence_node_ttl`, and while it leads it runs one task per endpoint ([`deliver`]). A leader that dies stops
//! renewing; another takes over after the ttl and goes on from each endpoint's position in the log, which moves
//! only after a 2xx: the batch in flight when a leader died is sent again (receivers deduplicate on event ids).
//!
//! An endpoint's task reads up to `webhook_batch` entries after its position, keeps those it hears of, and sends
//! them in one request; a failure (an answer other than 2xx, no answer within `webhook_timeout_secs`, no
//! connection) is retried after a pause that doubles from 1 s to `webhook_max_backoff_secs`, for as long as it
//! takes (a TLS handshake that fails, an untrusted certificate above all, is such a failure, counted on its own
//! too). Meanwhile the log goes on: past `webhook_queue` entries behind, the oldest are trimmed, and the task
//! counts and logs what it lost (the gap in the entries' numbers) when it reads again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::endpoint::Endpoint;
use super::{client, format, Webhooks};
use crate::hub::{Entry, LogId};
use crate::metrics::WebhookMetrics;
use std::sync::atomic::Ordering::Relaxed;

/// The first pause before a failed request is tried again.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The pause after a failed read of the log.
const LOG_PAUSE: Duration = Duration::from_secs(1);
/// At most one warning per endpoint this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A name for this node's claim to lead, random enough to be its own.
fn node_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(herald_proto::time::now_millis());
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Leads delivery whenever this node may, until `stop`.
pub(super) async fn lead(webhooks: Arc<Webhooks>, stop: CancellationToken) {
    let log = webhooks.hub.events();
    let ttl = webhooks.hub.config().presence_node_ttl;
    let node = node_name();
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading: Option<CancellationToken> = None;
    loop {
        let added = tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => false,
            () = webhooks.added.notified() => true,
        };
        let endpoints = webhooks.endpoints();
        if endpoints.is_empty() {
            continue;
        }
        let leads = match log.lead(&node, ttl).await {
            Ok(leads) => leads,
            Err(err) => {
                tracing::warn!(%err, "cannot tell whether this node delivers webhooks; it does not meanwhile");
                false
            }
        };
        match leading.take() {
            Some(tasks) if leads && !added => leading = Some(tasks),
            previous => {
                // Lost the lead, or endpoints were added: the tasks start over from the positions in the log.
                if let Some(tasks) = previous {
                    tasks.cancel();
                }
                if leads {
                    let tasks = stop.child_token();
                    for endpoint in endpoints {
                        tokio::spawn(deliver(webhooks.clone(), endpoint, tasks.clone()));
                    }
                    leading = Some(tasks);
                }
            }
        }
    }
}

/// Logs a warning for an endpoint at most every [`WARN_EVERY`].
struct Warnings(Option<Instant>);

impl Warnings {
    fn warn(&mut self, endpoint: &str, what: impl std::fmt::Display) {
        if self.0.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        self.0 = Some(Instant::now());
        tracing::warn!(endpoint, "webhook: {what}");
    }
}

/// Sends `endpoint` its events until `stop`.
async fn deliver(webhooks: Arc<Webhooks>, endpoint: Arc<Endpoint>, stop: CancellationToken) {
    let hub = &webhooks.hub;
    let log = hub.events();
    let metrics = hub.metrics().webhook(&endpoint.name);
    let batch = hub.config().webhook_batch;
    let mut warnings = Warnings(None);
    let Some(mut at) = start(&webhooks, &endpoint, &stop).await else { return };
    loop {
        let entries = match log.read(at.as_ref(), batch).await {
            Ok(entries) => entries,
            Err(err) => {
                warnings.warn(&endpoint.name, format!("cannot read the log: {err}"));
                if pause(&stop, LOG_PAUSE).await {
                    continue;
                }
                return;
            }
        };
        let Some(last) = entries.last().map(|e| e.id.clone()) else {
            metrics.queue_depth.store(0, Relaxed);
            tokio::select! {
                () = stop.cancelled() => return,
                () = log.changed(at.as_ref()) => continue,
            }
        };
        let expected = at.as_ref().map_or(entries[0].id.n, |a| a.n + 1);
        if entries[0].id.n > expected {
            let lost = entries[0].id.n - expected;
            metrics.dropped.fetch_add(lost, Relaxed);
            warnings.warn(&endpoint.name, format!("{lost} events lost: the endpoint fell behind webhook_queue"));
        }
        let hearing: Vec<&Entry> = entries.iter().filter(|e| endpoint.hears(&e.event)).collect();
        if !hearing.is_empty() && !send(&webhooks, &endpoint, &metrics, &hearing, &stop, &mut warnings).await {
            return;
        }
        // A position that could not be stored is kept here: at worst a batch is sent again by the next leader.
        let _ = log.ack(&endpoint.name, &last).await;
        if let Ok(Some(head)) = log.head().await {
            metrics.queue_depth.store(head.n.saturating_sub(last.n), Relaxed);
        }
        at = Some(last);
    }
}

/// The endpoint's position in the log: where it stopped, or for an endpoint never delivered to, before the oldest
/// entry the log holds (logging starts with the first endpoint, so a new cluster's endpoints miss nothing; an
/// endpoint added to a running one gets what the log still holds, at most `webhook_queue`). `None` when stopped
/// first.
async fn start(webhooks: &Webhooks, endpoint: &Endpoint, stop: &CancellationToken) -> Option<Option<LogId>> {
    let log = webhooks.hub.events();
    loop {
        if let Ok(at) = log.acked(&endpoint.name).await {
            return Some(at);
        }
        if !pause(stop, LOG_PAUSE).await {
            return None;
        }
    }
}

/// Waits `time`; false when stopped meanwhile.
async fn pause(stop: &CancellationToken, time: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(time) => true,
    }
}

/// Sends one batch until the receiver takes it; false when stopped first.
async fn send(
    webhooks: &Webhooks,
    endpoint: &Endpoint,
    metrics: &WebhookMetrics,
    entries: &[&Entry],
    stop: &CancellationToken,
    warnings: &mut Warnings,
) -> bool {
    let config = webhooks.hub.config();
    let mut wait = FIRST_PAUSE;
    loop {
        let now = herald_proto::time::now_millis();
        let body = format::body(&endpoint.format, entries, now);
        let headers = format::signature_headers(&endpoint.format, &body, now / 1000);
        let sent = tokio::select! {
            () = stop.cancelled() => return false,
            sent = client::post(&endpoint.target, &webhooks.trust, &headers, body, config.webhook_timeout) => sent,
        };
        match sent {
            Ok(status) if (200..300).contains(&status) => {
                let done = herald_proto::time::now_millis();
                metrics.sent.fetch_add(entries.len() as u64, Relaxed);
                let latency: u64 = entries.iter().map(|e| done.saturating_sub(e.event.time_ms)).sum();
                metrics.latency_ms_sum.fetch_add(latency, Relaxed);
                metrics.latency_count.fetch_add(entries.len() as u64, Relaxed);
                return true;
            }
            Ok(status) => warnings.warn(&endpoint.name, format!("answered {status}; retrying in {wait:?}")),
            Err(err) => {
                if let client::SendError::Tls { .. } = err {
                    metrics.tls_failed.fetch_add(1, Relaxed);
                }
                warnings.warn(&endpoint.name, format!("{err}; retrying in {wait:?}"));
            }
        }
        metrics.failed.fetch_add(1, Relaxed);
        if !pause(stop, wait).await {
            return false;
        }
        metrics.retried.fetch_add(1, Relaxed);
        wait = (wait * 2).min(config.webhook_max_backoff.max(FIRST_PAUSE));
    }
}

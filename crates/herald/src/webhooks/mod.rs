//! Webhooks: telling a backend that a channel became occupied or was vacated, that a member was added or removed,
//! that a client published, or that a subscription found no cached message.
//!
//! Events come from the cluster's log of lifecycle events (`engine::events`): the engine appends transitions in
//! the step that observes them, once for the whole cluster; [`Webhooks::emit`] appends the others (without ever
//! waiting: a bounded queue, whose overflow is counted). One node at a time delivers (`delivery.rs`): one task per
//! endpoint reads the log from the endpoint's own position, sends batches in log order (so a channel's events
//! arrive in order), retries a failed or slow request with a doubling pause, and moves the position only once the
//! receiver answered 2xx: every event is delivered at least once, and carries an id to deduplicate on. An endpoint
//! further behind than `webhook_queue` events loses the oldest, counted and logged. Nothing here is on the way of
//! a message to a browser.
//!
//! Formats and signatures are `format.rs` (docs/WEBHOOKS.md); endpoints, from the configuration or registered by
//! the Pusher protocol, `endpoint.rs`; the HTTP request, over TLS for an `https://` URL, `client.rs`.

mod client;
mod delivery;
mod endpoint;
pub mod format;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use herald_proto::ChannelName;
use tokio::sync::{mpsc, Notify};

use crate::config::{Config, ConfigError};
use crate::hub::{EventKind, Hub, LifecycleEvent};
use crate::shutdown::Shutdown;
use client::Trust;
use endpoint::Endpoint;

/// Why webhooks could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL cannot be used.
    #[error("webhook URL {0:?}: {1}")]
    Url(String, String),
    /// The app registered its webhooks already.
    #[error("the Pusher app {0} registered its webhooks already")]
    AlreadyRegistered(String),
}

/// A Pusher app's webhooks, as the Pusher protocol registers them (Pusher's body and `X-Pusher-Key` /
/// `X-Pusher-Signature` headers, which the official SDKs' `webhook()` helpers check).
#[derive(Debug, Clone)]
pub struct PusherApp {
    /// The app's id (part of each endpoint's name, so it must be stable across restarts).
    pub app_id: String,
    /// The app key, sent as `X-Pusher-Key`.
    pub key: String,
    /// The app secret, that requests are signed with.
    pub secret: String,
    /// The app's channels are the Herald channels whose names start with this; webhooks name them without it
    /// (empty when the app's channels are named in Herald as in Pusher).
    pub channel_prefix: String,
    /// Its endpoints.
    pub webhooks: Vec<PusherWebhook>,
}

/// One endpoint of a Pusher app.
#[derive(Debug, Clone)]
pub struct PusherWebhook {
    /// `http[s]://host[:port]/path`.
    pub url: String,
    /// The events it hears of; empty: every one.
    pub events: Vec<EventKind>,
}

/// The server's webhooks.
pub struct Webhooks {
    hub: Arc<Hub>,
    endpoints: RwLock<Vec<Arc<Endpoint>>>,
    /// What `https://` receivers' certificates must chain to.
    trust: Trust,
    /// Registered Pusher apps, by id.
    apps: Mutex<Vec<String>>,
    /// Wakes the delivering node when endpoints were added.
    added: Notify,
    /// Events to append to the log; the receiving end is the appender task's.
    queue: mpsc::Sender<LifecycleEvent>,
    queued: Mutex<Option<mpsc::Receiver<LifecycleEvent>>>,
}

impl Webhooks {
    /// The webhooks `hub`'s configuration lists; one that cannot be used is refused naming its key.
    pub fn new(hub: Arc<Hub>) -> Result<Arc<Self>, ConfigError> {
        let config = hub.config().clone();
        let endpoints = Self::configured(&config)?;
        let trust = Trust::new(&config)?;
        if !endpoints.is_empty() {
            hub.events().enable(config.webhook_queue);
        }
        let (queue, queued) = mpsc::channel(config.webhook_queue);
        Ok(Arc::new(Self {
            hub,
            endpoints: RwLock::new(endpoints),
            trust,
            apps: Mutex::default(),
            added: Notify::new(),
            queue,
            queued: Mutex::new(Some(queued)),
        }))
    }

    /// Refuses what [`Webhooks::new`] would refuse of `config`: an endpoint that cannot be used, a
    /// `webhook_ca_file` that cannot be read or holds no certificate.
    pub fn check(config: &Config) -> Result<(), ConfigError> {
        Self::configured(config)?;
        Trust::new(config)?;
        Ok(())
    }

    fn configured(config: &Config) -> Result<Vec<Arc<Endpoint>>, ConfigError> {
        let endpoints = config.webhooks.iter().enumerate();
        endpoints.map(|(i, settings)| Endpoint::configured(i, settings).map(Arc::new)).collect()
    }

    /// Starts delivering (when this node leads) and appending what [`Webhooks::emit`] queues, until shutdown.
    pub fn start(self: &Arc<Self>, shutdown: &Shutdown) {
        let Some(mut queued) = self.queued.lock().unwrap_or_else(PoisonError::into_inner).take() else { return };
        let hub = self.hub.clone();
        let stop = shutdown.token();
        shutdown.tracker().spawn(async move {
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return,
                    event = queued.recv() => event,
                };
                let Some(event) = event else { return };
                if let Err(err) = hub.events().append(event).await {
                    hub.metrics().webhook_event_unlogged();
                    tracing::warn!(%err, "an event for webhooks could not be logged");
                }
            }
        });
        shutdown.tracker().spawn(delivery::lead(self.clone(), shutdown.token()));
    }

    /// Registers a Pusher app's endpoints (once per app).
    pub fn register_pusher_app(&self, app: PusherApp) -> Result<(), WebhookError> {
        let mut apps = self.apps.lock().unwrap_or_else(PoisonError::into_inner);
        if apps.contains(&app.app_id) {
            return Err(WebhookError::AlreadyRegistered(app.app_id));
        }
        let endpoints = app
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, hook)| Endpoint::pusher(&app, i, hook).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        apps.push(app.app_id.clone());
        if !endpoints.is_empty() {
            self.hub.events().enable(self.hub.config().webhook_queue);
            self.endpoints.write().unwrap_or_else(PoisonError::into_inner).extend(endpoints);
            self.added.notify_one();
        }
        Ok(())
    }

    /// Whether any endpoint hears of `kind` on `channel`: ask before building an event for [`Webhooks::emit`].
    pub fn wants(&self, kind: EventKind, channel: &ChannelName) -> bool {
        self.endpoints.read().unwrap_or_else(PoisonError::into_inner).iter().any(|e| e.wants(kind, channel))
    }

    /// Hands an event that is not a transition (`client_event`, `cache_miss`) to the log, without waiting: when
    /// the queue to the log is full, the event is dropped and counted (`herald_webhook_events_unlogged_total`).
    pub fn emit(&self, event: LifecycleEvent) {
        if !self.wants(event.kind, &event.channel) {
            return;
        }
        if self.queue.try_send(event).is_err() {
            self.hub.metrics().webhook_event_unlogged();
        }
    }

    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

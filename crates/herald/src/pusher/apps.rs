//! Apps: the configuration's `[[pusher.apps]]` as typed apps, found by key (connections) or by id (the HTTP
//! API), each isolated in a Herald namespace of its own.
//!
//! An app's channel `C` is Herald's channel `<namespace>:C` (the namespace is the app's id unless configured), so
//! app A's `orders` is not app B's `orders`, Herald's own transports read it as `<namespace>:orders`, and
//! Herald's namespace settings (history size and age) apply to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herald_proto::{ChannelName, NameError};

use super::wire::PusherChannel;
use crate::config::{PusherLimits, PusherSettings};

/// One app.
pub struct App {
    /// Its id (`/apps/{id}/…`).
    pub id: String,
    /// Its public key (`/app/{key}`).
    pub key: String,
    secret: String,
    /// The Herald namespace of its channels.
    pub namespace: String,
    /// Whether clients may connect.
    pub enabled: bool,
    /// Whether clients may send client events.
    pub client_events: bool,
    /// Its limits.
    pub limits: PusherLimits,
    /// Its connections on this node.
    connections: AtomicUsize,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("id", &self.id).field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// An app connection's place under the app's `max_connections`, given back when dropped.
pub struct AppAdmission(Arc<App>);

impl Drop for AppAdmission {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    /// The secret that signs the app's requests and authorizations.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The Herald channel of the app's channel `channel`: `<namespace>:<channel>`. Always valid: both parts are
    /// checked (a namespace of at most 90 bytes without `:`, a Pusher name of at most 164 in Herald's alphabet).
    pub fn herald_channel(&self, channel: &PusherChannel) -> Result<ChannelName, NameError> {
        ChannelName::new(&format!("{}:{}", self.namespace, channel.as_str()))
    }

    /// The app's name of a Herald channel of its namespace.
    pub fn pusher_name<'a>(&self, channel: &'a ChannelName) -> Option<&'a str> {
        channel.as_str().strip_prefix(self.namespace.as_str())?.strip_prefix(':')
    }

    /// Takes a place for one more connection, unless the app has `max_connections` on this node.
    pub fn admit(self: &Arc<Self>) -> Option<AppAdmission> {
        let max = self.limits.max_connections;
        let taken = self.connections.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1));
        taken.ok().map(|_| AppAdmission(self.clone()))
    }

    /// Its connections on this node now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Every app, by key and by id.
#[derive(Default)]
pub struct Apps {
    by_key: HashMap<String, Arc<App>>,
    by_id: HashMap<String, Arc<App>>,
}

impl Apps {
    /// The apps of the configuration (already validated: ids, keys and namespaces are unique).
    pub fn new(settings: &PusherSettings) -> Self {
        let mut apps = Self::default();
        for app in &settings.apps {
            let app = Arc::new(App {
                id: app.id.clone(),
                key: app.key.clone(),
                secret: app.secret.clone(),
                namespace: app.namespace().to_string(),
                enabled: app.enabled,
                client_events: app.client_events,
                limits: app.limits.clone(),
                connections: AtomicUsize::new(0),
            });
            apps.by_key.insert(app.key.clone(), app.clone());
            apps.by_id.insert(app.id.clone(), app);
        }
        apps
    }

    /// The app with key `key`.
    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    /// The app with id `id`.
    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    /// Whether no app is configured.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PusherAppSettings;

    fn apps() -> Apps {
        let app = |id: &str, key: &str, namespace: Option<&str>, max_connections| PusherAppSettings {
            id: id.into(),
            key: key.into(),
            secret: format!("secret-{id}"),
            namespace: namespace.map(Into::into),
            enabled: true,
            client_events: true,
            limits: PusherLimits { max_connections, ..PusherLimits::default() },
            webhooks: Vec::new(),
        };
        Apps::new(&PusherSettings {
            apps: vec![app("1", "key-one", None, 2), app("2", "key-two", Some("shop"), 5)],
            ..PusherSettings::default()
        })
    }

    #[test]
    fn apps_are_found_by_key_and_by_id() {
        let apps = apps();
        assert_eq!(apps.by_key("key-two").unwrap().id, "2");
        assert_eq!(apps.by_id("1").unwrap().key, "key-one");
        assert!(apps.by_key("1").is_none() && apps.by_id("key-one").is_none());
        assert_eq!(apps.by_id("2").unwrap().secret(), "secret-2");
    }

    #[test]
    fn each_app_has_its_own_channels() {
        let apps = apps();
        let orders = PusherChannel::parse("orders").unwrap();
        let (one, two) = (apps.by_id("1").unwrap(), apps.by_id("2").unwrap());
        assert_eq!(one.herald_channel(&orders).unwrap().as_str(), "1:orders");
        assert_eq!(two.herald_channel(&orders).unwrap().as_str(), "shop:orders");
        let herald = ChannelName::new("shop:private-a,b;c").unwrap();
        assert_eq!(two.pusher_name(&herald), Some("private-a,b;c"));
        assert_eq!(one.pusher_name(&herald), None);
        assert_eq!(two.pusher_name(&ChannelName::new("shopping:x").unwrap()), None);
    }

    #[test]
    fn an_app_admits_up_to_its_maximum_and_takes_places_back() {
        let apps = apps();
        let one = apps.by_id("1").unwrap();
        let held = [one.admit().unwrap(), one.admit().unwrap()];
        assert!(one.admit().is_none());
        assert!(apps.by_id("2").unwrap().admit().is_some(), "another app's places are its own");
        drop(held);
        assert_eq!(one.connections(), 0);
        assert!(one.admit().is_some());
    }
}

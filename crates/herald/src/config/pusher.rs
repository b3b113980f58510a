//! `[pusher]`: the apps of the Pusher Channels protocol and their limits, as plain data (the `pusher` module
//! interprets them).
//!
//! Every app takes the limits of `[pusher.limits]` unless its own `limits` table sets them (`sources.rs` lays one
//! over the other, as namespaces inherit `[default_namespace]`), so the environment can set every app's limits
//! with `HERALD_PUSHER_LIMITS_*` and the apps themselves with `HERALD_PUSHER_APPS=id:key:secret,…`.

use std::time::Duration;

use herald_proto::ChannelName;
use serde::{Deserialize, Serialize};

use super::{invalid, secs, ConfigError};

/// The longest namespace of an app, so that `<namespace>:<Pusher channel>` (at most 164 bytes) is a Herald
/// channel name (at most 255).
pub const MAX_APP_NAMESPACE_LEN: usize = 90;

/// The shortest app secret accepted.
pub const MIN_APP_SECRET_LEN: usize = 8;

/// `[pusher]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherSettings {
    /// The apps; with none, the protocol's paths answer as unknown apps.
    pub apps: Vec<PusherAppSettings>,
    /// The `activity_timeout` told to clients: a client pings after this long without a frame, and so does the
    /// server.
    #[serde(rename = "activity_timeout_secs", with = "secs")]
    pub activity_timeout: Duration,
    /// How long the server waits for an answer to its ping before it closes the connection (4201).
    #[serde(rename = "pong_timeout_secs", with = "secs")]
    pub pong_timeout: Duration,
    /// Every app's limits, unless the app sets its own.
    pub limits: PusherLimits,
}

impl Default for PusherSettings {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            limits: PusherLimits::default(),
        }
    }
}

/// An app's limits (`[pusher.limits]`, or an app's `limits` table).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherLimits {
    /// Connections of the app on each node; past it a new one is closed with 4004.
    pub max_connections: usize,
    /// Client events one connection may send a second (as many in a burst); past it the connection is closed
    /// with 4301.
    pub client_events_per_second: u32,
    /// The longest event `data`, in bytes, from the HTTP API or a client.
    pub max_event_bytes: usize,
    /// Channels one trigger may name.
    pub max_channels_per_event: usize,
    /// Events one batch may hold.
    pub max_batch_events: usize,
}

impl Default for PusherLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            client_events_per_second: 10,
            max_event_bytes: 10 * 1024,
            max_channels_per_event: 100,
            max_batch_events: 10,
        }
    }
}

/// `[[pusher.apps]]`: one app, as configured.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PusherAppSettings {
    /// The app id of the HTTP API's paths (`/apps/{id}/…`).
    pub id: String,
    /// The public key clients connect with (`/app/{key}`), and that signatures name.
    pub key: String,
    /// The secret that signs API requests and channel authorizations.
    pub secret: String,
    /// The Herald namespace of the app's channels (its channel `C` is Herald's `<namespace>:C`); the id when
    /// unset.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Whether clients may connect (a disabled app's connections are closed with 4003).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether clients may send client events (`client-…` on private and presence channels).
    #[serde(default = "yes")]
    pub client_events: bool,
    /// The app's limits.
    #[serde(default)]
    pub limits: PusherLimits,
    /// Where the app's webhooks go, in Pusher's format (docs/PUSHER.md, docs/WEBHOOKS.md).
    #[serde(default)]
    pub webhooks: Vec<PusherWebhookSettings>,
}

/// `[[pusher.apps.webhooks]]`: one webhook endpoint of an app, signed with the app's key and secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PusherWebhookSettings {
    /// Where events are POSTed: `http[s]://host[:port]/path`.
    pub url: String,
    /// The events it hears of (`channel_occupied`, `channel_vacated`, `member_added`, `member_removed`,
    /// `client_event`, `cache_miss`); empty: every one.
    #[serde(default)]
    pub events: Vec<String>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for PusherAppSettings {
    // The secret must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PusherAppSettings")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("namespace", &self.namespace)
            .field("enabled", &self.enabled)
            .field("client_events", &self.client_events)
            .field("limits", &self.limits)
            .field("webhooks", &self.webhooks)
            .finish_non_exhaustive()
    }
}

impl PusherAppSettings {
    /// The Herald namespace of the app's channels.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(&self.id)
    }
}

/// Whether `text` is a non-empty run of URL-safe characters (an app id or key sits in a URL path).
fn url_safe(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl PusherSettings {
    /// Checks the apps (ids, keys, secrets, namespaces, each unique) and the limits, naming the file key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in
            [("pusher.activity_timeout_secs", self.activity_timeout), ("pusher.pong_timeout_secs", self.pong_timeout)]
        {
            if value.is_zero() {
                return Err(invalid(key, "must be at least 1"));
            }
            super::validate::check_duration(key.to_string(), value)?;
        }
        self.limits.validate("pusher.limits")?;
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        let mut namespaces = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let at = |field: &str| format!("pusher.apps[{i}].{field}");
            if !url_safe(&app.id) {
                return Err(invalid(at("id"), "an app id is 1–64 of ASCII letters, digits and _ . -"));
            }
            if !url_safe(&app.key) {
                return Err(invalid(at("key"), "an app key is 1–64 of ASCII letters, digits and _ . -"));
            }
            if app.secret.len() < MIN_APP_SECRET_LEN || app.secret.chars().any(char::is_control) {
                return Err(invalid(
                    at("secret"),
                    format!("an app secret is at least {MIN_APP_SECRET_LEN} printable characters"),
                ));
            }
            let namespace = app.namespace();
            if namespace.contains(':')
                || namespace.len() > MAX_APP_NAMESPACE_LEN
                || ChannelName::new(namespace).is_err()
            {
                return Err(invalid(
                    at("namespace"),
                    format!(
                        "an app's namespace is a channel name without ':' of at most {MAX_APP_NAMESPACE_LEN} bytes"
                    ),
                ));
            }
            if !ids.insert(app.id.as_str()) {
                return Err(invalid(at("id"), format!("the app id {:?} is used twice", app.id)));
            }
            if !keys.insert(app.key.as_str()) {
                return Err(invalid(at("key"), "an app key is used twice"));
            }
            if !namespaces.insert(namespace) {
                return Err(invalid(at("namespace"), format!("the namespace {namespace:?} is used by two apps")));
            }
            app.limits.validate(&at("limits"))?;
        }
        Ok(())
    }
}

impl PusherLimits {
    fn validate(&self, table: &str) -> Result<(), ConfigError> {
        let at_least_one = [
            ("max_connections", self.max_connections),
            ("client_events_per_second", self.client_events_per_second as usize),
            ("max_event_bytes", self.max_event_bytes),
            ("max_channels_per_event", self.max_channels_per_event),
            ("max_batch_events", self.max_batch_events),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(invalid(format!("{table}.{key}"), "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::super::Overrides;
    use super::*;

    #[test]
    fn defaults_are_pushers() {
        let p = PusherSettings::default();
        assert_eq!((p.activity_timeout.as_secs(), p.pong_timeout.as_secs()), (120, 30));
        let l = p.limits;
        assert_eq!(
            (
                l.max_connections,
                l.client_events_per_second,
                l.max_event_bytes,
                l.max_channels_per_event,
                l.max_batch_events
            ),
            (10_000, 10, 10_240, 100, 10)
        );
    }

    #[test]
    fn apps_inherit_the_limits_they_do_not_set() {
        let toml = r#"
            [pusher.limits]
            max_event_bytes = 2048
            max_batch_events = 4
            [[pusher.apps]]
            id = "1"
            key = "key-one"
            secret = "secret-one"
            [pusher.apps.limits]
            max_batch_events = 2
            [[pusher.apps]]
            id = "2"
            key = "key-two"
            secret = "secret-two"
            namespace = "shop"
            client_events = false
            [[pusher.apps.webhooks]]
            url = "http://backend.example/pusher"
            events = ["client_event", "member_added"]
        "#;
        let c = load(toml, &[("HERALD_PUSHER_LIMITS_MAX_CONNECTIONS", "7")], Overrides::default()).unwrap();
        let [one, two] = &c.pusher.apps[..] else { panic!("two apps") };
        assert_eq!((one.limits.max_event_bytes, one.limits.max_batch_events, one.limits.max_connections), (2048, 2, 7));
        assert_eq!((two.limits.max_event_bytes, two.limits.max_batch_events), (2048, 4));
        assert_eq!((one.namespace(), two.namespace()), ("1", "shop"));
        assert!(one.enabled && one.client_events && !two.client_events);
        assert_eq!((one.webhooks.len(), two.webhooks[0].events.len()), (0, 2));
        assert!(!format!("{one:?}").contains("secret-one"), "a secret never reaches a log");
    }

    #[test]
    fn apps_come_from_the_environment() {
        let env = [
            ("HERALD_PUSHER_APPS", "1:key-one:sec:ret-one, 2:key-two:secret-two"),
            ("HERALD_PUSHER_ACTIVITY_TIMEOUT_SECS", "30"),
        ];
        let c = load("", &env, Overrides::default()).unwrap();
        let apps: Vec<(&str, &str, &str)> =
            c.pusher.apps.iter().map(|a| (a.id.as_str(), a.key.as_str(), a.secret.as_str())).collect();
        assert_eq!(apps, [("1", "key-one", "sec:ret-one"), ("2", "key-two", "secret-two")]);
        assert_eq!(c.pusher.activity_timeout.as_secs(), 30);
        let bad = load("", &[("HERALD_PUSHER_APPS", "1:key-only")], Overrides::default()).unwrap_err().to_string();
        assert!(bad.starts_with("HERALD_PUSHER_APPS:"), "{bad}");
    }

    #[test]
    fn bad_apps_are_refused_naming_the_key() {
        let app = |fields: &str| format!("[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-1\"\n{fields}");
        let refused = |toml: String| load(&toml, &[], Overrides::default()).unwrap_err().to_string();
        assert!(refused(app("namespace = \"a:b\"")).contains("pusher.apps[0].namespace"));
        assert!(refused(app(&format!("namespace = \"{}\"", "n".repeat(91)))).contains("pusher.apps[0].namespace"));
        assert!(refused("[[pusher.apps]]\nid = \"a/b\"\nkey = \"k\"\nsecret = \"secret-1\"".into())
            .contains("pusher.apps[0].id"));
        assert!(refused("[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"short\"".into())
            .contains("pusher.apps[0].secret"));
        let twice = format!("{}\n[[pusher.apps]]\nid = \"2\"\nkey = \"k\"\nsecret = \"secret-2\"", app(""));
        assert!(refused(twice).contains("pusher.apps[1].key"));
        let same_namespace =
            format!("{}\n[[pusher.apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"secret-2\"\nnamespace = \"1\"", app(""));
        assert!(refused(same_namespace).contains("pusher.apps[1].namespace"));
        assert!(
            refused(app("[pusher.apps.limits]\nmax_event_bytes = 0")).contains("pusher.apps[0].limits.max_event_bytes")
        );
        assert!(refused("[pusher]\npong_timeout_secs = 0".into()).contains("pusher.pong_timeout_secs"));
    }
}

//! The rules a configuration must follow once its sources are laid over each other: ranges, durations, the
//! shape of URLs and origins, namespace names, and the rules that span several keys (who may publish when the
//! server is reachable from other machines, who may subscribe to a private namespace). A broken rule names the
//! file key, whichever source gave the value.

use std::time::Duration;

use herald_proto::ChannelName;

use super::{invalid, Config, ConfigError};

impl Config {
    /// Checks the ranges and the rules that span several keys, naming the file key of a bad value.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_frame_bytes", self.max_frame_bytes),
            ("connection_queue", self.connection_queue),
            ("max_subscriptions_per_connection", self.max_subscriptions_per_connection),
            ("max_channels_per_request", self.max_channels_per_request),
            ("max_history_bytes", self.max_history_bytes),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("publish_rate_per_connection", self.publish_rate_per_connection as usize),
            ("publish_rate_per_key", self.publish_rate_per_key as usize),
            ("max_presence_info_bytes", self.max_presence_info_bytes),
            ("webhook_queue", self.webhook_queue),
            ("webhook_batch", self.webhook_batch),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let durations = [
            ("sse_heartbeat_secs", self.sse_heartbeat),
            ("ws_ping_secs", self.ws_ping),
            ("request_head_timeout_secs", self.request_head_timeout),
            ("presence_node_ttl_secs", self.presence_node_ttl),
            ("webhook_timeout_secs", self.webhook_timeout),
            ("webhook_max_backoff_secs", self.webhook_max_backoff),
        ];
        for (key, value) in durations {
            if value.is_zero() {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let bounded = durations
            .into_iter()
            .chain([("max_wait_secs", self.max_wait), ("shutdown_grace_secs", self.shutdown_grace)])
            .chain([("presence_grace_ms", self.presence_grace)]);
        for (key, value) in bounded {
            check_duration(key.to_string(), value)?;
        }
        if self.engine == super::EngineKind::Disk && self.data_dir.as_deref().map_or(true, |d| d.as_os_str().is_empty())
        {
            return Err(invalid("data_dir", "engine = \"disk\" needs a data_dir (--data-dir, HERALD_DATA_DIR)"));
        }
        if self.fsync_interval.is_zero() || self.fsync_interval > Duration::from_secs(3600) {
            return Err(invalid("fsync_interval_ms", "must be between 1 and 3600000"));
        }
        if self.transports.is_empty() {
            return Err(invalid("transports", "at least one transport must be enabled"));
        }
        if !["redis://", "unix://", "redis+cluster://"].iter().any(|scheme| self.redis_url.starts_with(scheme)) {
            return Err(invalid(
                "redis_url",
                "must start with redis:// (or unix://, or redis+cluster:// for a cluster)",
            ));
        }
        if self
            .redis_url
            .strip_prefix("redis+cluster://")
            .is_some_and(|seeds| seeds.split(['/', '?']).all(str::is_empty))
        {
            return Err(invalid("redis_url", "a redis+cluster:// URL names at least one seed node (host:port,…)"));
        }
        if self.redis_prefix.contains(['{', '}']) {
            return Err(invalid("redis_prefix", "may not contain { or }: Herald uses them as Redis Cluster hash tags"));
        }
        if self.admin_keys.iter().any(|k| k.0.len() < 16 || !k.0.bytes().all(|b| b.is_ascii_graphic())) {
            return Err(invalid("admin_keys", "an admin key is at least 16 printable characters, no spaces"));
        }
        if self.cors_origins.iter().any(|o| o.is_empty()) {
            return Err(invalid("cors_origins", "an origin may not be empty"));
        }
        for name in self.namespaces.keys() {
            if name.is_empty() || ChannelName::new(name).is_err() || name.contains(':') {
                return Err(invalid(format!("namespaces.{name}"), "a namespace name is a channel name without ':'"));
            }
        }
        let namespaces = std::iter::once(("default_namespace".to_string(), &self.default_namespace))
            .chain(self.namespaces.iter().map(|(n, s)| (format!("namespaces.{n}"), s)));
        for (key, ns) in namespaces {
            if ns.history_size == 0 || ns.history_size > 100_000 {
                return Err(invalid(format!("{key}.history_size"), "must be between 1 and 100000"));
            }
            if ns.history_ttl.is_zero() {
                return Err(invalid(format!("{key}.history_ttl_secs"), "must be at least 1"));
            }
            check_duration(format!("{key}.history_ttl_secs"), ns.history_ttl)?;
            if ns.presence_max_members == 0 || ns.presence_max_members > 100_000 {
                return Err(invalid(format!("{key}.presence_max_members"), "must be between 1 and 100000"));
            }
        }
        self.validate_tls()?;
        self.pusher.validate()?;
        if self.webhook_batch > 1000 {
            return Err(invalid("webhook_batch", "must be between 1 and 1000"));
        }
        self.validate_webhooks()?;
        self.validate_security()
    }

    /// Checks the HTTPS keys: one source of certificates, what ACME needs, and what only makes sense with TLS.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            let missing = if self.tls_cert_file.is_some() { "tls_key_file" } else { "tls_cert_file" };
            return Err(invalid(missing, "tls_cert_file and tls_key_file go together"));
        }
        if self.tls_cert_file.is_some() && !self.acme_domains.is_empty() {
            return Err(invalid("acme_domains", "give either certificate files (tls_cert_file) or acme_domains"));
        }
        if self.http2_max_streams == 0 {
            return Err(invalid("http2_max_streams", "must be at least 1"));
        }
        if !self.acme_domains.is_empty() {
            for domain in &self.acme_domains {
                let name_like = domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
                if !name_like || domain.len() > 253 {
                    return Err(invalid(
                        "acme_domains",
                        format!("{domain:?} is not a host name such as herald.example"),
                    ));
                }
            }
            if self.acme_cache_dir.is_none() {
                return Err(invalid(
                    "acme_cache_dir",
                    "acme_domains needs a directory to keep the account and certificates in",
                ));
            }
            if !self.acme_directory.starts_with("https://") {
                return Err(invalid("acme_directory", "must start with https://"));
            }
            match self.acme_challenge.as_str() {
                "tls-alpn-01" => {}
                "http-01" if self.redirect_listen.is_some() => {}
                "http-01" => {
                    return Err(invalid("acme_challenge", "http-01 is answered on redirect_listen: set it (port 80)"))
                }
                other => {
                    return Err(invalid(
                        "acme_challenge",
                        format!("unknown challenge {other:?}; expected tls-alpn-01 or http-01"),
                    ))
                }
            }
        }
        if !self.tls() {
            let tls_only = [
                ("redirect_listen", self.redirect_listen.is_some()),
                ("hsts_max_age_secs", self.hsts_max_age_secs > 0),
                ("acme_email", self.acme_email.is_some()),
                ("acme_cache_dir", self.acme_cache_dir.is_some()),
            ];
            if let Some((key, _)) = tls_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    *key,
                    "only applies to HTTPS: set tls_cert_file and tls_key_file, or acme_domains",
                ));
            }
        }
        if self.redirect_listen == Some(self.listen) {
            return Err(invalid("redirect_listen", "must differ from listen"));
        }
        check_duration("hsts_max_age_secs".to_string(), Duration::from_secs(self.hsts_max_age_secs))
    }

    /// Checks each `[[webhooks]]` entry (its channel patterns are `webhooks`' to read).
    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let key = |field: &str| format!("webhooks[{i}].{field}");
            let rest = hook.url.strip_prefix("http://").or_else(|| hook.url.strip_prefix("https://"));
            let rest = rest.unwrap_or_default();
            if rest.is_empty() || rest.starts_with('/') || hook.url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    key("url"),
                    "an address such as http://backend:8080/hooks or https://backend/hooks",
                ));
            }
            match hook.format.as_str() {
                "herald" if hook.secret.len() < 16 => {
                    return Err(invalid(key("secret"), "at least 16 characters"));
                }
                "pusher" if hook.key.as_deref().unwrap_or_default().is_empty() || hook.secret.is_empty() => {
                    return Err(invalid(key("key"), "the pusher format needs the app's `key` and `secret`"));
                }
                "herald" | "pusher" => {}
                other => return Err(invalid(key("format"), format!("{other:?}: herald or pusher"))),
            }
            const KNOWN: [&str; 6] =
                ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event", "cache_miss"];
            if let Some(unknown) = hook.events.iter().find(|e| !KNOWN.contains(&e.as_str())) {
                return Err(invalid(key("events"), format!("{unknown:?} is not one of {}", KNOWN.join(", "))));
            }
            let name = hook.name.clone().unwrap_or_else(|| format!("webhook-{i}"));
            if name.is_empty()
                || name.len() > 64
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            {
                return Err(invalid(key("name"), "1 to 64 of letters, digits, - _ . :"));
            }
            if !names.insert(name) {
                return Err(invalid(key("name"), "another webhook has this name"));
            }
        }
        Ok(())
    }

    /// Checks the access rules that span several keys (listening beyond loopback, private namespaces, origins).
    fn validate_security(&self) -> Result<(), ConfigError> {
        let ip = self.listen.ip();
        if !ip.is_loopback() && self.publisher_keys.is_empty() && !self.insecure {
            return Err(invalid(
                "listen",
                format!(
                    "{} is reachable from other machines and no publisher key is configured, so anyone could \
                     publish: configure publisher_keys (or HERALD_PUBLISHER_KEYS), or pass --insecure",
                    self.listen
                ),
            ));
        }
        if !self.jwt.has_key() {
            let namespaces = std::iter::once(("default_namespace".to_string(), &self.default_namespace))
                .chain(self.namespaces.iter().map(|(n, s)| (format!("namespaces.{n}"), s)));
            for (key, ns) in namespaces {
                if ns.public == Some(false) {
                    return Err(invalid(
                        format!("{key}.public"),
                        "a private namespace needs a token key (jwt.secret, jwt.public_key_file or jwt.jwks_file); \
                         without one nobody could subscribe",
                    ));
                }
            }
        }
        if self.cors_origins.iter().any(|o| o != "*" && !(o.starts_with("http://") || o.starts_with("https://"))) {
            return Err(invalid("cors_origins", "an origin is * or scheme://host[:port], e.g. https://shop.example"));
        }
        Ok(())
    }
}

/// The longest duration a setting may have: ten years, far beyond any use, and far from where adding it to a
/// clock's reading overflows (a panic, in the timers that do).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub(super) fn check_duration(key: String, value: Duration) -> Result<(), ConfigError> {
    if value > MAX_DURATION {
        return Err(invalid(key, format!("must be at most {} (ten years)", MAX_DURATION.as_secs())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::super::Overrides;
    use super::*;

    #[test]
    fn insecure_setups_are_refused_naming_the_key() {
        let msg = |r: Result<Config, ConfigError>| r.unwrap_err().to_string();
        assert!(msg(load("listen = \"0.0.0.0:7070\"", &[], Overrides::default())).contains("--insecure"));
        assert!(load("listen = \"0.0.0.0:7070\"\ninsecure = true", &[], Overrides::default()).is_ok());
        let keyed = [("HERALD_PUBLISHER_KEYS", "a-key-of-sixteen-chars")];
        assert!(load("listen = \"0.0.0.0:7070\"", &keyed, Overrides::default()).is_ok());
        assert!(msg(load("[namespaces.a]\npublic = false", &[], Overrides::default())).contains("namespaces.a.public"));
        // A weak secret or key and a bad proxy range are refused by `auth` and `limits`, which interpret them.
        assert!(msg(load("cors_origins = [\"shop.example\"]", &[], Overrides::default())).contains("cors_origins"));
    }

    #[test]
    fn a_cluster_url_needs_seeds_and_takes_presence_and_webhooks() {
        let msg = |r: Result<Config, ConfigError>| r.unwrap_err().to_string();
        let redis = |rest: &str| format!("engine = \"redis\"\nredis_url = \"redis+cluster://{rest}\"\n");
        let ok = load(&redis("10.0.0.1:6379,10.0.0.2:6379"), &[], Overrides::default()).unwrap();
        assert_eq!((ok.redis_url.as_str(), ok.redis_wait_replicas), ("redis+cluster://10.0.0.1:6379,10.0.0.2:6379", 0));
        assert!(msg(load(&redis(""), &[], Overrides::default())).contains("at least one seed"));
        assert!(msg(load("redis_url = \"http://x\"", &[], Overrides::default())).contains("redis_url"));
        let presence = redis("a:1") + "[namespaces.room]\npresence = true\npublic = true\n";
        assert!(load(&presence, &[], Overrides::default()).is_ok(), "presence works on a cluster too");
        let waiting = load("", &[("HERALD_REDIS_WAIT_REPLICAS", "1")], Overrides::default()).unwrap();
        assert_eq!(waiting.redis_wait_replicas, 1);
    }

    #[test]
    fn bad_values_name_their_key() {
        let msg = |r: Result<Config, ConfigError>| r.unwrap_err().to_string();
        assert!(msg(load("max_wait_secs = \"x\"", &[], Overrides::default())).contains("max_wait_secs"));
        assert!(msg(load("colour = 1", &[], Overrides::default())).contains("colour"));
        assert!(
            msg(load("", &[("HERALD_MAX_BODY_BYTES", "lots")], Overrides::default())).contains("HERALD_MAX_BODY_BYTES")
        );
        assert!(msg(load("", &[("HERALD_NOPE", "1")], Overrides::default())).contains("HERALD_NOPE"));
        assert!(msg(load("connection_queue = 0", &[], Overrides::default())).contains("connection_queue"));
        assert!(msg(load("[namespaces.chat]\nhistory_size = 0", &[], Overrides::default()))
            .contains("namespaces.chat.history_size"));
        assert!(msg(load("transports = [\"carrier-pigeon\"]", &[], Overrides::default())).contains("transports"));
        assert!(msg(load("listen = \"here\"", &[], Overrides::default())).contains("listen"));
        assert!(msg(load("log_format = \"xml\"", &[], Overrides::default())).contains("log_format"));
        assert!(msg(load("admin_keys = [\"short\"]", &[], Overrides::default())).contains("admin_keys"));
    }

    #[test]
    fn tls_keys_are_refused_when_they_cannot_work_together() {
        let msg = |toml: &str| load(toml, &[], Overrides::default()).unwrap_err().to_string();
        assert!(msg("tls_cert_file = \"c.pem\"").starts_with("tls_key_file:"));
        assert!(msg("tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\nacme_domains = [\"a.example\"]")
            .starts_with("acme_domains:"));
        assert!(msg("acme_domains = [\"a.example\"]").starts_with("acme_cache_dir:"));
        assert!(msg("acme_domains = [\"https://a.example\"]\nacme_cache_dir = \"acme\"").starts_with("acme_domains:"));
        let acme = "acme_domains = [\"a.example\"]\nacme_cache_dir = \"acme\"\n";
        assert!(msg(&format!("{acme}acme_challenge = \"http-01\"")).contains("redirect_listen"));
        assert!(msg(&format!("{acme}acme_challenge = \"dns-01\"")).starts_with("acme_challenge:"));
        assert!(msg(&format!("{acme}acme_directory = \"http://ca.example/dir\"")).starts_with("acme_directory:"));
        assert!(msg("hsts_max_age_secs = 60").starts_with("hsts_max_age_secs:"));
        assert!(msg("redirect_listen = \"127.0.0.1:8080\"").starts_with("redirect_listen:"));
        assert!(msg("http2_max_streams = 0").starts_with("http2_max_streams:"));
        let c = load(
            &format!("{acme}redirect_listen = \"127.0.0.1:8080\"\nacme_challenge = \"http-01\""),
            &[],
            Overrides::default(),
        )
        .unwrap();
        assert!(c.tls() && c.redirect_listen.is_some_and(|a| a.port() == 8080));
        let env =
            [("HERALD_TLS_CERT_FILE", "c.pem"), ("HERALD_TLS_KEY_FILE", "k.pem"), ("HERALD_HSTS_MAX_AGE_SECS", "60")];
        let c = load("", &env, Overrides::default()).unwrap();
        assert_eq!((c.tls(), c.hsts_max_age_secs, c.http2), (true, 60, true));
    }
}

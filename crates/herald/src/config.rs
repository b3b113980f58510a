//! Herald's settings: every limit in one place, with its documented default.
//!
//! Sources, strongest first: command-line flags, `HERALD_*` environment variables, a TOML file, defaults.
//! Each source is applied in turn over a [`Config`] and the result is validated once; a bad value is refused at
//! start with an error that names the key (or the variable) it came from.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_proto::ChannelName;
use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the key).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's explanation, which names the key and line.
        message: String,
    },
    /// A value is out of range or unreadable.
    #[error("{key}: {message}")]
    Invalid {
        /// The key or environment variable.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A value of `key` (a file key or an environment variable) refused because of `message`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), message: message.into() }
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, message)
}

/// A transport that can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// `/v1/ws`.
    WebSocket,
    /// `/v1/sse`.
    Sse,
    /// `/latest`, `/messages` and `/v1/poll`: short and long polling.
    Poll,
}

impl TransportKind {
    fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "ws" | "websocket" => Some(Self::WebSocket),
            "sse" => Some(Self::Sse),
            "poll" => Some(Self::Poll),
            _ => None,
        }
    }
}

/// Where channels' histories live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKind {
    /// In this process's memory (the default): one node, history lost on restart.
    Memory,
    /// In Redis: several nodes share channels, history survives node restarts.
    Redis,
}

impl EngineKind {
    fn parse(key: &str, name: &str) -> Result<Self, ConfigError> {
        match name.trim() {
            "memory" => Ok(Self::Memory),
            "redis" => Ok(Self::Redis),
            other => Err(invalid(key, format!("unknown engine {other:?}; expected memory or redis"))),
        }
    }
}

/// Settings of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSettings {
    /// At most this many messages are kept per channel.
    pub history_size: usize,
    /// Messages older than this are dropped.
    pub history_ttl: Duration,
    /// Whether WebSocket clients may publish.
    pub allow_client_publish: bool,
    /// Whether anyone may subscribe without a token. `None`: public unless a token key is configured.
    pub public: Option<bool>,
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        Self { history_size: 100, history_ttl: Duration::from_secs(3600), allow_client_publish: false, public: None }
    }
}

/// All settings of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest HTTP request body.
    pub max_body_bytes: usize,
    /// Largest WebSocket frame or message from a client.
    pub max_frame_bytes: usize,
    /// Longest `wait` a poll may ask for.
    pub max_wait: Duration,
    /// Messages queued per connection before it counts as a slow consumer.
    pub connection_queue: usize,
    /// Channels one WebSocket may subscribe to.
    pub max_subscriptions_per_connection: usize,
    /// Channels one SSE stream or poll may name.
    pub max_channels_per_request: usize,
    /// Bytes of message history kept by the whole server.
    pub max_history_bytes: usize,
    /// Interval of `: ping` comments on SSE streams.
    pub sse_heartbeat: Duration,
    /// The `retry:` an SSE stream sends.
    pub sse_retry_ms: u64,
    /// Interval of WebSocket pings; two without an answer drop the peer.
    pub ws_ping: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// How long a connection may take to send a whole request head, from its start or its previous response
    /// (so also how long an idle kept-alive connection stays open).
    pub request_head_timeout: Duration,
    /// Origins allowed by CORS; `*` for any.
    pub cors_origins: Vec<String>,
    /// Enabled transports.
    pub transports: Vec<TransportKind>,
    /// Settings of channels whose namespace is not configured.
    pub default_namespace: NamespaceSettings,
    /// Per-namespace settings.
    pub namespaces: HashMap<String, NamespaceSettings>,
    /// The engine.
    pub engine: EngineKind,
    /// Redis, for `engine = "redis"`.
    pub redis_url: String,
    /// Prefix of every Redis key and Pub/Sub channel Herald uses, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// Keys that may publish over HTTP; with none, anyone may (and `serve` stays on loopback).
    pub publisher_keys: Vec<PublisherKeySettings>,
    /// How subscriber tokens are checked; with no key, no token is accepted and namespaces default to public.
    pub jwt: JwtSettings,
    /// Proxies whose `X-Forwarded-For` names the client: addresses or CIDR ranges.
    pub trusted_proxies: Vec<String>,
    /// WebSockets, SSE streams and held long polls, in all.
    pub max_connections: usize,
    /// The same, per client address (IPv6: per /64).
    pub max_connections_per_ip: usize,
    /// Messages a second one WebSocket may publish (and as many in a burst).
    pub publish_rate_per_connection: u32,
    /// Messages a second one publisher key may publish (and as many in a burst).
    pub publish_rate_per_key: u32,
    /// Allows listening beyond loopback without a publisher key.
    pub insecure: bool,
    /// The environment variable that set a setting, by the setting's key, for the modules that interpret the
    /// setting to name it as the user wrote it (see [`Config::source`]).
    pub sources: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            max_body_bytes: 64 * 1024,
            max_frame_bytes: 64 * 1024,
            max_wait: Duration::from_secs(30),
            connection_queue: 1024,
            max_subscriptions_per_connection: 100,
            max_channels_per_request: 100,
            max_history_bytes: 256 * 1024 * 1024,
            sse_heartbeat: Duration::from_secs(15),
            sse_retry_ms: 2000,
            ws_ping: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(10),
            request_head_timeout: Duration::from_secs(60),
            cors_origins: vec!["*".to_string()],
            transports: vec![TransportKind::WebSocket, TransportKind::Sse, TransportKind::Poll],
            default_namespace: NamespaceSettings::default(),
            namespaces: HashMap::new(),
            engine: EngineKind::Memory,
            redis_url: "redis://127.0.0.1:6379".to_string(),
            redis_prefix: "herald:".to_string(),
            publisher_keys: Vec::new(),
            jwt: JwtSettings::default(),
            trusted_proxies: Vec::new(),
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            publish_rate_per_connection: 100,
            publish_rate_per_key: 1_000,
            insecure: false,
            sources: BTreeMap::new(),
        }
    }
}

/// The TOML file's schema: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    max_frame_bytes: Option<usize>,
    max_wait_secs: Option<u64>,
    connection_queue: Option<usize>,
    max_subscriptions_per_connection: Option<usize>,
    max_channels_per_request: Option<usize>,
    max_history_bytes: Option<usize>,
    sse_heartbeat_secs: Option<u64>,
    sse_retry_ms: Option<u64>,
    ws_ping_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    request_head_timeout_secs: Option<u64>,
    cors_origins: Option<Vec<String>>,
    transports: Option<Vec<String>>,
    default_namespace: Option<FileNamespace>,
    #[serde(default)]
    namespaces: HashMap<String, FileNamespace>,
    engine: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    publisher_keys: Option<Vec<PublisherKeySettings>>,
    jwt: Option<FileJwt>,
    trusted_proxies: Option<Vec<String>>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    publish_rate_per_connection: Option<u32>,
    publish_rate_per_key: Option<u32>,
    insecure: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    history_size: Option<usize>,
    history_ttl_secs: Option<u64>,
    allow_client_publish: Option<bool>,
    public: Option<bool>,
}

/// `[[publisher_keys]]`: a key that may publish over HTTP, as configured; `auth` makes it a `PublisherKey`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherKeySettings {
    /// The name logs use for it.
    pub name: String,
    /// The secret itself.
    pub key: String,
    /// Channel patterns it may publish on; empty: every channel.
    #[serde(default)]
    pub channels: Vec<String>,
}

impl std::fmt::Debug for PublisherKeySettings {
    // A secret must never reach a log, even through a debug print of the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherKeySettings")
            .field("name", &self.name)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// `[jwt]`: how subscriber tokens are checked, as configured; `auth` reads the keys from it.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// An HS256 shared secret.
    pub secret: Option<String>,
    /// A PEM public key (RSA: RS256, P-256: ES256).
    pub public_key_file: Option<PathBuf>,
    /// A JSON Web Key Set.
    pub jwks_file: Option<PathBuf>,
    /// `aud` must contain this, when set.
    pub audience: Option<String>,
    /// `iss` must equal this, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self { secret: None, public_key_file: None, jwks_file: None, audience: None, issuer: None, leeway_secs: 5 }
    }
}

impl JwtSettings {
    /// Whether any token key is configured (`auth` refuses a key it cannot load, so this is "tokens can be
    /// checked").
    pub fn has_key(&self) -> bool {
        self.secret.is_some() || self.public_key_file.is_some() || self.jwks_file.is_some()
    }
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// `[jwt]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJwt {
    secret: Option<String>,
    public_key_file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: Option<u64>,
}

impl std::fmt::Debug for FileJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileJwt").field("public_key_file", &self.public_key_file).finish_non_exhaustive()
    }
}

impl FileNamespace {
    fn apply(&self, base: &NamespaceSettings) -> NamespaceSettings {
        NamespaceSettings {
            history_size: self.history_size.unwrap_or(base.history_size),
            history_ttl: self.history_ttl_secs.map_or(base.history_ttl, Duration::from_secs),
            allow_client_publish: self.allow_client_publish.unwrap_or(base.allow_client_publish),
            public: self.public.or(base.public),
        }
    }
}

/// Overrides given on the command line (`None` = not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--transports`, comma-separated.
    pub transports: Option<String>,
    /// `--engine`.
    pub engine: Option<String>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--insecure`.
    pub insecure: bool,
}

impl Config {
    /// Builds the configuration from a file (if any), the environment and flags, and validates it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
            config.apply_toml(&text).map_err(|err| match err {
                ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.display().to_string(), message },
                other => other,
            })?;
            // Key files named in the config file are found next to it.
            let dir = path.parent().unwrap_or(Path::new("."));
            for file in [&mut config.jwt.public_key_file, &mut config.jwt.jwks_file].into_iter().flatten() {
                *file = dir.join(&*file);
            }
        }
        config.apply_env(env)?;
        if let Some(listen) = &flags.listen {
            config.listen = parse_listen("--listen", listen)?;
        }
        if let Some(transports) = &flags.transports {
            config.transports = parse_transports("--transports", transports.split(','))?;
        }
        if let Some(engine) = &flags.engine {
            config.engine = EngineKind::parse("--engine", engine)?;
        }
        set(&mut config.redis_url, flags.redis_url.clone());
        config.insecure |= flags.insecure;
        config.validate()?;
        Ok(config)
    }

    /// Applies a TOML document over this configuration.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: String::new(), message: e.to_string() })?;
        self.apply_toml_security(&file)?;
        if let Some(listen) = file.listen {
            self.listen = parse_listen("listen", &listen)?;
        }
        set(&mut self.max_body_bytes, file.max_body_bytes);
        set(&mut self.max_frame_bytes, file.max_frame_bytes);
        set(&mut self.max_wait, file.max_wait_secs.map(Duration::from_secs));
        set(&mut self.connection_queue, file.connection_queue);
        set(&mut self.max_subscriptions_per_connection, file.max_subscriptions_per_connection);
        set(&mut self.max_channels_per_request, file.max_channels_per_request);
        set(&mut self.max_history_bytes, file.max_history_bytes);
        set(&mut self.sse_heartbeat, file.sse_heartbeat_secs.map(Duration::from_secs));
        set(&mut self.sse_retry_ms, file.sse_retry_ms);
        set(&mut self.ws_ping, file.ws_ping_secs.map(Duration::from_secs));
        set(&mut self.shutdown_grace, file.shutdown_grace_secs.map(Duration::from_secs));
        set(&mut self.request_head_timeout, file.request_head_timeout_secs.map(Duration::from_secs));
        set(&mut self.cors_origins, file.cors_origins);
        if let Some(names) = file.transports {
            self.transports = parse_transports("transports", names.iter().map(String::as_str))?;
        }
        if let Some(engine) = &file.engine {
            self.engine = EngineKind::parse("engine", engine)?;
        }
        set(&mut self.redis_url, file.redis_url);
        set(&mut self.redis_prefix, file.redis_prefix);
        if let Some(default) = &file.default_namespace {
            self.default_namespace = default.apply(&self.default_namespace);
        }
        for (name, ns) in &file.namespaces {
            if name.is_empty() || ChannelName::new(name).is_err() || name.contains(':') {
                return Err(invalid(format!("namespaces.{name}"), "a namespace name is a channel name without ':'"));
            }
            self.namespaces.insert(name.clone(), ns.apply(&self.default_namespace));
        }
        Ok(())
    }

    /// The keys of issue 5: publisher keys, tokens, proxies and connection and rate limits.
    fn apply_toml_security(&mut self, file: &FileConfig) -> Result<(), ConfigError> {
        set(&mut self.publisher_keys, file.publisher_keys.clone());
        if let Some(jwt) = &file.jwt {
            set(&mut self.jwt.secret, jwt.secret.clone().map(Some));
            set(&mut self.jwt.public_key_file, jwt.public_key_file.clone().map(Some));
            set(&mut self.jwt.jwks_file, jwt.jwks_file.clone().map(Some));
            set(&mut self.jwt.audience, jwt.audience.clone().map(Some));
            set(&mut self.jwt.issuer, jwt.issuer.clone().map(Some));
            set(&mut self.jwt.leeway_secs, jwt.leeway_secs);
        }
        set(&mut self.trusted_proxies, file.trusted_proxies.clone());
        set(&mut self.max_connections, file.max_connections);
        set(&mut self.max_connections_per_ip, file.max_connections_per_ip);
        set(&mut self.publish_rate_per_connection, file.publish_rate_per_connection);
        set(&mut self.publish_rate_per_key, file.publish_rate_per_key);
        set(&mut self.insecure, file.insecure);
        Ok(())
    }

    /// The `HERALD_*` variables of issue 5; `false` when `name` is not one of them.
    fn apply_env_security(&mut self, key: &str, name: &str, value: &str) -> Result<bool, ConfigError> {
        match name {
            "PUBLISHER_KEYS" => {
                let secrets = value.split(',').map(str::trim).filter(|k| !k.is_empty());
                self.publisher_keys = secrets
                    .enumerate()
                    .map(|(i, secret)| PublisherKeySettings {
                        name: format!("env-{}", i + 1),
                        key: secret.to_string(),
                        channels: Vec::new(),
                    })
                    .collect();
                self.sources.insert("publisher_keys".into(), key.into());
            }
            "JWT_SECRET" => {
                self.jwt.secret = Some(value.to_string());
                self.sources.insert("jwt.secret".into(), key.into());
            }
            "JWT_PUBLIC_KEY_FILE" => self.jwt.public_key_file = Some(PathBuf::from(value)),
            "JWKS_FILE" => self.jwt.jwks_file = Some(PathBuf::from(value)),
            "JWT_AUDIENCE" => self.jwt.audience = Some(value.to_string()),
            "JWT_ISSUER" => self.jwt.issuer = Some(value.to_string()),
            "JWT_LEEWAY_SECS" => self.jwt.leeway_secs = parse_num(key, value)?,
            "TRUSTED_PROXIES" => {
                self.trusted_proxies =
                    value.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect();
                self.sources.insert("trusted_proxies".into(), key.into());
            }
            "MAX_CONNECTIONS" => self.max_connections = parse_num(key, value)?,
            "MAX_CONNECTIONS_PER_IP" => self.max_connections_per_ip = parse_num(key, value)?,
            "PUBLISH_RATE_PER_CONNECTION" => self.publish_rate_per_connection = parse_num(key, value)?,
            "PUBLISH_RATE_PER_KEY" => self.publish_rate_per_key = parse_num(key, value)?,
            "INSECURE" => self.insecure = matches!(value.trim(), "1" | "true"),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A configuration from a TOML document alone, validated; reads no file (for tests and fuzzing).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        config.apply_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
        for (key, value) in env {
            let Some(name) = key.strip_prefix("HERALD_") else { continue };
            let secs = |v: &str| parse_num::<u64>(&key, v).map(Duration::from_secs);
            if self.apply_env_security(&key, name, &value)? {
                continue;
            }
            match name {
                "LISTEN" => self.listen = parse_listen(&key, &value)?,
                "MAX_BODY_BYTES" => self.max_body_bytes = parse_num(&key, &value)?,
                "MAX_FRAME_BYTES" => self.max_frame_bytes = parse_num(&key, &value)?,
                "MAX_WAIT_SECS" => self.max_wait = secs(&value)?,
                "CONNECTION_QUEUE" => self.connection_queue = parse_num(&key, &value)?,
                "MAX_SUBSCRIPTIONS_PER_CONNECTION" => self.max_subscriptions_per_connection = parse_num(&key, &value)?,
                "MAX_CHANNELS_PER_REQUEST" => self.max_channels_per_request = parse_num(&key, &value)?,
                "MAX_HISTORY_BYTES" => self.max_history_bytes = parse_num(&key, &value)?,
                "SSE_HEARTBEAT_SECS" => self.sse_heartbeat = secs(&value)?,
                "SSE_RETRY_MS" => self.sse_retry_ms = parse_num(&key, &value)?,
                "WS_PING_SECS" => self.ws_ping = secs(&value)?,
                "SHUTDOWN_GRACE_SECS" => self.shutdown_grace = secs(&value)?,
                "REQUEST_HEAD_TIMEOUT_SECS" => self.request_head_timeout = secs(&value)?,
                "CORS_ORIGINS" => self.cors_origins = value.split(',').map(|s| s.trim().to_string()).collect(),
                "TRANSPORTS" => self.transports = parse_transports(&key, value.split(','))?,
                "ENGINE" => self.engine = EngineKind::parse(&key, &value)?,
                "REDIS_URL" => self.redis_url = value,
                "REDIS_PREFIX" => self.redis_prefix = value,
                // Variables of the CLI client and the test suite share the prefix; they are not server settings.
                "URL" | "LOG" | "KEY" | "TOKEN" | "TEST_REDIS_URL" => {}
                _ => return Err(invalid(key.clone(), "unknown setting")),
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
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
        ];
        for (key, value) in durations {
            if value.is_zero() {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let bounded = durations
            .into_iter()
            .chain([("max_wait_secs", self.max_wait), ("shutdown_grace_secs", self.shutdown_grace)]);
        for (key, value) in bounded {
            check_duration(key.to_string(), value)?;
        }
        if self.transports.is_empty() {
            return Err(invalid("transports", "at least one transport must be enabled"));
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("unix://") {
            return Err(invalid("redis_url", "must start with redis:// (or unix://)"));
        }
        if self.redis_prefix.contains(['{', '}']) {
            return Err(invalid("redis_prefix", "may not contain { or }: Herald uses them as Redis Cluster hash tags"));
        }
        if self.cors_origins.iter().any(|o| o.is_empty()) {
            return Err(invalid("cors_origins", "an origin may not be empty"));
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
        }
        self.validate_security()
    }

    /// Checks the rules of issue 5 that span several keys.
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

    /// Whether anyone may subscribe to `channel` without a token: its namespace's `public`, which defaults to
    /// "no token key is configured".
    pub fn is_public(&self, channel: &ChannelName) -> bool {
        self.namespace(channel).public.or(self.default_namespace.public).unwrap_or(!self.jwt.has_key())
    }

    /// The settings of `channel`'s namespace.
    pub fn namespace(&self, channel: &ChannelName) -> &NamespaceSettings {
        channel.namespace().and_then(|ns| self.namespaces.get(ns)).unwrap_or(&self.default_namespace)
    }

    /// The name a setting was given under: the environment variable that set it, or else its `key` (a file key
    /// such as `jwt.secret`), so that a module refusing the value names it where the user wrote it.
    pub fn source<'a>(&'a self, key: &'a str) -> &'a str {
        self.sources.get(key).map_or(key, String::as_str)
    }

    /// Whether `transport` is enabled.
    pub fn enabled(&self, transport: TransportKind) -> bool {
        self.transports.contains(&transport)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| invalid(key, format!("{value:?} is not a whole number")))
}

fn parse_listen(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| invalid(key, format!("{value:?} is not an address such as 127.0.0.1:7070")))
}

fn parse_transports<'a>(key: &str, names: impl Iterator<Item = &'a str>) -> Result<Vec<TransportKind>, ConfigError> {
    let mut out = Vec::new();
    for name in names.filter(|n| !n.trim().is_empty()) {
        let kind = TransportKind::parse(name)
            .ok_or_else(|| invalid(key, format!("unknown transport {name:?}; expected ws, sse or poll")))?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

/// The longest duration a setting may have: ten years, far beyond any use, and far from where adding it to a
/// clock's reading overflows (a panic, in the timers that do).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn check_duration(key: String, value: Duration) -> Result<(), ConfigError> {
    if value > MAX_DURATION {
        return Err(invalid(key, format!("must be at most {} (ten years)", MAX_DURATION.as_secs())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)], flags: Overrides) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_toml(toml)?;
        config.apply_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        if let Some(l) = flags.listen {
            config.listen = parse_listen("--listen", &l)?;
        }
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.max_wait, Duration::from_secs(30));
        assert_eq!(c.default_namespace.history_size, 100);
        assert_eq!(c.default_namespace.history_ttl, Duration::from_secs(3600));
        assert!(!c.default_namespace.allow_client_publish);
    }

    #[test]
    fn the_request_head_timeout_is_read_from_file_and_environment_and_never_zero() {
        assert_eq!(Config::default().request_head_timeout, Duration::from_secs(60));
        let file = load("request_head_timeout_secs = 9", &[], Overrides::default()).unwrap();
        assert_eq!(file.request_head_timeout, Duration::from_secs(9));
        let env = load("", &[("HERALD_REQUEST_HEAD_TIMEOUT_SECS", "4")], Overrides::default()).unwrap();
        assert_eq!(env.request_head_timeout, Duration::from_secs(4));
        let zero = load("request_head_timeout_secs = 0", &[], Overrides::default()).unwrap_err().to_string();
        assert!(zero.contains("request_head_timeout_secs"), "{zero}");
        for key in
            ["request_head_timeout_secs", "shutdown_grace_secs", "max_wait_secs", "default_namespace.history_ttl_secs"]
        {
            let toml = match key.split_once('.') {
                Some((table, key)) => format!("[{table}]\n{key} = 9223372036854775807"),
                None => format!("{key} = 9223372036854775807"),
            };
            let huge = load(&toml, &[], Overrides::default()).unwrap_err().to_string();
            assert!(huge.contains(key) && huge.contains("at most"), "{huge}");
        }
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let c = load(
            "listen = \"127.0.0.1:1\"\nmax_wait_secs = 5",
            &[("HERALD_LISTEN", "127.0.0.1:2"), ("HERALD_MAX_WAIT_SECS", "7")],
            Overrides { listen: Some("127.0.0.1:3".into()), ..Default::default() },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.max_wait, Duration::from_secs(7));
    }

    #[test]
    fn namespaces_inherit_the_default_namespace() {
        let c = load(
            "[default_namespace]\nhistory_size = 10\n[namespaces.chat]\nallow_client_publish = true",
            &[],
            Overrides::default(),
        )
        .unwrap();
        let chat = c.namespace(&ChannelName::new("chat:lobby").unwrap());
        assert_eq!((chat.history_size, chat.allow_client_publish), (10, true));
        let other = c.namespace(&ChannelName::new("orders:1").unwrap());
        assert_eq!((other.history_size, other.allow_client_publish), (10, false));
    }

    #[test]
    fn security_keys_are_read_and_checked() {
        let toml = r#"
            trusted_proxies = ["10.0.0.0/8"]
            max_connections_per_ip = 7
            [[publisher_keys]]
            name = "orders"
            key = "orders-key-0123456789"
            channels = ["orders:*"]
            [jwt]
            secret = "a-shared-secret-of-at-least-32-bytes"
            audience = "herald"
            [namespaces.news]
            public = true
        "#;
        let c = load(toml, &[("HERALD_KEY", "ignored"), ("HERALD_TOKEN", "ignored")], Overrides::default()).unwrap();
        assert_eq!((c.publisher_keys.len(), c.jwt.has_key(), c.max_connections_per_ip), (1, true, 7));
        assert_eq!(c.publisher_keys[0].channels, ["orders:*"]);
        assert_eq!(c.trusted_proxies, ["10.0.0.0/8"]);
        assert_eq!(c.jwt.audience.as_deref(), Some("herald"));
        assert!(c.is_public(&ChannelName::new("news:1").unwrap()));
        assert!(!c.is_public(&ChannelName::new("orders:1").unwrap()), "private once a token key exists");
        assert!(Config::default().is_public(&ChannelName::new("orders:1").unwrap()), "public without one");
        let env = [("HERALD_JWT_SECRET", "another-shared-secret-of-32-bytes!!")];
        let replaced = load(toml, &env, Overrides::default()).unwrap();
        assert_eq!(replaced.jwt.secret.as_deref(), Some(env[0].1), "a later secret replaces");
        assert_eq!(replaced.source("jwt.secret"), "HERALD_JWT_SECRET", "and is named after its variable");
        assert_eq!(c.source("jwt.secret"), "jwt.secret");
    }

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
    }
}

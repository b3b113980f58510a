//! Herald's settings: every limit in one place, with its documented default.
//!
//! [`Config`] is plain data (numbers, strings, durations, lists, namespaces), declared once: each field's serde
//! attributes give its file key, [`Config::default`] its default, and [`sources`] derives its `HERALD_*`
//! variable from the key. Sources, strongest first: command-line flags, `HERALD_*` environment variables, a
//! TOML file, defaults ([`sources`] lays them over each other). The result is validated once; a bad value is
//! refused at start with an error that names the key (or the variable) it came from. The modules that use a
//! setting interpret it (`auth` its keys, `limits` its proxy ranges); this module imports none of them.

mod pusher;
mod sources;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald_proto::ChannelName;
use serde::{Deserialize, Deserializer, Serialize};

pub use pusher::{
    PusherAppSettings, PusherLimits, PusherSettings, PusherWebhookSettings, MAX_APP_NAMESPACE_LEN, MIN_APP_SECRET_LEN,
};
pub use sources::Overrides;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// In this process's memory (the default): one node, history lost on restart.
    Memory,
    /// In Redis: several nodes share channels, history survives node restarts.
    Redis,
    /// In a file in `data_dir`: one node, history survives restarts and crashes.
    Disk,
}

impl EngineKind {
    fn parse(key: &str, name: &str) -> Result<Self, ConfigError> {
        match name.trim() {
            "memory" => Ok(Self::Memory),
            "redis" => Ok(Self::Redis),
            "disk" => Ok(Self::Disk),
            other => Err(invalid(key, format!("unknown engine {other:?}; expected memory, disk or redis"))),
        }
    }
}

impl<'de> Deserialize<'de> for EngineKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse("engine", &name).map_err(|e| serde::de::Error::custom(message_of(e)))
    }
}

/// When the disk engine waits for the disk (`fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// A publish is answered once its message is on disk; concurrent publishes share one fsync.
    Always,
    /// The disk is flushed every `fsync_interval_ms`: a crash (not a clean stop) can lose that last interval.
    Interval,
}

impl FsyncPolicy {
    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Interval => "interval",
        }
    }
}

/// Settings of one namespace (`[default_namespace]`, `[namespaces.<name>]`; a namespace's table is laid over
/// the default namespace's, so it inherits what it does not set).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceSettings {
    /// At most this many messages are kept per channel.
    pub history_size: usize,
    /// Messages older than this are dropped.
    #[serde(rename = "history_ttl_secs", with = "secs")]
    pub history_ttl: Duration,
    /// Whether WebSocket clients may publish.
    pub allow_client_publish: bool,
    /// Whether anyone may subscribe without a token. `None`: public unless a token key is configured.
    pub public: Option<bool>,
    /// Whether the namespace's channels have presence: a subscriber that presents a user (a token's `sub`) is a
    /// member, and others may read the members and follow their joins and leaves.
    pub presence: bool,
    /// Members a channel of the namespace may have; a new user past it is refused (`presence_full`).
    pub presence_max_members: usize,
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        Self {
            history_size: 100,
            history_ttl: Duration::from_secs(3600),
            allow_client_publish: false,
            public: None,
            presence: false,
            presence_max_members: 100,
        }
    }
}

/// All settings of a server. Each field is one setting: its file key is its name (or its `rename`), its
/// variable that key in capitals after `HERALD_`, its default in [`Config::default`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(deserialize_with = "listen")]
    pub listen: SocketAddr,
    /// Largest HTTP request body.
    pub max_body_bytes: usize,
    /// Largest WebSocket frame or message from a client.
    pub max_frame_bytes: usize,
    /// Longest `wait` a poll may ask for.
    #[serde(rename = "max_wait_secs", with = "secs")]
    pub max_wait: Duration,
    /// Messages queued per connection before it counts as a slow consumer.
    pub connection_queue: usize,
    /// The fan-out writes a live message straight into a plain-TCP WebSocket or one-channel SSE socket that
    /// has nothing else to write, instead of waking the connection's task; messages are fanned out on the node's
    /// fan-out worker, so a publish does not wait for the writes. On by default: 15–25% less server CPU per
    /// delivery, a shorter tail on `mixed`, faster publishing to channels with subscribers (docs/BENCHMARKS.md).
    pub direct_writes: bool,
    /// Channels one WebSocket may subscribe to.
    pub max_subscriptions_per_connection: usize,
    /// Channels one SSE stream or poll may name.
    pub max_channels_per_request: usize,
    /// Bytes of message history kept by the whole server.
    pub max_history_bytes: usize,
    /// Interval of `: ping` comments on SSE streams.
    #[serde(rename = "sse_heartbeat_secs", with = "secs")]
    pub sse_heartbeat: Duration,
    /// The `retry:` an SSE stream sends.
    pub sse_retry_ms: u64,
    /// Interval of WebSocket pings; two without an answer drop the peer.
    #[serde(rename = "ws_ping_secs", with = "secs")]
    pub ws_ping: Duration,
    /// How long shutdown waits for requests in flight.
    #[serde(rename = "shutdown_grace_secs", with = "secs")]
    pub shutdown_grace: Duration,
    /// How long a connection may take to send a whole request head, from its start or its previous response
    /// (so also how long an idle kept-alive connection stays open).
    #[serde(rename = "request_head_timeout_secs", with = "secs")]
    pub request_head_timeout: Duration,
    /// Origins allowed by CORS; `*` for any.
    pub cors_origins: Vec<String>,
    /// Enabled transports.
    #[serde(deserialize_with = "transports")]
    pub transports: Vec<TransportKind>,
    /// Settings of channels whose namespace is not configured.
    pub default_namespace: NamespaceSettings,
    /// Per-namespace settings.
    pub namespaces: HashMap<String, NamespaceSettings>,
    /// The engine.
    pub engine: EngineKind,
    /// Redis, for `engine = "redis"`: `redis://…` for one Redis, `redis+cluster://host:port[,host:port…]` for
    /// the seed nodes of a Redis Cluster (Redis ≥ 7.0; Pub/Sub is then sharded).
    pub redis_url: String,
    /// Replicas that must acknowledge a message (`WAIT`) before its publish answers `201`; 0 = don't wait.
    pub redis_wait_replicas: u32,
    /// Prefix of every Redis key and Pub/Sub channel Herald uses, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// The directory the disk engine keeps its file in (`engine = "disk"`); one process at a time.
    pub data_dir: Option<PathBuf>,
    /// When the disk engine waits for the disk: `always` (a 201 means on disk) or `interval`.
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`: how often the disk is flushed, so how much a crash can lose at most.
    #[serde(rename = "fsync_interval_ms", with = "millis")]
    pub fsync_interval: Duration,
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
    /// HTTPS on `listen` with this certificate chain (PEM), reread when it changes on disk or on SIGHUP.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// HTTPS on `listen` with certificates for these names, obtained and renewed over ACME.
    pub acme_domains: Vec<String>,
    /// The contact address given to the ACME server.
    pub acme_email: Option<String>,
    /// The ACME server's directory URL.
    pub acme_directory: String,
    /// Where the ACME account and certificates are kept between runs.
    pub acme_cache_dir: Option<PathBuf>,
    /// How the ACME server checks the names: `tls-alpn-01` (on `listen`) or `http-01` (on `redirect_listen`).
    pub acme_challenge: String,
    /// Roots (PEM) trusted for the ACME server instead of the system's (a private or test ACME server).
    pub acme_ca_file: Option<PathBuf>,
    /// With TLS: a plain-HTTP address that redirects to HTTPS (and answers ACME's HTTP-01 challenges).
    #[serde(deserialize_with = "optional_listen")]
    pub redirect_listen: Option<SocketAddr>,
    /// With TLS: `Strict-Transport-Security: max-age=…` on every answer; 0 sends none.
    pub hsts_max_age_secs: u64,
    /// With TLS: offer HTTP/2 (ALPN `h2`) besides HTTP/1.1.
    pub http2: bool,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_streams: u32,
    /// How log lines are written to stderr: `text` for people, `json` (one object a line) for log pipelines.
    pub log_format: LogFormat,
    /// Keys of the admin page and API (`/admin`); with none, both are off.
    pub admin_keys: Vec<AdminKey>,
    /// The Pusher Channels protocol's apps and limits.
    pub pusher: PusherSettings,
    /// How long a member stays after its last connection left, so that a page reload is neither a leave nor a
    /// join; also how long a channel stays occupied after its last subscriber left.
    #[serde(rename = "presence_grace_ms", with = "millis")]
    pub presence_grace: Duration,
    /// With Redis: a node that has not renewed its liveness for this long is dead, and its members leave.
    #[serde(rename = "presence_node_ttl_secs", with = "secs")]
    pub presence_node_ttl: Duration,
    /// Largest `info` a member may present (minified JSON).
    pub max_presence_info_bytes: usize,
    /// Endpoints that hear of channels' lifecycle (occupied, vacated, members, client events, cache misses).
    pub webhooks: Vec<WebhookSettings>,
    /// Events kept for webhooks: an endpoint further behind the newest loses the oldest (counted).
    pub webhook_queue: usize,
    /// Events sent in one request at most.
    pub webhook_batch: usize,
    /// How long a webhook request may take before it counts as failed (and is retried).
    #[serde(rename = "webhook_timeout_secs", with = "secs")]
    pub webhook_timeout: Duration,
    /// The longest pause between two attempts of a failing webhook request (the pause doubles from 1 s).
    #[serde(rename = "webhook_max_backoff_secs", with = "secs")]
    pub webhook_max_backoff: Duration,
    /// Certificates (PEM) trusted for `https://` webhook receivers besides the system's roots: a private CA.
    pub webhook_ca_file: Option<PathBuf>,
    /// The environment variable that set a setting, by the setting's key, for the modules that interpret the
    /// setting to name it as the user wrote it (see [`Config::source`]).
    #[serde(skip)]
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
            direct_writes: true,
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
            redis_wait_replicas: 0,
            data_dir: None,
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(1000),
            publisher_keys: Vec::new(),
            jwt: JwtSettings::default(),
            trusted_proxies: Vec::new(),
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            publish_rate_per_connection: 100,
            publish_rate_per_key: 1_000,
            insecure: false,
            tls_cert_file: None,
            tls_key_file: None,
            acme_domains: Vec::new(),
            acme_email: None,
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".to_string(),
            acme_cache_dir: None,
            acme_challenge: "tls-alpn-01".to_string(),
            acme_ca_file: None,
            redirect_listen: None,
            hsts_max_age_secs: 0,
            http2: true,
            http2_max_streams: 100,
            log_format: LogFormat::Text,
            admin_keys: Vec::new(),
            pusher: PusherSettings::default(),
            presence_grace: Duration::from_millis(3000),
            presence_node_ttl: Duration::from_secs(15),
            max_presence_info_bytes: 1024,
            webhooks: Vec::new(),
            webhook_queue: 10_000,
            webhook_batch: 100,
            webhook_timeout: Duration::from_secs(10),
            webhook_max_backoff: Duration::from_secs(60),
            webhook_ca_file: None,
            sources: BTreeMap::new(),
        }
    }
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, the event's fields at its top level.
    Json,
}

/// A key of the admin page (`admin_keys`): a secret that never reaches a log, even through a debug print.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct AdminKey(pub String);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(…)")
    }
}

/// `[[publisher_keys]]`: a key that may publish over HTTP, as configured; `auth` makes it a `PublisherKey`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
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

/// `[[webhooks]]`: an endpoint that hears of channels' lifecycle, as configured; `webhooks` builds it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The name metrics and logs use; also where the cluster keeps the endpoint's position (so it must not change
    /// while events wait). Default: `webhook-<n>`, its place in the list.
    #[serde(default)]
    pub name: Option<String>,
    /// Where events are POSTed: `http://host[:port]/path`.
    pub url: String,
    /// `herald` (the default: Herald's body, signed with `Herald-Webhook-Signature`) or `pusher` (Pusher's body
    /// and `X-Pusher-Key` / `X-Pusher-Signature`, for receivers written for Pusher).
    #[serde(default = "herald_format")]
    pub format: String,
    /// The secret requests are signed with.
    pub secret: String,
    /// For `pusher`: the app key sent as `X-Pusher-Key`.
    #[serde(default)]
    pub key: Option<String>,
    /// The events it hears of, by name; empty: every one.
    #[serde(default)]
    pub events: Vec<String>,
    /// Channel patterns it hears of (`chat:*`: a namespace); empty: every channel.
    #[serde(default)]
    pub channels: Vec<String>,
}

fn herald_format() -> String {
    "herald".to_string()
}

impl std::fmt::Debug for WebhookSettings {
    // A secret must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("format", &self.format)
            .field("events", &self.events)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// `[jwt]`: how subscriber tokens are checked, as configured; `auth` reads the keys from it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
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

impl Config {
    /// Whether anyone may subscribe to `channel` without a token: its namespace's `public`, which defaults to
    /// "no token key is configured". A Pusher app's private, encrypted and presence channels never are: Pusher
    /// clients reach them with the app's signature, Herald's own transports only with a token.
    pub fn is_public(&self, channel: &ChannelName) -> bool {
        !self.is_pusher_private(channel)
            && self.namespace(channel).public.or(self.default_namespace.public).unwrap_or(!self.jwt.has_key())
    }

    /// Whether `channel` is a Pusher app's `private-…` (encrypted included) or `presence-…` channel.
    pub fn is_pusher_private(&self, channel: &ChannelName) -> bool {
        self.pusher_name(channel).is_some_and(|name| name.starts_with("private-") || name.starts_with("presence-"))
    }

    /// Whether `channel` has presence: its namespace has `presence = true`, or it is a Pusher app's `presence-…`
    /// channel (so Herald's own protocol sees the same members as Pusher's).
    pub fn has_presence(&self, channel: &ChannelName) -> bool {
        self.namespace(channel).presence || self.is_pusher_presence(channel)
    }

    /// Whether `channel` is a Pusher app's `presence-…` channel.
    pub fn is_pusher_presence(&self, channel: &ChannelName) -> bool {
        self.pusher_name(channel).is_some_and(|name| name.starts_with("presence-"))
    }

    /// The Pusher name of a channel of a Pusher app's namespace.
    fn pusher_name<'a>(&self, channel: &'a ChannelName) -> Option<&'a str> {
        let (namespace, name) = channel.as_str().split_once(':')?;
        self.pusher.apps.iter().any(|app| app.namespace() == namespace).then_some(name)
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

    /// Whether `listen` speaks HTTPS: certificate files or ACME are configured.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some() || !self.acme_domains.is_empty()
    }

    /// Whether `transport` is enabled.
    pub fn enabled(&self, transport: TransportKind) -> bool {
        self.transports.contains(&transport)
    }
}

/// The message of an error, without its key: serde errors are named by the source that gave the value.
fn message_of(err: ConfigError) -> String {
    match err {
        ConfigError::Invalid { message, .. } => message,
        other => other.to_string(),
    }
}

/// `listen`: an address such as `127.0.0.1:7070`.
fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let value = String::deserialize(d)?;
    value
        .trim()
        .parse()
        .map_err(|_| serde::de::Error::custom(format!("{value:?} is not an address such as 127.0.0.1:7070")))
}

/// `redirect_listen`: an address, or nothing (also an empty text, for a variable that unsets it).
fn optional_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{value:?} is not an address such as 0.0.0.0:80"))),
        _ => Ok(None),
    }
}

/// `transports`: names among ws (or websocket), sse and poll; blanks are skipped and repeats kept once.
fn transports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TransportKind>, D::Error> {
    let mut out = Vec::new();
    for name in Vec::<String>::deserialize(d)?.iter().filter(|n| !n.trim().is_empty()) {
        let kind = TransportKind::parse(name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown transport {name:?}; expected ws, sse or poll")))?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

/// A duration written as whole milliseconds (the `…_ms` keys).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A duration written as whole seconds (the `…_secs` keys).
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A configuration from `toml` as the file `herald.toml`, the environment `env` and `flags`.
    pub(in crate::config) fn load(toml: &str, env: &[(&str, &str)], flags: Overrides) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_sources(Some((std::path::Path::new("herald.toml"), toml)), env, &flags)
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
    fn the_log_format_and_admin_keys_are_read_from_file_and_environment_and_keys_never_printed() {
        assert_eq!(Config::default().log_format, LogFormat::Text);
        assert!(Config::default().admin_keys.is_empty(), "the admin page is off by default");
        let file = load("log_format = \"json\"\nadmin_keys = [\"admin-key-0123456789\"]", &[], Overrides::default());
        let file = file.unwrap();
        assert_eq!((file.log_format, file.admin_keys.len()), (LogFormat::Json, 1));
        let env = [("HERALD_LOG_FORMAT", "json"), ("HERALD_ADMIN_KEYS", "first-admin-key-0123, second-admin-key-0123")];
        let env = load("", &env, Overrides::default()).unwrap();
        assert_eq!((env.log_format, env.admin_keys.len()), (LogFormat::Json, 2));
        assert!(!format!("{env:?}").contains("first-admin-key"), "a debug print shows no admin key");
    }

    #[test]
    fn presence_settings_have_documented_defaults_and_bounds() {
        let c = Config::default();
        assert_eq!(c.presence_grace, Duration::from_millis(3000));
        assert_eq!(c.presence_node_ttl, Duration::from_secs(15));
        assert_eq!(c.max_presence_info_bytes, 1024);
        assert_eq!((c.default_namespace.presence, c.default_namespace.presence_max_members), (false, 100));
        let c = load(
            "presence_grace_ms = 250\n[namespaces.chat]\npresence = true\npresence_max_members = 7",
            &[("HERALD_PRESENCE_NODE_TTL_SECS", "4")],
            Overrides::default(),
        )
        .unwrap();
        let chat = c.namespace(&ChannelName::new("chat:lobby").unwrap());
        assert_eq!((chat.presence, chat.presence_max_members), (true, 7));
        assert_eq!((c.presence_grace, c.presence_node_ttl), (Duration::from_millis(250), Duration::from_secs(4)));
        for (toml, key) in [
            ("presence_node_ttl_secs = 0", "presence_node_ttl_secs"),
            ("max_presence_info_bytes = 0", "max_presence_info_bytes"),
            ("[namespaces.chat]\npresence_max_members = 0", "namespaces.chat.presence_max_members"),
        ] {
            let refused = load(toml, &[], Overrides::default()).unwrap_err().to_string();
            assert!(refused.contains(key), "{refused}");
        }
    }

    #[test]
    fn the_disk_engine_needs_a_data_dir_and_reads_its_fsync_policy_from_every_source() {
        let c = Config::default();
        assert_eq!(
            (c.data_dir.as_deref(), c.fsync, c.fsync_interval),
            (None, FsyncPolicy::Interval, Duration::from_secs(1))
        );
        let refused = load("engine = \"disk\"", &[], Overrides::default()).unwrap_err().to_string();
        assert!(refused.starts_with("data_dir: ") && refused.contains("--data-dir"), "{refused}");
        let file =
            load("engine = \"disk\"\ndata_dir = \"data\"\nfsync = \"always\"", &[], Overrides::default()).unwrap();
        assert_eq!(
            (file.engine, file.data_dir.unwrap(), file.fsync),
            (EngineKind::Disk, PathBuf::from("data"), FsyncPolicy::Always)
        );
        let env = [("HERALD_ENGINE", "disk"), ("HERALD_DATA_DIR", "/var/lib/h"), ("HERALD_FSYNC_INTERVAL_MS", "50")];
        let env = load("", &env, Overrides::default()).unwrap();
        assert_eq!(
            (env.data_dir.unwrap(), env.fsync_interval),
            (PathBuf::from("/var/lib/h"), Duration::from_millis(50))
        );
        let flags = Overrides { engine: Some("disk".into()), data_dir: Some("/d".into()), ..Overrides::default() };
        assert_eq!(load("", &[], flags).unwrap().data_dir.unwrap(), PathBuf::from("/d"));
        for toml in ["fsync_interval_ms = 0", "fsync_interval_ms = 3600001"] {
            let refused = load(toml, &[], Overrides::default()).unwrap_err().to_string();
            assert!(refused.starts_with("fsync_interval_ms: "), "{refused}");
        }
        assert!(load("fsync = \"sometimes\"", &[], Overrides::default()).is_err());
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
    fn a_pusher_apps_private_and_presence_channels_are_never_public() {
        let toml = "[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-1\"\nnamespace = \"shop\"";
        let c = load(toml, &[], Overrides::default()).unwrap();
        let public = |name: &str| c.is_public(&ChannelName::new(name).unwrap());
        assert!(public("shop:orders") && public("shop:cache-prices") && public("other:private-x"));
        assert!(!public("shop:private-orders") && !public("shop:private-encrypted-x") && !public("shop:presence-room"));
    }
}

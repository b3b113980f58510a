//! Who may publish and who may subscribe.
//!
//! - **Publishers** (the application's backend) send a publisher key as `Authorization: Bearer <key>` on the
//!   HTTP publish API ([`keys`]). With no key configured, anyone may publish over HTTP (a server on loopback);
//!   `herald serve` refuses to listen elsewhere without one.
//! - **Subscribers** (browsers) present a JWT issued by the backend ([`jwt`]). Channels of a *public* namespace
//!   need none; channels of a *private* namespace need a token whose `channels` patterns ([`patterns`]) reach
//!   the channel, or whose `sub` is the user of a `user:<sub>` channel. A namespace is private by default as soon
//!   as any token key is configured, public otherwise, so a server with no security configured behaves as it
//!   always did.
//! - **Clients publishing over WebSocket** need a namespace with `allow_client_publish`, and in a private
//!   namespace a token whose `publish` patterns reach the channel.
//!
//! This module knows nothing of HTTP: transports extract the credential, call these checks, and map an
//! [`AuthError`] to their own answer (`error.rs` for HTTP, an `error` frame on WebSocket). Every refusal is
//! counted and logged through [`Refusals`]; no key or token is ever written to a log.

pub mod jwt;
pub mod keys;
pub mod patterns;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_proto::ChannelName;

use crate::config::{Config, ConfigError};
use crate::refusal::{Refusal, Refusals};
pub use jwt::{Claims, TokenError, TokenRules};
pub use keys::PublisherKey;

/// The namespace of per-user channels: a token with `sub: "u42"` may read `user:u42` without listing it.
pub const USER_NAMESPACE: &str = "user";

/// Why a request was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Publishing needs a key and none was given.
    #[error("publishing needs a publisher key: send `Authorization: Bearer <key>`")]
    KeyRequired,
    /// The key given is not a configured one.
    #[error("the publisher key is not valid")]
    InvalidKey,
    /// The key may not publish on this channel.
    #[error("this publisher key may not publish on {0}")]
    KeyNotForChannel(ChannelName),
    /// The channel is private and no token was given.
    #[error("{0} is private: send a token (`Authorization: Bearer`, `?token=` or an `auth` frame)")]
    TokenRequired(ChannelName),
    /// The token was refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token does not grant this channel.
    #[error("the token does not grant {0}")]
    ChannelForbidden(ChannelName),
    /// The token does not grant publishing on this channel.
    #[error("the token does not grant publishing on {0}")]
    PublishForbidden(ChannelName),
    /// The channel's namespace does not let clients publish.
    #[error("clients may not publish to {0}; its namespace does not allow it")]
    ClientPublishForbidden(ChannelName),
}

impl AuthError {
    /// The stable error code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::KeyRequired => "key_required",
            AuthError::InvalidKey => "invalid_key",
            AuthError::TokenRequired(_) => "token_required",
            AuthError::Token(TokenError::Invalid(_)) => "invalid_token",
            AuthError::Token(TokenError::Expired { .. }) => "token_expired",
            AuthError::KeyNotForChannel(_) | AuthError::ChannelForbidden(_) | AuthError::PublishForbidden(_) => {
                "channel_forbidden"
            }
            AuthError::ClientPublishForbidden(_) => "client_publish_forbidden",
        }
    }

    /// Whether the credential is missing or wrong (HTTP `401`), rather than valid but not enough (`403`).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            AuthError::KeyRequired | AuthError::InvalidKey | AuthError::TokenRequired(_) | AuthError::Token(_)
        )
    }

    fn refusal(&self) -> Refusal {
        match self {
            AuthError::KeyRequired => Refusal::KeyRequired,
            AuthError::InvalidKey => Refusal::InvalidKey,
            AuthError::TokenRequired(_) => Refusal::TokenRequired,
            AuthError::Token(TokenError::Invalid(_)) => Refusal::InvalidToken,
            AuthError::Token(TokenError::Expired { .. }) => Refusal::TokenExpired,
            AuthError::KeyNotForChannel(_) | AuthError::ChannelForbidden(_) | AuthError::PublishForbidden(_) => {
                Refusal::ChannelForbidden
            }
            AuthError::ClientPublishForbidden(_) => Refusal::ClientPublishForbidden,
        }
    }
}

/// The value of an `Authorization: Bearer <credential>` header, or `None` for any other scheme.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, credential) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credential.trim()).filter(|c| !c.is_empty())
}

/// Seconds since 1970, the clock tokens are checked against.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The server's access rules, from its configuration.
pub struct Auth {
    config: Arc<Config>,
    publisher_keys: Vec<PublisherKey>,
    tokens: TokenRules,
    refusals: Arc<Refusals>,
}

impl Auth {
    /// The rules of `config`, its publisher keys and token keys read (key files included); refusals are
    /// counted and logged on `refusals`. A key that cannot be used is refused naming where it was configured.
    pub fn new(config: Arc<Config>, refusals: Arc<Refusals>) -> Result<Self, ConfigError> {
        let publisher_keys = keys::from_config(&config)?;
        let tokens = TokenRules::from_config(&config)?;
        Ok(Self { config, publisher_keys, tokens, refusals })
    }

    /// How many publisher keys and token keys are configured, for the log at start.
    pub fn key_counts(&self) -> (usize, usize) {
        (self.publisher_keys.len(), self.tokens.keys.len())
    }

    fn refuse<T>(&self, err: AuthError) -> Result<T, AuthError> {
        Err(self.refused(err))
    }

    /// Counts and logs a refusal decided by a transport (a credential it could not even read, a session whose
    /// token ran out), and returns it.
    pub fn refused(&self, err: AuthError) -> AuthError {
        self.refusals.record(err.refusal(), || err.to_string());
        err
    }

    /// Checks a publish over HTTP with the `Authorization` header's value; returns the key used, if keys are
    /// configured at all.
    pub fn publisher(
        &self,
        authorization: Option<&str>,
        channel: &ChannelName,
    ) -> Result<Option<&PublisherKey>, AuthError> {
        let key = self.backend(authorization)?;
        if key.is_some_and(|key| !key.reaches(channel)) {
            return self.refuse(AuthError::KeyNotForChannel(channel.clone()));
        }
        Ok(key)
    }

    /// Checks a backend's request with the `Authorization` header's value, whatever channels it concerns (the list
    /// of occupied channels: its caller keeps those the key reaches); returns the key used, if keys are configured
    /// at all.
    pub fn backend(&self, authorization: Option<&str>) -> Result<Option<&PublisherKey>, AuthError> {
        let keys = &self.publisher_keys;
        if keys.is_empty() {
            return Ok(None);
        }
        let Some(authorization) = authorization else { return self.refuse(AuthError::KeyRequired) };
        match bearer(authorization).and_then(|presented| keys::find(keys, presented)) {
            Some(key) => Ok(Some(key)),
            None => self.refuse(AuthError::InvalidKey),
        }
    }

    /// Whether the `Authorization` header's value carries a configured publisher key (rather than a subscriber
    /// token), for the requests a backend and a page may both make.
    pub fn carries_publisher_key(&self, authorization: Option<&str>) -> bool {
        authorization.and_then(bearer).is_some_and(|presented| keys::find(&self.publisher_keys, presented).is_some())
    }

    /// Checks a token now.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, now_unix())
    }

    /// Checks a token at `now` (seconds since 1970).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        match self.tokens.verify(token, now) {
            Ok(claims) => Ok(claims),
            Err(err) => self.refuse(err.into()),
        }
    }

    /// The instant a token with these claims stops being accepted, leeway included: the one deadline of every
    /// stream, subscription and held poll that relies on it.
    pub fn refused_from(&self, claims: &Claims) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.tokens.refused_from(claims.exp))
    }

    /// Whether subscribing to `channel` needs a token.
    pub fn is_private(&self, channel: &ChannelName) -> bool {
        !self.config.is_public(channel)
    }

    /// Checks a subscription to `channel` by the holder of `claims` (`None`: no token given).
    pub fn subscribe(&self, claims: Option<&Claims>, channel: &ChannelName) -> Result<(), AuthError> {
        if !self.is_private(channel) {
            return Ok(());
        }
        let Some(claims) = claims else { return self.refuse(AuthError::TokenRequired(channel.clone())) };
        if patterns::any_matches(&claims.channels, channel) || is_own_user_channel(claims, channel) {
            Ok(())
        } else {
            self.refuse(AuthError::ChannelForbidden(channel.clone()))
        }
    }

    /// Checks a publish over WebSocket to `channel` by the holder of `claims`.
    pub fn client_publish(&self, claims: Option<&Claims>, channel: &ChannelName) -> Result<(), AuthError> {
        if !self.config.namespace(channel).allow_client_publish {
            return self.refuse(AuthError::ClientPublishForbidden(channel.clone()));
        }
        if !self.is_private(channel) {
            return Ok(());
        }
        let Some(claims) = claims else { return self.refuse(AuthError::TokenRequired(channel.clone())) };
        if patterns::any_matches(&claims.publish, channel) {
            Ok(())
        } else {
            self.refuse(AuthError::PublishForbidden(channel.clone()))
        }
    }
}

/// `user:<sub>` for the token's own `sub`, exactly (not `user:<sub>:more`, which another user's `sub` could
/// spell).
fn is_own_user_channel(claims: &Claims, channel: &ChannelName) -> bool {
    let Some(sub) = claims.sub.as_deref() else { return false };
    channel
        .as_str()
        .strip_prefix(USER_NAMESPACE)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|user| !user.is_empty() && user == sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use patterns::Pattern;

    fn claims(sub: Option<&str>, channels: &[&str], publish: &[&str]) -> Claims {
        let list = |l: &[&str]| l.iter().map(|p| Pattern::new(p).unwrap()).collect();
        Claims {
            sub: sub.map(str::to_owned),
            exp: u64::MAX,
            channels: list(channels),
            publish: list(publish),
            info: None,
        }
    }

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn refusals() -> Arc<Refusals> {
        Arc::new(Refusals::new(Arc::new(Metrics::default())))
    }

    fn refused(config: Config) -> String {
        Auth::new(Arc::new(config), refusals()).err().expect("a refused configuration").to_string()
    }

    fn secured() -> Auth {
        let mut config = Config::default();
        config.jwt.secret = Some("a-shared-secret-of-at-least-32-bytes".into());
        config
            .namespaces
            .insert("news".into(), crate::config::NamespaceSettings { public: Some(true), ..Default::default() });
        config.namespaces.insert(
            "chat".into(),
            crate::config::NamespaceSettings { allow_client_publish: true, ..Default::default() },
        );
        Auth::new(Arc::new(config), refusals()).unwrap()
    }

    #[test]
    fn bearer_takes_the_credential_of_the_bearer_scheme_only() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn without_security_everything_is_public() {
        let auth = Auth::new(Arc::new(Config::default()), refusals()).unwrap();
        assert_eq!(auth.subscribe(None, &ch("orders:1")), Ok(()));
        assert_eq!(auth.publisher(None, &ch("orders:1")).map(|k| k.is_some()), Ok(false));
    }

    #[test]
    fn with_a_token_key_unconfigured_namespaces_are_private() {
        let auth = secured();
        assert_eq!(auth.subscribe(None, &ch("orders:1")), Err(AuthError::TokenRequired(ch("orders:1"))));
        assert_eq!(auth.subscribe(None, &ch("plain")), Err(AuthError::TokenRequired(ch("plain"))));
        assert_eq!(auth.subscribe(None, &ch("news:today")), Ok(()), "explicitly public");
        let holder = claims(Some("u42"), &["orders:*"], &[]);
        assert_eq!(auth.subscribe(Some(&holder), &ch("orders:1")), Ok(()));
        assert_eq!(auth.subscribe(Some(&holder), &ch("chat:1")), Err(AuthError::ChannelForbidden(ch("chat:1"))));
    }

    #[test]
    fn a_user_reads_their_own_user_channel_and_no_other() {
        let auth = secured();
        let u42 = claims(Some("u42"), &[], &[]);
        assert_eq!(auth.subscribe(Some(&u42), &ch("user:u42")), Ok(()));
        assert!(auth.subscribe(Some(&u42), &ch("user:u43")).is_err());
        assert!(auth.subscribe(Some(&u42), &ch("user:u42:x")).is_err());
        assert!(auth.subscribe(Some(&claims(None, &[], &[])), &ch("user:u42")).is_err());
    }

    #[test]
    fn client_publishing_needs_the_namespace_and_in_private_ones_the_token() {
        let auth = secured();
        let member = claims(Some("u1"), &["chat:*"], &["chat:room1"]);
        assert_eq!(auth.client_publish(Some(&member), &ch("chat:room1")), Ok(()));
        assert_eq!(
            auth.client_publish(Some(&member), &ch("chat:room2")),
            Err(AuthError::PublishForbidden(ch("chat:room2")))
        );
        assert_eq!(auth.client_publish(None, &ch("chat:room1")), Err(AuthError::TokenRequired(ch("chat:room1"))));
        assert_eq!(
            auth.client_publish(Some(&member), &ch("orders:1")),
            Err(AuthError::ClientPublishForbidden(ch("orders:1")))
        );
    }

    #[test]
    fn unusable_keys_are_refused_naming_where_they_were_configured() {
        let key = |key: &str, channels: &[&str]| crate::config::PublisherKeySettings {
            name: "k".into(),
            key: key.into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        };
        let config = |f: &dyn Fn(&mut Config)| {
            let mut config = Config::default();
            f(&mut config);
            config
        };
        let short_secret = refused(config(&|c| c.jwt.secret = Some("short".into())));
        assert!(short_secret.starts_with("jwt.secret:"), "{short_secret}");
        let weak_key = refused(config(&|c| c.publisher_keys = vec![key("short", &[])]));
        assert!(weak_key.starts_with("publisher_keys[0]:"), "{weak_key}");
        let bad_pattern = refused(config(&|c| c.publisher_keys = vec![key("long-enough-key-0123", &["a b"])]));
        assert!(bad_pattern.starts_with("publisher_keys[0].channels:"), "{bad_pattern}");
        let from_env = refused(config(&|c| {
            c.publisher_keys = vec![key("short", &[])];
            c.sources.insert("publisher_keys".into(), "HERALD_PUBLISHER_KEYS".into());
        }));
        assert!(from_env.starts_with("HERALD_PUBLISHER_KEYS:"), "{from_env}");
        let missing = refused(config(&|c| c.jwt.jwks_file = Some("/nonexistent/jwks.json".into())));
        assert!(missing.starts_with("jwt.jwks_file: cannot read /nonexistent/jwks.json"), "{missing}");
    }

    #[test]
    fn codes_and_statuses() {
        assert_eq!(AuthError::KeyRequired.code(), "key_required");
        assert!(AuthError::InvalidKey.is_unauthenticated());
        assert!(!AuthError::ChannelForbidden(ch("a")).is_unauthenticated());
        assert_eq!(AuthError::Token(TokenError::Expired { exp: 1 }).code(), "token_expired");
    }
}

//! Publisher keys: the secrets a backend sends as `Authorization: Bearer <key>` to publish over HTTP.
//!
//! Only a SHA-256 digest of each key is kept. A presented key is hashed and compared with every configured
//! digest in constant time, without stopping at the first match, so neither the time taken nor the order of the
//! keys tells an attacker anything about how close a guess was. Keys never appear in logs or debug output;
//! each has a `name` for that.

use std::fmt;

use herald_proto::ChannelName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::patterns::{any_matches, Pattern};
use crate::config::{Config, ConfigError};

/// Shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// A key that may publish, optionally only on some channels.
#[derive(Clone)]
pub struct PublisherKey {
    name: String,
    digest: [u8; 32],
    channels: Vec<Pattern>,
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherKey").field("name", &self.name).field("channels", &self.channels).finish()
    }
}

/// Why a configured key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a publisher key must be at least {MIN_KEY_LEN} bytes long and printable ASCII without spaces")]
pub struct WeakKey;

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl PublisherKey {
    /// A key named `name` (for logs) with secret `secret`, limited to `channels` (empty: every channel).
    pub fn new(name: impl Into<String>, secret: &str, channels: Vec<Pattern>) -> Result<Self, WeakKey> {
        // A key travels in a header, so it must be a valid header token.
        if secret.len() < MIN_KEY_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WeakKey);
        }
        Ok(Self { name: name.into(), digest: digest(secret.as_bytes()), channels })
    }

    /// The key's name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the key may publish on `channel`.
    pub fn reaches(&self, channel: &ChannelName) -> bool {
        self.channels.is_empty() || any_matches(&self.channels, channel)
    }
}

/// The publisher keys of `config`; a weak key or a bad channel pattern is refused naming it
/// (`publisher_keys[0]`, `publisher_keys[0].channels`, or the variable that set the keys).
pub fn from_config(config: &Config) -> Result<Vec<PublisherKey>, ConfigError> {
    let from_env = config.sources.get("publisher_keys");
    let mut keys = Vec::with_capacity(config.publisher_keys.len());
    for (i, settings) in config.publisher_keys.iter().enumerate() {
        let at = from_env.cloned().unwrap_or_else(|| format!("publisher_keys[{i}]"));
        let channels = settings
            .channels
            .iter()
            .map(|p| Pattern::new(p).map_err(|e| ConfigError::invalid(format!("{at}.channels"), e.to_string())))
            .collect::<Result<_, _>>()?;
        let key = PublisherKey::new(&settings.name, &settings.key, channels)
            .map_err(|e| ConfigError::invalid(&at, e.to_string()))?;
        keys.push(key);
    }
    Ok(keys)
}

/// The configured key matching `presented`, if any, found in constant time.
pub fn find<'a>(keys: &'a [PublisherKey], presented: &str) -> Option<&'a PublisherKey> {
    let presented = digest(presented.as_bytes());
    let mut found = None;
    for key in keys {
        // `ct_eq` over the whole digest, and no early exit: every key is compared every time.
        if bool::from(key.digest.ct_eq(&presented)) {
            found = Some(key);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str, channels: &[&str]) -> PublisherKey {
        PublisherKey::new(name, secret, channels.iter().map(|p| Pattern::new(p).unwrap()).collect()).unwrap()
    }

    #[test]
    fn the_matching_key_is_found_and_a_wrong_one_is_not() {
        let keys = [key("a", "aaaaaaaaaaaaaaaa", &[]), key("b", "bbbbbbbbbbbbbbbb", &["orders:*"])];
        assert_eq!(find(&keys, "bbbbbbbbbbbbbbbb").map(PublisherKey::name), Some("b"));
        assert!(find(&keys, "bbbbbbbbbbbbbbbc").is_none());
        assert!(find(&keys, "").is_none());
    }

    #[test]
    fn a_limited_key_reaches_only_its_patterns() {
        let limited = key("b", "bbbbbbbbbbbbbbbb", &["orders:*"]);
        assert!(limited.reaches(&ChannelName::new("orders:1").unwrap()));
        assert!(!limited.reaches(&ChannelName::new("chat:1").unwrap()));
        assert!(key("a", "aaaaaaaaaaaaaaaa", &[]).reaches(&ChannelName::new("chat:1").unwrap()));
    }

    #[test]
    fn weak_keys_are_refused() {
        assert_eq!(PublisherKey::new("k", "short", vec![]).unwrap_err(), WeakKey);
        assert_eq!(PublisherKey::new("k", "sixteen chars ok", vec![]).unwrap_err(), WeakKey, "spaces");
    }

    #[test]
    fn the_debug_form_never_shows_the_secret() {
        let shown = format!("{:?}", key("backend", "s3cr3t-s3cr3t-s3cr3t", &[]));
        assert!(shown.contains("backend") && !shown.contains("s3cr3t"), "{shown}");
    }
}

//! Socket ids: `<node>.<n>`, digits only (the SDKs refuse anything but `^\d+\.\d+$`), unique across nodes.
//!
//! `node` is drawn at random when a node starts (9 digits, so two of a hundred nodes share one with a chance of
//! about 5 in a million), `n` counts the node's connections. A socket id travels with every message its socket
//! triggers or excludes (`socket_id` of the HTTP API), so exclusion works on whichever node the socket sits.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The most digits either part may have (a `u64` has 20).
const MAX_DIGITS: usize = 20;

/// A valid socket id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SocketId(Arc<str>);

impl SocketId {
    /// Reads `text` as a socket id: digits, a dot, digits.
    pub fn parse(text: &str) -> Option<Self> {
        let (node, n) = text.split_once('.')?;
        let digits =
            |part: &str| !part.is_empty() && part.len() <= MAX_DIGITS && part.bytes().all(|b| b.is_ascii_digit());
        (digits(node) && digits(n)).then(|| Self(Arc::from(text)))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as shared text, for a message's origin.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Hands out this node's socket ids.
pub struct SocketIds {
    node: u64,
    next: AtomicU64,
}

impl Default for SocketIds {
    fn default() -> Self {
        let random = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
        Self::on_node(100_000_000 + random % 900_000_000)
    }
}

impl SocketIds {
    /// The ids of node `node`.
    pub fn on_node(node: u64) -> Self {
        Self { node, next: AtomicU64::new(1) }
    }

    /// A new id, never handed out before by this node.
    pub fn next(&self) -> SocketId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        SocketId(Arc::from(format!("{}.{n}", self.node)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_digits_dot_digits_and_never_repeat() {
        let ids = SocketIds::default();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert!(SocketId::parse(id.as_str()).is_some(), "{id}");
            assert_eq!(id.as_str().split('.').next().unwrap().len(), 9);
        }
        assert_eq!(SocketIds::on_node(7).next().as_str(), "7.1");
    }

    #[test]
    fn anything_else_is_not_a_socket_id() {
        for bad in ["", "1", "1.", ".1", "1.2.3", "a.1", "1.-2", " 1.2", "1.2 ", &format!("{}.1", "9".repeat(21))] {
            assert!(SocketId::parse(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_sdks_pattern(text in "[0-9.a]{0,12}") {
            let sdk = {
                let parts: Vec<&str> = text.split('.').collect();
                parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            };
            prop_assert_eq!(SocketId::parse(&text).is_some(), sdk);
        }
    }
}

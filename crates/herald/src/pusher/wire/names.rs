//! Pusher channel names and what their prefix makes them.
//!
//! A name is 1–164 of `[-A-Za-z0-9_=@,.;]`; its type comes from its prefix alone (`private-encrypted-…`,
//! `private-…`, `presence-…`, else public), and after that prefix `cache-` makes it a cache channel
//! (`cache-x`, `private-cache-x`, `private-encrypted-cache-x`, `presence-cache-x`). A name that merely contains
//! `private-` further in is public. The one name outside that alphabet is a signed-in user's own
//! `#server-to-user-<id>`, which carries server-to-user events.

use std::fmt;

/// The longest channel name.
pub const MAX_NAME_LEN: usize = 164;
/// The prefix of the server-to-user channel.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel's prefix makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Anyone may subscribe.
    Public,
    /// `private-…`: subscribing needs the app's signature.
    Private,
    /// `private-encrypted-…`: private, and the payload stays encrypted end to end; no client events.
    Encrypted,
    /// `presence-…`: private, with a member list.
    Presence,
}

impl ChannelKind {
    /// Whether subscribing needs a signature.
    pub fn needs_auth(self) -> bool {
        self != ChannelKind::Public
    }

    /// Whether clients may send client events on it.
    pub fn allows_client_events(self) -> bool {
        matches!(self, ChannelKind::Private | ChannelKind::Presence)
    }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameRefusal {
    /// Empty.
    #[error("the channel name is empty")]
    Empty,
    /// Longer than 164 bytes.
    #[error("the channel name is {0} bytes long; at most {MAX_NAME_LEN}")]
    TooLong(usize),
    /// A character outside the alphabet.
    #[error("the channel name contains {0:?}; allowed: ASCII letters, digits and - _ = @ , . ;")]
    BadChar(char),
}

/// A valid Pusher channel name and its kind.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PusherChannel {
    name: String,
    kind: ChannelKind,
    cache: bool,
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_=@,.;".contains(&b)
}

impl PusherChannel {
    /// Validates `name` and reads its kind from its prefix.
    pub fn parse(name: &str) -> Result<Self, NameRefusal> {
        if name.is_empty() {
            return Err(NameRefusal::Empty);
        }
        if let Some(bad) = name.chars().find(|&c| !c.is_ascii() || !name_byte(c as u8)) {
            return Err(NameRefusal::BadChar(bad));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameRefusal::TooLong(name.len()));
        }
        let (kind, rest) = if let Some(rest) = name.strip_prefix("private-encrypted-") {
            (ChannelKind::Encrypted, rest)
        } else if let Some(rest) = name.strip_prefix("private-") {
            (ChannelKind::Private, rest)
        } else if let Some(rest) = name.strip_prefix("presence-") {
            (ChannelKind::Presence, rest)
        } else {
            (ChannelKind::Public, name)
        };
        Ok(Self { name: name.to_owned(), kind, cache: rest.starts_with("cache-") })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// Whether it is a cache channel: a subscriber is sent its last event, or `pusher:cache_miss`.
    pub fn is_cache(&self) -> bool {
        self.cache
    }
}

impl fmt::Display for PusherChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for PusherChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.name, f)
    }
}

/// The user id of a server-to-user channel name (`#server-to-user-<id>`), if it is one.
pub fn server_to_user(name: &str) -> Option<&str> {
    name.strip_prefix(SERVER_TO_USER_PREFIX).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(name: &str) -> (ChannelKind, bool) {
        let channel = PusherChannel::parse(name).unwrap();
        (channel.kind(), channel.is_cache())
    }

    #[test]
    fn the_prefix_alone_makes_the_kind() {
        assert_eq!(kind("orders"), (ChannelKind::Public, false));
        assert_eq!(kind("private-orders"), (ChannelKind::Private, false));
        assert_eq!(kind("private-encrypted-orders"), (ChannelKind::Encrypted, false));
        assert_eq!(kind("presence-room"), (ChannelKind::Presence, false));
        assert_eq!(kind("my-private-orders"), (ChannelKind::Public, false), "containing private- is not enough");
        assert_eq!(kind("presence"), (ChannelKind::Public, false));
    }

    #[test]
    fn cache_follows_the_kind_prefix() {
        assert_eq!(kind("cache-prices"), (ChannelKind::Public, true));
        assert_eq!(kind("private-cache-prices"), (ChannelKind::Private, true));
        assert_eq!(kind("private-encrypted-cache-prices"), (ChannelKind::Encrypted, true));
        assert_eq!(kind("presence-cache-room"), (ChannelKind::Presence, true));
        assert_eq!(kind("prices-cache-x"), (ChannelKind::Public, false));
    }

    #[test]
    fn names_outside_the_alphabet_or_too_long_are_refused() {
        assert_eq!(PusherChannel::parse(""), Err(NameRefusal::Empty));
        assert_eq!(PusherChannel::parse(&"a".repeat(165)), Err(NameRefusal::TooLong(165)));
        assert!(PusherChannel::parse(&"a".repeat(164)).is_ok());
        for bad in ["a b", "a:b", "a/b", "#server-to-user-1", "é", "a\"b"] {
            assert!(matches!(PusherChannel::parse(bad), Err(NameRefusal::BadChar(_))), "{bad}");
        }
        assert!(PusherChannel::parse("a-z_A=Z@0,9.;").is_ok());
    }

    #[test]
    fn the_server_to_user_channel_names_its_user() {
        assert_eq!(server_to_user("#server-to-user-42"), Some("42"));
        assert_eq!(server_to_user("#server-to-user-"), None);
        assert_eq!(server_to_user("server-to-user-42"), None);
    }

    proptest! {
        #[test]
        fn every_valid_name_is_a_herald_channel_name_in_a_namespace(name in "[-A-Za-z0-9_=@,.;]{1,164}") {
            let channel = PusherChannel::parse(&name).unwrap();
            let herald = format!("{}:{}", "n".repeat(crate::config::MAX_APP_NAMESPACE_LEN), channel.as_str());
            prop_assert!(herald_proto::ChannelName::new(&herald).is_ok());
        }

        #[test]
        fn any_text_is_judged_without_panicking(name in ".{0,200}") {
            let _ = PusherChannel::parse(&name);
            let _ = server_to_user(&name);
        }
    }
}

//! Channel and event names: the only strings a client chooses that end up as keys on the server.
//!
//! Both are validated once, at the edge, and then carried as types that cannot hold an invalid name. A channel
//! name's alphabet contains no character that JSON, SSE, URLs or headers would need to escape, which lets the
//! envelope encoder write it verbatim. An event name is Herald's narrow alphabet when Herald's own publishers
//! give it ([`EventName::new`]), or any printable ASCII when another protocol carries it ([`EventName::any`]: a
//! Laravel event such as `App\Events\OrderShipped` through the Pusher API), which the envelope JSON-escapes.

use std::fmt;
use std::sync::Arc;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;
/// Longest event name, in bytes.
pub const MAX_EVENT_LEN: usize = 64;
/// Longest event name another protocol may carry ([`EventName::any`]), in bytes: Pusher's limit.
pub const MAX_ANY_EVENT_LEN: usize = 200;
/// The event name of a message published without one.
pub const DEFAULT_EVENT: &str = "message";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("{kind} name is empty")]
    Empty {
        /// "channel" or "event".
        kind: &'static str,
    },
    /// The name was longer than allowed.
    #[error("{kind} name is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// "channel" or "event".
        kind: &'static str,
        /// The name's length.
        len: usize,
        /// The maximum length.
        max: usize,
    },
    /// The name held a character outside its alphabet.
    #[error("{kind} name contains {found:?} at byte {at}; allowed: {allowed}")]
    BadChar {
        /// "channel" or "event".
        kind: &'static str,
        /// The offending character.
        found: char,
        /// Its byte position.
        at: usize,
        /// The allowed alphabet, for the error message.
        allowed: &'static str,
    },
}

fn validate(
    name: &str,
    kind: &'static str,
    max: usize,
    allowed: &'static str,
    ok: fn(u8) -> bool,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > max {
        return Err(NameError::TooLong { kind, len: name.len(), max });
    }
    if let Some((at, found)) = name.char_indices().find(|&(_, c)| !c.is_ascii() || !ok(c as u8)) {
        return Err(NameError::BadChar { kind, found, at, allowed });
    }
    Ok(())
}

fn channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@' | b'/' | b'=' | b',' | b';')
}

fn event_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

fn printable_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

/// A valid channel name: 1–255 bytes of ASCII letters, digits and `_ - . : @ / = , ;`. Cheap to clone.
///
/// `,` and `;` are there for the Pusher protocol's channel names (`[-A-Za-z0-9_=@,.;]`): neither needs escaping
/// in JSON or SSE, a cursor carries names as bytes, and in a URL both are plain characters of a path segment or
/// a query value (a query is split on `&` only).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate(name, "channel", MAX_CHANNEL_LEN, "ASCII letters, digits and _ - . : @ / = , ;", channel_byte)?;
        Ok(Self(Arc::from(name)))
    }

    /// Whether `name` is a valid channel name, without making one.
    pub fn is_valid(name: &str) -> bool {
        validate(name, "channel", MAX_CHANNEL_LEN, "", channel_byte).is_ok()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, or `None` for the default namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once(':').map(|(ns, _)| ns)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::borrow::Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A valid event name: 1–64 of `[A-Za-z0-9_.:-]` from Herald's publishers, or 1–200 bytes of printable ASCII
/// carried from another protocol.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventName(Arc<str>);

impl EventName {
    /// Validates `name` by Herald's own alphabet (what its publishers may name an event).
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate(name, "event", MAX_EVENT_LEN, "ASCII letters, digits and _ . : -", event_byte)?;
        Ok(Self(Arc::from(name)))
    }

    /// Validates `name` as 1–200 bytes of printable ASCII (space to `~`): the event names another protocol
    /// carries through Herald (Pusher's `App\Events\OrderShipped`, `.order.shipped`, `client-typing`). Such a
    /// name may hold `"` or `\`, so JSON writers escape it ([`EventName::needs_escaping`]); it never holds a line
    /// break, so it is one SSE `event:` line and one header value.
    pub fn any(name: &str) -> Result<Self, NameError> {
        validate(name, "event", MAX_ANY_EVENT_LEN, "printable ASCII", printable_byte)?;
        Ok(Self(Arc::from(name)))
    }

    /// Whether the name holds a character JSON must escape (only names made by [`EventName::any`] can).
    pub fn needs_escaping(&self) -> bool {
        self.0.bytes().any(|b| b == b'"' || b == b'\\')
    }

    /// `message`, the event of a message published without one.
    pub fn default_event() -> Self {
        // One allocation for the process, shared by every message published without an event.
        static DEFAULT: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(DEFAULT_EVENT));
        Self(DEFAULT.clone())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn channel_names_accept_the_documented_alphabet() {
        for ok in ["a", "chat:room1", "user@example.com/inbox", "a=b.c-d_e", &"x".repeat(255)] {
            assert!(ChannelName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn channel_names_refuse_everything_else() {
        assert_eq!(ChannelName::new(""), Err(NameError::Empty { kind: "channel" }));
        assert!(matches!(ChannelName::new(&"x".repeat(256)), Err(NameError::TooLong { len: 256, .. })));
        for bad in ["a b", "a\"b", "a\\b", "é", "a\nb", "a?b", "a#b", "a%2Fb", "a&b", "a+b"] {
            assert!(matches!(ChannelName::new(bad), Err(NameError::BadChar { .. })), "{bad:?}");
        }
    }

    #[test]
    fn pusher_channel_names_are_channel_names() {
        for ok in ["presence-room,1;2", "private-encrypted-a=b@c.d", "cache-x_y-z"] {
            assert!(ChannelName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn namespace_is_the_part_before_the_first_colon() {
        assert_eq!(ChannelName::new("chat:room:1").unwrap().namespace(), Some("chat"));
        assert_eq!(ChannelName::new("dashboard").unwrap().namespace(), None);
        assert_eq!(ChannelName::new(":x").unwrap().namespace(), Some(""));
    }

    #[test]
    fn event_names_follow_their_alphabet() {
        assert!(EventName::new("newTopSeller").is_ok());
        assert!(EventName::new("a.b:c-d_e").is_ok());
        assert!(EventName::new(&"e".repeat(64)).is_ok());
        assert!(EventName::new(&"e".repeat(65)).is_err());
        assert!(EventName::new("a/b").is_err());
        assert!(EventName::new("").is_err());
    }

    #[test]
    fn any_event_names_are_printable_ascii_up_to_200_bytes() {
        for ok in ["App\\Events\\OrderShipped", ".order.shipped", "a \"quoted\" name", &"e".repeat(200)] {
            assert!(EventName::any(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a\nb", "a\tb", "é", "\u{7f}"] {
            assert!(EventName::any(bad).is_err(), "{bad:?}");
        }
        assert!(EventName::any(&"e".repeat(201)).is_err());
        assert!(EventName::any("App\\X").unwrap().needs_escaping());
        assert!(!EventName::any("client-typing").unwrap().needs_escaping());
    }

    proptest! {
        #[test]
        fn any_string_is_validated_without_panicking(s in ".{0,300}") {
            let _ = ChannelName::new(&s);
            let _ = EventName::new(&s);
            let _ = EventName::any(&s);
        }

        #[test]
        fn herald_event_names_are_also_any_event_names(s in "[A-Za-z0-9_.:-]{1,64}") {
            prop_assert!(EventName::any(&s).is_ok());
            prop_assert!(!EventName::new(&s).unwrap().needs_escaping());
        }

        #[test]
        fn valid_channel_names_need_no_json_escaping(s in "[A-Za-z0-9_.:@/=,;-]{1,255}") {
            let name = ChannelName::new(&s).unwrap();
            prop_assert_eq!(serde_json::to_string(name.as_str()).unwrap(), format!("\"{s}\""));
        }
    }
}

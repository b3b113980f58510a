//! Channel patterns: `orders:*`, `chat:room1`, `*`.
//!
//! Publisher keys and subscriber tokens say which channels they reach with a list of patterns. A pattern is a
//! channel name in which `*` stands for any run of characters (none included), so `orders:*` reaches
//! `orders:42` and `orders:42:items`, and `*` reaches every channel. Nothing else is special: a pattern without
//! `*` reaches exactly the channel it names. Patterns are checked when they are read (config file or token), so
//! matching cannot fail.

use std::fmt;

use herald_proto::channel::MAX_CHANNEL_LEN;
use herald_proto::ChannelName;

/// Longest pattern, in bytes: a channel name's length plus room for a few `*`.
pub const MAX_PATTERN_LEN: usize = MAX_CHANNEL_LEN + 16;

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Empty, or longer than [`MAX_PATTERN_LEN`].
    #[error("a channel pattern is 1 to {MAX_PATTERN_LEN} bytes long")]
    Length,
    /// A character that is neither in a channel name nor `*`.
    #[error("channel pattern {0:?} may hold only a channel name's characters and *")]
    BadChar(String),
}

/// A checked channel pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern(Box<str>);

fn pattern_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@' | b'/' | b'=' | b'*')
}

impl Pattern {
    /// Checks `text`.
    pub fn new(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() || text.len() > MAX_PATTERN_LEN {
            return Err(PatternError::Length);
        }
        if !text.bytes().all(pattern_byte) {
            return Err(PatternError::BadChar(text.to_string()));
        }
        Ok(Self(text.into()))
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `channel` is one of the channels this pattern reaches.
    pub fn matches(&self, channel: &ChannelName) -> bool {
        glob(self.0.as_bytes(), channel.as_str().as_bytes())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Whether any of `patterns` reaches `channel`.
pub fn any_matches(patterns: &[Pattern], channel: &ChannelName) -> bool {
    patterns.iter().any(|p| p.matches(channel))
}

/// `*`-only glob matching, iterative with one backtrack point: O(pattern × text) at worst, no recursion, so no
/// pattern can make it slow or overflow the stack.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reaches(pattern: &str, channel: &str) -> bool {
        Pattern::new(pattern).unwrap().matches(&ChannelName::new(channel).unwrap())
    }

    #[test]
    fn a_pattern_without_a_star_reaches_exactly_its_channel() {
        assert!(reaches("orders:42", "orders:42"));
        assert!(!reaches("orders:42", "orders:421"));
        assert!(!reaches("orders:42", "orders:4"));
    }

    #[test]
    fn a_star_reaches_any_run_of_characters() {
        assert!(reaches("orders:*", "orders:42"));
        assert!(!reaches("orders:*", "orders"));
        assert!(reaches("orders:*", "orders:42:items"));
        assert!(!reaches("orders:*", "ordersX42"));
        assert!(reaches("*", "anything/at@all"));
        assert!(reaches("chat:*:mods", "chat:room1:mods"));
        assert!(!reaches("chat:*:mods", "chat:room1:users"));
        assert!(reaches("a*b*c", "aXXbYYc"));
        assert!(reaches("a**", "a"));
    }

    #[test]
    fn patterns_are_checked_when_read() {
        assert_eq!(Pattern::new(""), Err(PatternError::Length));
        assert_eq!(Pattern::new(&"x".repeat(MAX_PATTERN_LEN + 1)), Err(PatternError::Length));
        assert!(matches!(Pattern::new("orders?"), Err(PatternError::BadChar(_))));
        assert!(matches!(Pattern::new("a b"), Err(PatternError::BadChar(_))));
        assert!(Pattern::new("user@example.com/*").is_ok());
    }

    /// The obvious recursive definition, to check the iterative one against.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
            (Some(a), Some(b)) if a == b => reference(&p[1..], &t[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_the_recursive_definition(p in "[ab*]{0,8}", t in "[ab]{0,10}") {
            prop_assert_eq!(glob(p.as_bytes(), t.as_bytes()), reference(p.as_bytes(), t.as_bytes()));
        }
    }
}

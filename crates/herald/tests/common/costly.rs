//! The costliest requests of each shape a client can send before any credential is checked, at the largest size
//! the server reads (docs/SECURITY.md, bad-input table). Shared by `tests/bad_input_cost.rs`, which bounds their
//! cost over real sockets, and `benches/bad_input.rs`, which measures it.

// Shared by a test and a bench, each using part of it; a failed unwrap is a failed test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use herald_proto::{ChannelName, Cursor, Position};

/// The longest request target the server reads.
pub const MAX_URL: usize = 65_534;
/// The largest request head the server reads.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// Short distinct channel names: `a`, `b`, …, `ba`, …
pub fn name(mut i: usize) -> String {
    let mut name = String::new();
    loop {
        name.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return name;
        }
    }
}

/// A cursor naming the channels `name(i)` for each `i` of `channels`.
pub fn cursor_of(channels: std::ops::Range<usize>) -> String {
    let mut cursor = Cursor::new();
    for i in channels {
        cursor.set(ChannelName::new(&name(i)).unwrap(), Position::new(1, 1));
    }
    cursor.encode()
}

/// `base` followed by `&{param}` for as many params as fit in the longest URL.
fn fill(base: &str, params: impl Iterator<Item = String>) -> String {
    let mut url = base.to_string();
    for param in params {
        if url.len() + 1 + param.len() > MAX_URL {
            break;
        }
        url.push('&');
        url.push_str(&param);
    }
    url
}

/// An anonymous `GET /v1/poll` naming as many distinct channels (`{prefix}{name}`) as the URL holds.
pub fn many_channels(prefix: &str) -> String {
    fill("/v1/poll?limit=1", (0..).map(|i| format!("channel={prefix}{}", name(i))))
}

/// A poll of the channel `a` with as many `since` cursors of `per_cursor` distinct channels each as the URL holds.
pub fn many_cursors(per_cursor: usize) -> String {
    let cursors = (0..).map(move |k| format!("since={}", cursor_of(k * per_cursor..(k + 1) * per_cursor)));
    fill("/v1/poll?channel=a", cursors)
}

/// An `If-None-Match` of 50 ETags, each a cursor of 1024 channels (the channel `a` among them), under `MAX_HEAD`.
pub fn many_etags() -> String {
    let tag = format!("\"{}\"", cursor_of(0..1024));
    let tags = vec![tag; 50].join(", ");
    assert!(tags.len() < MAX_HEAD - 1024);
    tags
}

//! Transports: each module adapts the hub to one way of getting messages to a browser.
//!
//! - `latest`: the newest value of a channel as a plain JSON document, with ETags (short and long polling of
//!   pages written for a plain JSON endpoint);
//! - `poll`: every message after a cursor, for one or several channels (short and long polling);
//! - `sse`: Server-Sent Events;
//! - `ws`: WebSocket, both directions.
//!
//! They share how a subscription's start is chosen, here.

pub mod latest;
pub mod poll;
pub mod sse;
pub mod ws;

use herald_proto::{ChannelName, Cursor};

use crate::engine::Start;

/// Where a channel's subscription starts: a cursor naming the channel wins, then `since=latest`, then
/// `last=N`, then the transport's default.
pub fn start_for(
    channel: &ChannelName,
    cursor: Option<&Cursor>,
    latest: bool,
    last: Option<u64>,
    default: Start,
) -> Start {
    if let Some(position) = cursor.and_then(|c| c.get(channel)) {
        Start::After(position)
    } else if latest {
        Start::Now
    } else if let Some(n) = last {
        if n == 0 {
            Start::Now
        } else {
            Start::Newest(n.min(u32::MAX.into()) as usize)
        }
    } else {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::Position;

    #[test]
    fn a_cursor_wins_over_latest_and_last() {
        let a = ChannelName::new("a").unwrap();
        let b = ChannelName::new("b").unwrap();
        let cursor = Cursor::single(a.clone(), Position::new(3, 4));
        assert_eq!(start_for(&a, Some(&cursor), true, Some(5), Start::Now), Start::After(Position::new(3, 4)));
        assert_eq!(start_for(&b, Some(&cursor), true, Some(5), Start::Oldest), Start::Now);
        assert_eq!(start_for(&b, Some(&cursor), false, Some(5), Start::Now), Start::Newest(5));
        assert_eq!(start_for(&b, None, false, Some(0), Start::Oldest), Start::Now);
        assert_eq!(start_for(&b, None, false, None, Start::Oldest), Start::Oldest);
    }
}

//! Transports: each module adapts the hub to one way of getting messages to a browser.
//!
//! - `latest`: the newest value of a channel as a plain JSON document, with ETags (short and long polling of
//!   pages written for a plain JSON endpoint);
//! - `poll`: every message after a cursor, for one or several channels (short and long polling);
//! - `sse`: Server-Sent Events;
//! - `ws`: WebSocket, both directions.
//!
//! They share how a subscription's start is chosen, how many channels a request may name, and when a stream
//! that relies on a token must end, here.

pub mod latest;
pub mod poll;
pub mod sse;
pub mod ws;

use std::net::IpAddr;
use std::time::Duration;

use herald_proto::{ChannelName, Cursor};
use tokio::time::Instant;

use crate::auth::{now_unix, Claims};
use crate::error::ApiError;
use crate::http::query::Query;
use crate::http::AppState;
use crate::hub::Start;
use crate::refusal::Refusal;

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

/// Every `channel` of a request, at most `max_channels_per_request`; more is refused and counted.
pub(crate) fn requested_channels(state: &AppState, query: &Query, ip: IpAddr) -> Result<Vec<ChannelName>, ApiError> {
    let max = state.hub.config().max_channels_per_request;
    query.channels(max).inspect_err(|err| {
        if err.code == "too_many_channels" {
            state.limits.refused(Refusal::ChannelsPerRequest, || format!("{ip}: more than {max} channels"));
        }
    })
}

/// When a stream that relies on `claims` must end: when its token stops being accepted, on the runtime's clock
/// (so tests can move it).
pub(crate) fn token_deadline(state: &AppState, claims: &Claims) -> Instant {
    let left = state.auth.valid_until(claims).saturating_sub(now_unix());
    Instant::now() + Duration::from_secs(left)
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

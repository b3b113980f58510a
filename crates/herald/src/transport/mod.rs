//! Transports: each module adapts the hub to one way of getting messages to a browser.
//!
//! - `latest`: the newest value of a channel as a plain JSON document, with ETags (short and long polling of
//!   pages written for a plain JSON endpoint);
//! - `poll`: every message after a cursor, for one or several channels (short and long polling);
//! - `sse`: Server-Sent Events;
//! - `ws`: WebSocket, both directions.
//!
//! They share how a subscription's start is chosen, how many channels a request may name, when what is delivered
//! under a token must end (a stream, a WebSocket subscription, a held poll: the instant the token stops being
//! accepted), and who is a member of a channel's presence, here.

pub mod latest;
pub mod poll;
pub mod sse;
pub mod ws;

use std::net::IpAddr;
use std::time::SystemTime;

use herald_proto::{ChannelName, Cursor};
use tokio::time::Instant;

use crate::auth::{AuthError, Claims, TokenError};
use crate::error::ApiError;
use crate::http::query::Query;
use crate::http::AppState;
use crate::hub::{EventKind, LifecycleEvent, PresenceError, Start, Subscription};
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

/// Makes the subscription's user a member of `channel` when the channel's namespace has presence and the token
/// names a user (`sub`, presenting its `info` claim); otherwise the subscriber is not a member, and this does
/// nothing. `channel` must be subscribed.
pub(crate) async fn present(
    state: &AppState,
    subscription: &mut Subscription,
    channel: &ChannelName,
    claims: Option<&Claims>,
) -> Result<(), PresenceError> {
    let Some(claims) = claims.filter(|_| state.hub.has_presence(channel)) else { return Ok(()) };
    let Some(user) = claims.sub.as_deref() else { return Ok(()) };
    let member = crate::hub::member(user, claims.info.as_deref(), state.hub.config().max_presence_info_bytes)?;
    subscription.join(channel, &member).await.map(|_| ())
}

/// Tells webhooks of a cache miss: a subscription that asked for the newest messages of `channel` (`last`, without
/// a cursor) found none.
pub(crate) fn note_cache_miss(state: &AppState, channel: &ChannelName, start: Start, replayed: usize) {
    if matches!(start, Start::Newest(_)) && replayed == 0 {
        let now = herald_proto::time::now_millis();
        state.webhooks.emit(LifecycleEvent::new(EventKind::CacheMiss, channel.clone(), now));
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

/// When a stream that relies on `claims` must end: the instant its token stops being accepted, to the
/// sub-second, on the runtime's clock (so tests can move it).
pub(crate) fn token_deadline(state: &AppState, claims: &Claims) -> Instant {
    deadline_at(state.auth.refused_from(claims), SystemTime::now(), Instant::now())
}

/// The instant of the runtime's clock that is `refused_from` on the wall clock, both clocks read at once.
fn deadline_at(refused_from: SystemTime, wall_now: SystemTime, now: Instant) -> Instant {
    now + refused_from.duration_since(wall_now).unwrap_or_default()
}

/// The token a request reads private channels under, and when it stops being accepted: a held poll waits no
/// longer, and answers nothing taken after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenDeadline {
    exp: u64,
    at: Instant,
}

impl TokenDeadline {
    /// The deadline of a request that reads `channels` with `claims`: none when no channel needs a token, since a
    /// token given for public channels only is checked but not relied on (as on SSE).
    pub(crate) fn of(state: &AppState, claims: Option<&Claims>, channels: &[ChannelName]) -> Option<Self> {
        let claims = claims.filter(|_| channels.iter().any(|c| state.auth.is_private(c)))?;
        Some(Self { exp: claims.exp, at: token_deadline(state, claims) })
    }

    /// The instant itself.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// `Err(401 token_expired)`, counted like any refused token, once the deadline has come.
    pub(crate) fn check(&self, state: &AppState) -> Result<(), ApiError> {
        if Instant::now() < self.at {
            return Ok(());
        }
        Err(state.auth.refused(AuthError::Token(TokenError::Expired { exp: self.exp })).into())
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

    #[test]
    fn a_token_deadline_is_exact_to_the_sub_second() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_700);
        let refused_from = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_002);
        assert_eq!(deadline_at(refused_from, wall, now), now + std::time::Duration::from_millis(1300));
        assert_eq!(deadline_at(wall, refused_from, now), now, "a deadline already past is now");
    }
}

//! The cluster's log of lifecycle events, the source webhooks are delivered from.
//!
//! A lifecycle event is something a backend may want to hear of: a channel occupied or vacated, a member added
//! or removed, a client's publish, a subscription that found no cached message. Transitions are appended by the
//! engine itself, in the same atomic step that observes them (a Lua script with Redis, under the presence lock in
//! memory), so each is logged exactly once by the cluster and a channel's events are in the order they happened;
//! the rest is appended with [`EventLog::append`]. The log keeps the newest `capacity` entries: a reader further
//! behind loses the oldest, and sees how many from the gap in the entries' numbers ([`LogId::n`]).
//!
//! Readers (webhook endpoints) keep their own position in the log ([`EventLog::ack`]), so a node that takes
//! over delivery goes on where the last one stopped: at least once, in order. One node at a time delivers
//! ([`EventLog::lead`]).

pub mod memory;

use std::time::Duration;

use bytes::Bytes;
use herald_proto::ChannelName;

use super::presence::Transition;
use super::{BoxFuture, EngineError};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A channel's first subscriber arrived.
    ChannelOccupied,
    /// A channel's last subscriber left.
    ChannelVacated,
    /// A user became a member of a channel's presence.
    MemberAdded,
    /// A user stopped being a member.
    MemberRemoved,
    /// A client published over its connection.
    ClientEvent,
    /// A subscription asked for the newest message and the channel had none.
    CacheMiss,
}

impl EventKind {
    /// Every kind, in the order documentation lists them.
    pub const ALL: [EventKind; 6] = [
        EventKind::ChannelOccupied,
        EventKind::ChannelVacated,
        EventKind::MemberAdded,
        EventKind::MemberRemoved,
        EventKind::ClientEvent,
        EventKind::CacheMiss,
    ];

    /// The name webhooks use (`channel_occupied` …), the same in Herald's format and Pusher's.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ChannelOccupied => "channel_occupied",
            EventKind::ChannelVacated => "channel_vacated",
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::ClientEvent => "client_event",
            EventKind::CacheMiss => "cache_miss",
        }
    }

    /// The kind of a name.
    pub fn from_name(name: &str) -> Option<Self> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// What happened.
    pub kind: EventKind,
    /// Where.
    pub channel: ChannelName,
    /// When it was observed, in milliseconds since 1970.
    pub time_ms: u64,
    /// The member (`member_added`, `member_removed`), or the publishing user (`client_event`), if known.
    pub user_id: Option<String>,
    /// The member's info, as JSON text (`member_added`, `member_removed`).
    pub user_info: Option<Bytes>,
    /// The event name a client published (`client_event`).
    pub event: Option<String>,
    /// The data a client published (`client_event`): JSON text for Herald's protocol, any text for Pusher's.
    pub data: Option<String>,
    /// The publishing connection (`client_event`), for protocols that name connections (Pusher's `socket_id`).
    pub socket_id: Option<String>,
}

impl LifecycleEvent {
    /// An event with nothing but its kind, channel and time.
    pub fn new(kind: EventKind, channel: ChannelName, time_ms: u64) -> Self {
        Self { kind, channel, time_ms, user_id: None, user_info: None, event: None, data: None, socket_id: None }
    }

    /// The event of a transition, observed at `time_ms`.
    pub fn of(transition: &Transition, time_ms: u64) -> Self {
        let member = |kind, channel: &ChannelName, member: &super::presence::Member| Self {
            user_id: Some(member.user_id.clone()),
            user_info: Some(member.user_info.clone()),
            ..Self::new(kind, channel.clone(), time_ms)
        };
        match transition {
            Transition::Occupied(channel) => Self::new(EventKind::ChannelOccupied, channel.clone(), time_ms),
            Transition::Vacated(channel) => Self::new(EventKind::ChannelVacated, channel.clone(), time_ms),
            Transition::MemberAdded(channel, m) => member(EventKind::MemberAdded, channel, m),
            Transition::MemberRemoved(channel, m) => member(EventKind::MemberRemoved, channel, m),
        }
    }
}

/// An entry's place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogId {
    /// Unique in the cluster and increasing: what receivers deduplicate on.
    pub id: String,
    /// The entry's number: one more than the entry before it, so a gap is the count of entries trimmed unread.
    pub n: u64,
}

/// An entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place.
    pub id: LogId,
    /// The event.
    pub event: LifecycleEvent,
}

/// The cluster's log of lifecycle events.
pub trait EventLog: Send + Sync + 'static {
    /// Starts logging (the engine's transitions, and what [`EventLog::append`] is given), keeping the newest
    /// `capacity` entries. Until then nothing is logged, so a deployment without webhooks pays nothing.
    fn enable(&self, capacity: usize);

    /// Appends an event.
    fn append(&self, event: LifecycleEvent) -> BoxFuture<'_, Result<(), EngineError>>;

    /// The entries after `after` (from the oldest retained when `None`), oldest first, at most `limit`.
    fn read<'a>(&'a self, after: Option<&'a LogId>, limit: usize) -> BoxFuture<'a, Result<Vec<Entry>, EngineError>>;

    /// The newest entry's place, if any.
    fn head(&self) -> BoxFuture<'_, Result<Option<LogId>, EngineError>>;

    /// Where `reader` stands: the last entry it has handled.
    fn acked<'a>(&'a self, reader: &'a str) -> BoxFuture<'a, Result<Option<LogId>, EngineError>>;

    /// `reader` has handled everything up to `id`.
    fn ack<'a>(&'a self, reader: &'a str, id: &'a LogId) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Makes `node` the one node that delivers for `ttl`, or keeps it so; false when another node does.
    fn lead<'a>(&'a self, node: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, EngineError>>;

    /// Completes once an entry after `after` may be there, or after a while (a second at most).
    fn changed<'a>(&'a self, after: Option<&'a LogId>) -> BoxFuture<'a, ()>;
}

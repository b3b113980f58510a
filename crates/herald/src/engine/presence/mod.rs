//! Presence and occupancy: who is in a channel, and whether anyone listens to it, across every node.
//!
//! This is state of its own, beside the histories: a [`PresenceStore`] keeps, per channel, the connections that
//! present a user, the members they make (one per user, however many connections), and each node's count of
//! subscribers. Each engine has one (`memory.rs` here for one process; `redis/presence/` across nodes). The hub
//! drives it (it decides which connection joins, applies the grace before a leave, and reports its subscriber
//! counts); the store answers with members and tells a [`PresenceListener`] two kinds of news:
//!
//! - a [`PresenceEvent`] (a member joined or left), on every node that has subscribers of the channel, for the
//!   hub to hand to the subscribers that follow the channel's presence;
//! - a [`Transition`] (a channel became occupied or vacated, a member was added or removed), on exactly one node
//!   of the cluster, the one whose atomic step observed it, for webhooks.
//!
//! Every change of a channel's members has a sequence number that increases with each change ([`Members::seq`],
//! [`PresenceEvent::seq`]): a subscriber that read the members at `seq` skips the events up to it, so the list
//! and the events that follow join without a gap or a repeat, as a cursor joins history and live messages.

pub mod memory;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use herald_proto::presence::MemberText;
use herald_proto::ChannelName;

use super::{BoxFuture, EngineError};

/// One member of a channel: a user, however many connections present it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user's id: a token's `sub`, or a Pusher `user_id`.
    pub user_id: String,
    /// What the user presents about itself, as minified JSON text (`null` when nothing).
    pub user_info: Bytes,
}

impl Member {
    /// The member as the wire shows it.
    pub fn text(&self) -> MemberText<'_> {
        MemberText { user_id: &self.user_id, user_info: &self.user_info }
    }
}

/// A channel's members at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// The members, sorted by user id.
    pub members: Vec<Member>,
    /// The channel's presence sequence when they were read: events up to it are already in the list.
    pub seq: u64,
}

impl Members {
    /// How many members.
    pub fn count(&self) -> usize {
        self.members.len()
    }

    /// The members as the wire shows them.
    pub fn texts(&self) -> Vec<MemberText<'_>> {
        self.members.iter().map(Member::text).collect()
    }

    /// Sorts by user id (stores return them in any order).
    pub(crate) fn sorted(mut self) -> Self {
        self.members.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        self
    }
}

/// What joining a channel's presence gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The members right after the join, the joining user included.
    pub members: Members,
    /// Whether the user was not a member anywhere in the cluster before: its join is announced.
    pub new: bool,
}

/// Whether a member joined or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's first connection joined.
    Join,
    /// The user's last connection left (after the grace).
    Leave,
}

impl PresenceChange {
    /// `join` or `leave`, as frames and announcements spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceChange::Join => "join",
            PresenceChange::Leave => "leave",
        }
    }
}

/// A member joined or left a channel.
#[derive(Debug)]
pub struct PresenceEvent {
    /// The channel.
    pub channel: ChannelName,
    /// Joined or left.
    pub change: PresenceChange,
    /// Who.
    pub member: Member,
    /// The channel's presence sequence after this change.
    pub seq: u64,
    ws_frame: OnceLock<Bytes>,
    sse_body: OnceLock<Bytes>,
    pusher_frame: OnceLock<Option<Bytes>>,
}

impl PresenceEvent {
    /// An event, shared by every subscriber that receives it.
    pub fn new(channel: ChannelName, change: PresenceChange, member: Member, seq: u64) -> Arc<Self> {
        let (ws_frame, sse_body, pusher_frame) = (OnceLock::new(), OnceLock::new(), OnceLock::new());
        Arc::new(Self { channel, change, member, seq, ws_frame, sse_body, pusher_frame })
    }

    /// The event's WebSocket frame, encoded once for all its subscribers by `encode`.
    pub fn ws_frame(&self, encode: impl FnOnce(&Self) -> Bytes) -> Bytes {
        self.ws_frame.get_or_init(|| encode(self)).clone()
    }

    /// The event's SSE block, encoded once for all its subscribers by `encode`.
    pub fn sse_body(&self, encode: impl FnOnce(&Self) -> Bytes) -> Bytes {
        self.sse_body.get_or_init(|| encode(self)).clone()
    }

    /// The event's Pusher frame (`member_added`, `member_removed`), encoded once for all its subscribers by
    /// `encode`; `None` for a channel Pusher clients cannot have.
    pub fn pusher_frame(&self, encode: impl FnOnce(&Self) -> Option<Bytes>) -> Option<Bytes> {
        self.pusher_frame.get_or_init(|| encode(self)).clone()
    }
}

/// A change of the cluster's state, observed by exactly one node: what webhooks report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The channel's first subscriber, across the cluster, arrived.
    Occupied(ChannelName),
    /// The channel's last subscriber, across the cluster, left (after the grace).
    Vacated(ChannelName),
    /// A user became a member of the channel.
    MemberAdded(ChannelName, Member),
    /// A user stopped being a member of the channel.
    MemberRemoved(ChannelName, Member),
}

/// How many listen to a channel, across the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Subscriptions (WebSockets, SSE streams, held long polls) following the channel on every node.
    pub subscribers: u64,
    /// Members of its presence (users, not connections).
    pub members: u64,
}

impl Occupancy {
    /// Whether anyone listens.
    pub fn occupied(&self) -> bool {
        self.subscribers > 0
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinError {
    /// The channel has `max` members and the user is not one of them.
    #[error("the channel has {max} members, the most its namespace allows")]
    Full {
        /// The namespace's `presence_max_members`.
        max: usize,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Receives what a [`PresenceStore`] learns.
pub trait PresenceListener: Send + Sync + 'static {
    /// A member joined or left: hand it to this node's followers of the channel's presence. Called in the order of
    /// the channel's changes.
    fn event(&self, event: &Arc<PresenceEvent>);

    /// A change of the cluster's state that this node observed (and no other did).
    fn transition(&self, transition: Transition);
}

/// Where a store sends what it learns; set once, by the hub.
#[derive(Default)]
pub struct ListenerSlot(OnceLock<Arc<dyn PresenceListener>>);

impl ListenerSlot {
    /// Sets the listener; a second one is ignored.
    pub fn set(&self, listener: Arc<dyn PresenceListener>) {
        let _ = self.0.set(listener);
    }

    /// Passes an event on.
    pub fn event(&self, event: &Arc<PresenceEvent>) {
        if let Some(listener) = self.0.get() {
            listener.event(event);
        }
    }

    /// Passes a transition on.
    pub fn transition(&self, transition: Transition) {
        if let Some(listener) = self.0.get() {
            listener.transition(transition);
        }
    }
}

/// A store of channels' members and subscriber counts.
///
/// `connection` is a number the hub gives each join, unique on this node: one connection's presence on one
/// channel. A join followed by its leave, in that order, is all the hub ever asks for a connection.
pub trait PresenceStore: Send + Sync + 'static {
    /// Where events and transitions go.
    fn listen(&self, listener: Arc<dyn PresenceListener>);

    /// `connection` presents `member` on `channel`; the user becomes a member unless it is one already, or the
    /// channel already has `max_members` others.
    fn join<'a>(
        &'a self,
        channel: &'a ChannelName,
        connection: u64,
        member: &'a Member,
        max_members: usize,
    ) -> BoxFuture<'a, Result<Joined, JoinError>>;

    /// `connection` leaves `channel` now; its user leaves too if it was its last connection in the cluster.
    fn leave<'a>(&'a self, channel: &'a ChannelName, connection: u64) -> BoxFuture<'a, Result<(), EngineError>>;

    /// The members of `channel`.
    fn members<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, Result<Members, EngineError>>;

    /// This node has `count` subscribers of `channel` now.
    fn set_subscribers<'a>(&'a self, channel: &'a ChannelName, count: u64) -> BoxFuture<'a, Result<(), EngineError>>;

    /// How many listen to `channel`, across the cluster.
    fn occupancy<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, Result<Occupancy, EngineError>>;

    /// Occupied channels whose name starts with `prefix`, in name order, at most `limit`, each with its occupancy.
    fn occupied<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(ChannelName, Occupancy)>, EngineError>>;

    /// The node stops: what it holds in a shared store goes after the grace, as if its connections left.
    fn retire(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

//! Presence, the hub's side: who may be a member, when a leave happens, and where the engine's news goes.
//!
//! A connection becomes a member through its [`Subscription`](super::Subscription) (`join`, on a channel it is
//! subscribed to) and stops being one when it leaves, unsubscribes or ends; the leave reaches the engine's
//! [`PresenceStore`] only after `presence_grace`, so a page that reloads (its new connection joins before the old
//! one's leave) is neither a leave nor a join. Changes of members come back from the store on every node with
//! subscribers and go to the subscriptions that follow the channel's presence (a registry of their own, like
//! the subscribers of messages); transitions (occupied, vacated, member added or removed), observed by one node
//! of the cluster, go to whoever registered with [`Hub::on_transition`] (webhooks).
//!
//! Which channels have presence is the transports' policy (`presence = true` in a namespace for Herald's own
//! protocol; another protocol may decide by the channel's name): the hub serves any channel it is asked about.

use std::sync::{Arc, PoisonError, RwLock};

use herald_proto::json::minify;
use herald_proto::ChannelName;

use super::{Hub, HubError};
use crate::engine::presence::{
    JoinError, Member, Members, Occupancy, PresenceEvent, PresenceListener, PresenceStore, Transition,
};
use crate::engine::EngineError;

/// The longest user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 128;

/// Why a subscription could not join or follow a channel's presence.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PresenceError {
    /// The subscription does not follow the channel (or only reads: a short poll).
    #[error("not subscribed to {0}: subscribe first")]
    NotSubscribed(ChannelName),
    /// The subscription is a member of the channel already.
    #[error("already a member of {0}")]
    AlreadyJoined(ChannelName),
    /// The channel has as many members as its namespace allows, and the user is not one of them.
    #[error("{channel} has {max} members, the most its namespace allows")]
    Full {
        /// The channel.
        channel: ChannelName,
        /// Its namespace's `presence_max_members`.
        max: usize,
    },
    /// The user id is empty, too long, or has a control character.
    #[error("invalid user id: {0}")]
    InvalidUserId(String),
    /// The user info is not JSON or is too large.
    #[error("invalid user info: {0}")]
    InvalidUserInfo(String),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl PresenceError {
    /// The stable error code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            PresenceError::NotSubscribed(_) => "not_subscribed",
            PresenceError::AlreadyJoined(_) => "already_joined",
            PresenceError::Full { .. } => "presence_full",
            PresenceError::InvalidUserId(_) => "invalid_user_id",
            PresenceError::InvalidUserInfo(_) => "invalid_user_info",
            PresenceError::Engine(_) => "engine_unavailable",
        }
    }
}

impl From<HubError> for PresenceError {
    fn from(err: HubError) -> Self {
        match err {
            HubError::Engine(err) => PresenceError::Engine(err),
        }
    }
}

/// Called with every transition this node observes.
pub type TransitionHook = Arc<dyn Fn(&Transition) + Send + Sync>;

/// Where the engine's presence news goes on this node.
pub(super) struct Relay {
    /// The fan-out to the followers of channels' presence, in order with the channels' messages.
    pub(super) fanout: Arc<super::fanout::FanOut>,
    pub(super) hooks: RwLock<Vec<TransitionHook>>,
}

impl PresenceListener for Relay {
    fn event(&self, event: &Arc<PresenceEvent>) {
        self.fanout.presence(event);
    }

    fn transition(&self, transition: Transition) {
        for hook in self.hooks.read().unwrap_or_else(PoisonError::into_inner).iter() {
            hook(&transition);
        }
    }
}

/// A member as presented: `user_id` checked, `user_info` (JSON text, `None`: `null`) checked against
/// `max_info_bytes` and minified.
pub fn member(user_id: &str, user_info: Option<&str>, max_info_bytes: usize) -> Result<Member, PresenceError> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        let message = format!("a user id has 1 to {MAX_USER_ID_BYTES} bytes");
        return Err(PresenceError::InvalidUserId(message));
    }
    if user_id.chars().any(char::is_control) {
        return Err(PresenceError::InvalidUserId("a user id has no control character".into()));
    }
    let info = match user_info {
        None => b"null".to_vec(),
        Some(text) => {
            if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
                return Err(PresenceError::InvalidUserInfo("the user info is not JSON".into()));
            }
            minify(text.as_bytes())
        }
    };
    if info.len() > max_info_bytes {
        let message = format!("the user info is larger than {max_info_bytes} bytes (max_presence_info_bytes)");
        return Err(PresenceError::InvalidUserInfo(message));
    }
    Ok(Member { user_id: user_id.to_owned(), user_info: info.into() })
}

impl Hub {
    /// Whether `channel` has presence for Herald's own protocol: its namespace has `presence = true`, or it is a
    /// Pusher app's `presence-…` channel (so herald.js sees the same members as pusher-js).
    pub fn has_presence(&self, channel: &ChannelName) -> bool {
        self.config.has_presence(channel)
    }

    /// The members of `channel`, across the cluster.
    pub async fn members(&self, channel: &ChannelName) -> Result<Members, HubError> {
        Ok(self.presence.members(channel).await?)
    }

    /// How many listen to `channel`, across the cluster. A channel stays occupied for `presence_grace` after its
    /// last subscriber left.
    pub async fn occupancy(&self, channel: &ChannelName) -> Result<Occupancy, HubError> {
        Ok(self.presence.occupancy(channel).await?)
    }

    /// Occupied channels whose name starts with `prefix`, in name order, at most `limit`.
    pub async fn occupied(&self, prefix: &str, limit: usize) -> Result<Vec<(ChannelName, Occupancy)>, HubError> {
        Ok(self.presence.occupied(prefix, limit).await?)
    }

    /// Calls `hook` with every transition this node observes (each transition of the cluster is observed by one
    /// node). The hook runs where the engine observed it: it must not wait.
    pub fn on_transition(&self, hook: TransitionHook) {
        self.relay.hooks.write().unwrap_or_else(PoisonError::into_inner).push(hook);
    }

    /// Tells the engine that this node stops, so that its members leave after the grace even if it cannot say
    /// goodbye to each.
    pub async fn retire(&self) {
        self.presence.retire().await;
    }

    /// A number for one connection's presence on one channel.
    pub(super) fn next_presence_id(&self) -> u64 {
        self.next_presence.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Presents `member` as connection `id` on `channel`.
    pub(super) async fn join(
        &self,
        channel: &ChannelName,
        id: u64,
        member: &Member,
    ) -> Result<super::Joined, PresenceError> {
        self.report_before_join(channel).await?;
        let max = self.config.namespace(channel).presence_max_members;
        self.presence.join(channel, id, member, max).await.map_err(|err| match err {
            JoinError::Full { max } => PresenceError::Full { channel: channel.clone(), max },
            JoinError::Engine(err) => PresenceError::Engine(err),
        })
    }

    /// Connection `id` leaves `channel`'s presence once `presence_grace` has passed.
    pub(super) fn leave_later(&self, channel: &ChannelName, id: u64) {
        // A subscription dropped outside a runtime (a test's last moments) has nobody left to tell.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (store, grace, channel) = (self.presence.clone(), self.config.presence_grace, channel.clone());
        let reports = self.occupancy.clone();
        reports.leaving(&channel, true);
        runtime.spawn(async move {
            if !grace.is_zero() {
                tokio::time::sleep(grace).await;
            }
            if let Err(err) = store.leave(&channel, id).await {
                tracing::warn!(%err, %channel, "a presence leave failed; it is retried while the node lives");
            }
            reports.leaving(&channel, false);
        });
    }
}

/// Keeps the type in the signatures above readable.
pub(super) type Store = Arc<dyn PresenceStore>;

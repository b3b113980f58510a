//! Presence in this process's memory, for the embedded engine: one node, so every change is observed here.
//!
//! One lock over all channels' presence: joins, leaves and subscriber counts change when connections come and
//! go, not per message, and the hub reports subscriber counts from one task. Events are handed to the listener
//! under the lock, so every follower sees a channel's changes in order.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use herald_proto::ChannelName;

use super::{
    JoinError, Joined, ListenerSlot, Member, Members, Occupancy, PresenceChange, PresenceEvent, PresenceListener,
    PresenceStore, Transition,
};
use crate::engine::events::memory::MemoryLog;
use crate::engine::events::LifecycleEvent;
use crate::engine::{BoxFuture, EngineError};

/// One channel's presence and subscribers.
#[derive(Default)]
struct ChannelPresence {
    /// Members by user id, with their number of connections.
    members: HashMap<String, (Member, usize)>,
    /// Connections by number, with their user id.
    connections: HashMap<u64, String>,
    subscribers: u64,
}

impl ChannelPresence {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.connections.is_empty() && self.subscribers == 0
    }

    fn snapshot(&self, seq: u64) -> Members {
        Members { members: self.members.values().map(|(m, _)| m.clone()).collect(), seq }.sorted()
    }
}

#[derive(Default)]
struct State {
    /// In name order, for the occupied channels' prefix listing.
    channels: BTreeMap<ChannelName, ChannelPresence>,
    /// The last sequence number given: one counter for all channels, so each channel's increases too.
    seq: u64,
}

/// The embedded engine's presence.
#[derive(Default)]
pub struct MemoryPresence {
    state: Mutex<State>,
    listener: ListenerSlot,
    /// Where transitions are logged for webhooks, in the order they happen (under the lock).
    log: Arc<MemoryLog>,
}

impl MemoryPresence {
    /// Presence whose transitions go to `log` too.
    pub fn new(log: Arc<MemoryLog>) -> Self {
        Self { state: Mutex::default(), listener: ListenerSlot::default(), log }
    }

    /// A transition, observed under the lock: logged, then passed on.
    fn transition(&self, transition: Transition) {
        self.log.record(LifecycleEvent::of(&transition, herald_proto::time::now_millis()));
        self.listener.transition(transition);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is a few map operations that leave the state consistent whenever they stop.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Announces a change of `channel`'s members, under the lock.
    fn announce(&self, state: &mut State, channel: &ChannelName, change: PresenceChange, member: Member) -> u64 {
        state.seq += 1;
        let seq = state.seq;
        self.listener.event(&PresenceEvent::new(channel.clone(), change, member.clone(), seq));
        self.transition(match change {
            PresenceChange::Join => Transition::MemberAdded(channel.clone(), member),
            PresenceChange::Leave => Transition::MemberRemoved(channel.clone(), member),
        });
        seq
    }

    fn join_now(
        &self,
        channel: &ChannelName,
        connection: u64,
        member: &Member,
        max: usize,
    ) -> Result<Joined, JoinError> {
        let mut state = self.lock();
        let presence = state.channels.entry(channel.clone()).or_default();
        let known = presence.members.contains_key(&member.user_id);
        if !known && presence.members.len() >= max {
            return Err(JoinError::Full { max });
        }
        if presence.connections.insert(connection, member.user_id.clone()).is_none() {
            presence.members.entry(member.user_id.clone()).or_insert_with(|| (member.clone(), 0)).1 += 1;
        }
        if !known {
            self.announce(&mut state, channel, PresenceChange::Join, member.clone());
        }
        let seq = state.seq;
        let members = state.channels.get(channel).map(|p| p.snapshot(seq)).unwrap_or_default();
        Ok(Joined { members, new: !known })
    }

    fn leave_now(&self, channel: &ChannelName, connection: u64) {
        let mut state = self.lock();
        let Some(presence) = state.channels.get_mut(channel) else { return };
        let Some(user) = presence.connections.remove(&connection) else { return };
        let mut gone = None;
        if let Some((_, count)) = presence.members.get_mut(&user) {
            *count -= 1;
            if *count == 0 {
                gone = presence.members.remove(&user).map(|(member, _)| member);
            }
        }
        if presence.is_empty() {
            state.channels.remove(channel);
        }
        if let Some(member) = gone {
            self.announce(&mut state, channel, PresenceChange::Leave, member);
        }
    }

    fn set_subscribers_now(&self, channel: &ChannelName, count: u64) {
        let mut state = self.lock();
        let presence = state.channels.entry(channel.clone()).or_default();
        let before = presence.subscribers;
        presence.subscribers = count;
        if presence.is_empty() {
            state.channels.remove(channel);
        }
        match (before, count) {
            (0, 1..) => self.transition(Transition::Occupied(channel.clone())),
            (1.., 0) => self.transition(Transition::Vacated(channel.clone())),
            _ => {}
        }
    }

    fn occupancy_of(presence: Option<&ChannelPresence>) -> Occupancy {
        presence.map_or_else(Occupancy::default, |p| Occupancy {
            subscribers: p.subscribers,
            members: p.members.len() as u64,
        })
    }
}

impl PresenceStore for MemoryPresence {
    fn listen(&self, listener: Arc<dyn PresenceListener>) {
        self.listener.set(listener);
    }

    fn join<'a>(
        &'a self,
        channel: &'a ChannelName,
        connection: u64,
        member: &'a Member,
        max_members: usize,
    ) -> BoxFuture<'a, Result<Joined, JoinError>> {
        Box::pin(std::future::ready(self.join_now(channel, connection, member, max_members)))
    }

    fn leave<'a>(&'a self, channel: &'a ChannelName, connection: u64) -> BoxFuture<'a, Result<(), EngineError>> {
        self.leave_now(channel, connection);
        Box::pin(std::future::ready(Ok(())))
    }

    fn members<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, Result<Members, EngineError>> {
        let state = self.lock();
        let members = match state.channels.get(channel) {
            Some(presence) => presence.snapshot(state.seq),
            None => Members { members: Vec::new(), seq: state.seq },
        };
        Box::pin(std::future::ready(Ok(members)))
    }

    fn set_subscribers<'a>(&'a self, channel: &'a ChannelName, count: u64) -> BoxFuture<'a, Result<(), EngineError>> {
        self.set_subscribers_now(channel, count);
        Box::pin(std::future::ready(Ok(())))
    }

    fn occupancy<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, Result<Occupancy, EngineError>> {
        let occupancy = Self::occupancy_of(self.lock().channels.get(channel));
        Box::pin(std::future::ready(Ok(occupancy)))
    }

    fn occupied<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(ChannelName, Occupancy)>, EngineError>> {
        let state = self.lock();
        let found = state
            .channels
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(name, _)| name.as_str().starts_with(prefix))
            .filter(|(_, presence)| presence.subscribers > 0)
            .take(limit)
            .map(|(name, presence)| (name.clone(), Self::occupancy_of(Some(presence))))
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }
}

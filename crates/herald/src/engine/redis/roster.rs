//! The members this node's presence followers of a channel were last told of, so that changes announced while
//! the node's Pub/Sub connection was down can be told after it is back.
//!
//! Joins and leaves travel on the channel's Pub/Sub channel: what is announced while this node is not listening
//! never reaches it. After a reconnect the Pub/Sub task reads the members again and hands on the difference with
//! what it had, as ordinary join and leave events ([`Roster::catch_up`]).
//!
//! The roster lives in the Pub/Sub task, beside the newest delivered position of each channel, because only
//! there is its start exact without buffering: the task subscribes, then reads the members, then takes the
//! announcements in the order Redis sent them, so each change after the read is applied once and each change
//! before it is skipped by its sequence number. A roster is kept for each channel with presence
//! ([`Config::has_presence`](crate::config::Config::has_presence)) that the node follows, and holds at most the
//! channel's members (`presence_max_members`); it goes when the node stops following the channel.

use std::collections::HashMap;
use std::sync::Arc;

use herald_proto::ChannelName;

use crate::engine::presence::{Member, Members, PresenceChange, PresenceEvent};

/// A channel's members as this node's followers last heard of them.
#[derive(Debug, Default)]
pub(super) struct Roster {
    /// The presence sequence of the newest change applied.
    seq: u64,
    members: HashMap<String, Member>,
}

impl Roster {
    /// The members as read.
    pub(super) fn new(read: Members) -> Self {
        let members = read.members.into_iter().map(|m| (m.user_id.clone(), m)).collect();
        Self { seq: read.seq, members }
    }

    /// Applies a change announced on Pub/Sub, unless the roster holds it already (it came after the read).
    pub(super) fn apply(&mut self, event: &PresenceEvent) {
        if event.seq <= self.seq {
            return;
        }
        self.seq = event.seq;
        match event.change {
            PresenceChange::Join => {
                self.members.insert(event.member.user_id.clone(), event.member.clone());
            }
            PresenceChange::Leave => {
                self.members.remove(&event.member.user_id);
            }
        }
    }

    /// Becomes `now` (the members read after a reconnect) and returns the changes that lead there from what the
    /// followers were told: the leaves, then the joins, each by user id (a member whose info changed leaves and
    /// joins again).
    ///
    /// The changes are numbered with the last sequences up to `now`'s (the real changes, at least as many, each
    /// had a sequence of its own after the roster's, so these do too): a follower whose list is older than the
    /// drop takes every one, a follower that read the list at `now` or later none.
    pub(super) fn catch_up(&mut self, channel: &ChannelName, now: Members) -> Vec<Arc<PresenceEvent>> {
        let now = Self::new(now);
        let mut leaves: Vec<&Member> = self
            .members
            .values()
            .filter(|m| now.members.get(&m.user_id).map_or(true, |n| n.user_info != m.user_info))
            .collect();
        let mut joins: Vec<&Member> = now
            .members
            .values()
            .filter(|n| self.members.get(&n.user_id).map_or(true, |m| m.user_info != n.user_info))
            .collect();
        leaves.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        joins.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        let n = (leaves.len() + joins.len()) as u64;
        // Never below what the roster had (Redis lost the sequence with the data): followers would skip them.
        let last = now.seq.max(self.seq.saturating_add(n));
        let first = last - n + 1;
        let changes = leaves
            .into_iter()
            .map(|m| (PresenceChange::Leave, m))
            .chain(joins.into_iter().map(|m| (PresenceChange::Join, m)));
        let events = changes
            .zip(first..)
            .map(|((change, member), seq)| PresenceEvent::new(channel.clone(), change, member.clone(), seq))
            .collect();
        *self = Self { seq: last, members: now.members };
        events
    }
}

/// The rosters of the channels this node follows with presence.
#[derive(Default)]
pub(super) struct Rosters(HashMap<ChannelName, Roster>);

impl Rosters {
    /// Applies a change announced on `event`'s channel, when its roster is known.
    pub(super) fn apply(&mut self, event: &PresenceEvent) {
        if let Some(roster) = self.0.get_mut(&event.channel) {
            roster.apply(event);
        }
    }

    /// Takes `read` (the members read after subscribing, or after a reconnect) as `channel`'s roster; returns the
    /// changes since the roster it had, none when it had none.
    pub(super) fn read(&mut self, channel: &ChannelName, read: Members) -> Vec<Arc<PresenceEvent>> {
        match self.0.get_mut(channel) {
            Some(roster) => roster.catch_up(channel, read),
            None => {
                self.0.insert(channel.clone(), Roster::new(read));
                Vec::new()
            }
        }
    }

    /// Forgets `channel`.
    pub(super) fn remove(&mut self, channel: &ChannelName) {
        self.0.remove(channel);
    }

    /// Keeps only the channels `keep` holds.
    pub(super) fn retain(&mut self, keep: impl Fn(&ChannelName) -> bool) {
        self.0.retain(|channel, _| keep(channel));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn member(user: &str, info: &str) -> Member {
        Member { user_id: user.into(), user_info: Bytes::copy_from_slice(info.as_bytes()) }
    }

    fn members(seq: u64, list: &[(&str, &str)]) -> Members {
        Members { members: list.iter().map(|(u, i)| member(u, i)).collect(), seq }
    }

    fn changes(events: &[Arc<PresenceEvent>]) -> Vec<(PresenceChange, String, u64)> {
        events.iter().map(|e| (e.change, e.member.user_id.clone(), e.seq)).collect()
    }

    fn ch() -> ChannelName {
        ChannelName::new("room:1").unwrap()
    }

    #[test]
    fn a_catch_up_tells_the_leaves_then_the_joins_numbered_up_to_the_read() {
        let mut roster = Roster::new(members(100, &[("ada", "null"), ("bob", "null")]));
        let events = roster.catch_up(&ch(), members(900, &[("ada", "null"), ("cy", "{\"a\":1}")]));
        use PresenceChange::{Join, Leave};
        assert_eq!(changes(&events), [(Leave, "bob".into(), 899), (Join, "cy".into(), 900)]);
        assert_eq!(&events[1].member.user_info[..], b"{\"a\":1}");
        assert!(roster.catch_up(&ch(), members(900, &[("ada", "null"), ("cy", "{\"a\":1}")])).is_empty());
    }

    #[test]
    fn a_member_whose_info_changed_leaves_and_joins_again() {
        let mut roster = Roster::new(members(1, &[("ada", "{\"v\":1}")]));
        let events = roster.catch_up(&ch(), members(50, &[("ada", "{\"v\":2}")]));
        let told: Vec<_> = changes(&events).into_iter().map(|(c, u, _)| (c, u)).collect();
        assert_eq!(told, [(PresenceChange::Leave, "ada".into()), (PresenceChange::Join, "ada".into())]);
    }

    #[test]
    fn announced_changes_apply_once_and_only_after_the_read() {
        let mut roster = Roster::new(members(10, &[("ada", "null")]));
        roster.apply(&PresenceEvent::new(ch(), PresenceChange::Leave, member("ada", "null"), 9));
        roster.apply(&PresenceEvent::new(ch(), PresenceChange::Join, member("bob", "null"), 11));
        roster.apply(&PresenceEvent::new(ch(), PresenceChange::Join, member("bob", "null"), 11));
        let events = roster.catch_up(&ch(), members(11, &[("ada", "null"), ("bob", "null")]));
        assert!(events.is_empty(), "the read before and the announcement after add up to now");
    }

    #[test]
    fn changes_after_a_lost_sequence_are_numbered_after_the_roster() {
        let mut roster = Roster::new(members(500, &[("ada", "null"), ("bob", "null")]));
        let events = roster.catch_up(&ch(), members(0, &[]));
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [501, 502]);
    }

    #[test]
    fn a_channel_without_a_roster_gets_one_and_no_change() {
        let mut rosters = Rosters::default();
        assert!(rosters.read(&ch(), members(5, &[("ada", "null")])).is_empty());
        rosters.apply(&PresenceEvent::new(ch(), PresenceChange::Leave, member("ada", "null"), 6));
        assert!(rosters.read(&ch(), members(6, &[])).is_empty());
        rosters.retain(|_| false);
        assert!(rosters.read(&ch(), members(7, &[("bob", "null")])).is_empty(), "forgotten: a new roster");
    }
}

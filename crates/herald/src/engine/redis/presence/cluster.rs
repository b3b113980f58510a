//! Presence on a Redis Cluster: the writes beyond a channel's slot, done around its scripts instead of in them.
//!
//! On a cluster a script may only touch the keys of one slot, and a channel's presence keys share its hash tag,
//! so the scripts still change a channel atomically: every join, leave and transition is observed by exactly one
//! caller, as on one Redis. What moves out of them, and what each move costs:
//! - **A node's index of its channels** (`<prefix>node:{<node>}:channels`, read when the node dies to reap its
//!   share) gets the channel *before* the script that gives the node a share of it, so a node that dies between
//!   the two is still reaped there. Releasing a channel removes it, then looks again at what the node holds
//!   (in Redis and here) and puts it back if a join came in between: an extra entry costs one empty reap, a
//!   missing one would leave a dead node's members behind.
//! - **The index of occupied channels** (`{<prefix>global}:occupied`, read by prefix for the channel lists of
//!   the Pusher API) is written by the caller that observed the transition: added on occupied; on vacated,
//!   removed and then the channel's subscriber counts read again, and added back if another node occupied it
//!   meanwhile. So an occupied channel is never left out; a channel vacated while an earlier occupation's add
//!   was in flight can stay listed, and the listing skips it (it checks each channel's counts).
//! - **The log of lifecycle events** (`{<prefix>webhooks}:log`) gets each transition from the one caller that
//!   observed it, right after its script. A node that dies between the two loses that one event (its webhook is
//!   never sent); on one Redis the script logs it in the same step.

use herald_proto::ChannelName;

use super::RedisPresence;
use crate::engine::events::{EventLog, LifecycleEvent};
use crate::engine::presence::Transition;
use crate::engine::EngineError;

impl RedisPresence {
    /// Adds `channel` to `node`'s index, before a script that gives the node a share of it.
    pub(super) async fn index_channel(&self, node: &str, channel: &ChannelName) -> Result<(), EngineError> {
        self.command(redis::cmd("SADD").arg(self.node_channels_key(node)).arg(channel.as_str()).clone()).await
    }

    /// A transition a script of this node observed: handed to the listener, and on a cluster written to the
    /// occupied index and the log, which the script could not do.
    pub(super) async fn observed(&self, transition: Transition) {
        if self.cluster {
            let written = match &transition {
                Transition::Occupied(channel) => self.list_occupied(channel, true).await,
                Transition::Vacated(channel) => self.list_occupied(channel, false).await,
                _ => Ok(()),
            };
            if let Err(err) = written {
                tracing::warn!(%err, "updating the index of occupied channels failed");
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            if let Err(err) = self.log.append(LifecycleEvent::of(&transition, now.as_millis() as u64)).await {
                tracing::warn!(%err, "logging a presence transition failed: its webhook is not sent");
            }
        }
        self.inner.presence.transition(transition);
    }

    /// Adds `channel` to the occupied index, or removes it and adds it back if it is occupied again by now.
    async fn list_occupied(&self, channel: &ChannelName, occupied: bool) -> Result<(), EngineError> {
        let (index, name) = (self.global_key("occupied"), channel.as_str());
        let add = redis::cmd("ZADD").arg(&index).arg(0).arg(name).clone();
        if occupied {
            return self.command(add).await;
        }
        self.command::<()>(redis::cmd("ZREM").arg(&index).arg(name).clone()).await?;
        let nodes: u64 = self.command(redis::cmd("HLEN").arg(self.key(channel, "subscribers")).clone()).await?;
        if nodes > 0 {
            self.command::<()>(add).await?;
        }
        Ok(())
    }

    /// Drops `channel` from `node`'s index when the node holds nothing of it (see the module's text).
    pub(super) async fn release_on_cluster(&self, node: &str, channel: &ChannelName) -> Result<(), EngineError> {
        let keys = [self.key(channel, "subscribers"), self.key(channel, "connections")];
        if self.call::<i64>(&self.scripts.holds, &keys, &[node.as_bytes()], true).await? == 1 {
            return Ok(());
        }
        self.command::<()>(redis::cmd("SREM").arg(self.node_channels_key(node)).arg(channel.as_str()).clone()).await?;
        let held_here = {
            let local = self.lock();
            local.subscribers.contains_key(channel) || local.connections.values().any(|(c, ..)| c == channel)
        };
        let held = held_here || self.call::<i64>(&self.scripts.holds, &keys, &[node.as_bytes()], true).await? == 1;
        if held {
            self.index_channel(node, channel).await?;
        }
        Ok(())
    }
}

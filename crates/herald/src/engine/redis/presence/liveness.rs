//! Each node's liveness in Redis, and the removal of a dead node's share.
//!
//! Every third of `presence_node_ttl` a node renews its entry in `<prefix>nodes` (a sorted set of the last
//! renewal, on Redis's clock), retries the leaves that failed, drops from its index the channels it no longer
//! holds anything of, and looks for nodes silent for the whole ttl. Claiming one is atomic (`CLAIM_DEAD`), so
//! exactly one node removes a dead node's share, channel by channel, each in one script: each of its members
//! that has no connection left on another node leaves once, and a channel whose last subscribers it held is
//! vacated once. A dead node's members are therefore gone between `presence_node_ttl` and 4/3 of it after its
//! last renewal (plus the removal's own time). A claimer that dies half-way lets its claim go stale; another
//! node claims the dead node again after a ttl and finishes (removal is idempotent).

use std::sync::Arc;

use herald_proto::ChannelName;
use tokio_util::sync::CancellationToken;

use super::{node_name, scripts, unreadable, RedisPresence};
use crate::engine::presence::Transition;
use crate::engine::EngineError;

/// Dead nodes claimed at once, at most.
const CLAIM_AT_ONCE: usize = 16;

/// Renews this node's liveness and reaps dead nodes until `stop`.
pub(in crate::engine::redis) async fn follow(presence: Arc<RedisPresence>, stop: CancellationToken) {
    let every = (presence.inner.config.presence_node_ttl / 3).max(std::time::Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => presence.beat().await,
        }
    }
}

impl RedisPresence {
    /// Renews (or, with `register`, creates) this node's entry; false when the node was declared dead meanwhile.
    pub(super) async fn heartbeat(&self, register: bool) -> Result<bool, EngineError> {
        let node = self.node();
        let args: [&[u8]; 2] = [node.as_bytes(), if register { b"1" } else { b"0" }];
        let alive: i64 = self.call(&self.scripts.heartbeat, &[self.global_key("nodes")], &args, true).await?;
        Ok(alive == 1)
    }

    /// One round: renew, retry, release, reap.
    async fn beat(&self) {
        if self.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        match self.heartbeat(false).await {
            Ok(true) => {}
            Ok(false) => self.reincarnate().await,
            // Redis is out of reach: the engine logs it; try again next round.
            Err(_) => return,
        }
        self.retry_leaves().await;
        self.release_idle().await;
        if let Err(err) = self.reap_dead().await {
            tracing::warn!(%err, "removing a dead node's presence failed; another round will finish it");
        }
    }

    /// This node was declared dead (Redis was out of its reach for a whole ttl) and its share removed: it takes a
    /// new name and stores its connections and subscriber counts again, so its members join again.
    async fn reincarnate(&self) {
        let (node, connections, subscribers) = {
            let mut local = self.lock();
            local.node = node_name();
            local.unfinished.clear();
            let connections: Vec<_> = local.connections.iter().map(|(id, c)| (*id, c.clone())).collect();
            let subscribers: Vec<_> = local.subscribers.iter().map(|(c, n)| (c.clone(), *n)).collect();
            (local.node.clone(), connections, subscribers)
        };
        tracing::warn!(
            %node,
            connections = connections.len(),
            "this node was declared dead (Redis out of its reach for presence_node_ttl_secs): its members left; \
             storing them again under a new name"
        );
        if self.heartbeat(true).await.is_err() {
            return;
        }
        for (channel, count) in subscribers {
            let _ = self.set_subscribers_as(&node, &channel, count).await;
        }
        for (connection, (channel, member, max)) in connections {
            let _ = self.join_as(&node, &channel, connection, &member, max).await;
        }
    }

    async fn retry_leaves(&self) {
        let unfinished = std::mem::take(&mut self.lock().unfinished);
        for (i, (channel, field)) in unfinished.iter().enumerate() {
            if self.leave_field(channel, field).await.is_err() {
                self.lock().unfinished.extend(unfinished[i..].iter().cloned());
                return;
            }
        }
    }

    /// Drops from this node's index the channels it holds nothing of any more.
    async fn release_idle(&self) {
        let (node, idle) = {
            let mut local = self.lock();
            let idle: Vec<ChannelName> = std::mem::take(&mut local.idle).into_iter().collect();
            (local.node.clone(), idle)
        };
        for channel in idle {
            let released = if self.cluster {
                self.release_on_cluster(&node, &channel).await
            } else {
                let keys = [
                    self.node_channels_key(&node),
                    self.key(&channel, "subscribers"),
                    self.key(&channel, "connections"),
                ];
                let args: [&[u8]; 2] = [node.as_bytes(), channel.as_str().as_bytes()];
                self.call::<i64>(&self.scripts.release, &keys, &args, true).await.map(|_| ())
            };
            if released.is_err() {
                self.lock().idle.insert(channel);
            }
        }
    }

    /// Claims the nodes silent for a whole ttl and removes their share, channel by channel.
    async fn reap_dead(&self) -> Result<(), EngineError> {
        let ttl = self.inner.config.presence_node_ttl.as_millis().to_string();
        let most = CLAIM_AT_ONCE.to_string();
        let keys = [self.global_key("nodes"), self.global_key("dead_nodes")];
        let claimed: Vec<String> =
            self.call(&self.scripts.claim_dead, &keys, &[ttl.as_bytes(), most.as_bytes()], false).await?;
        for node in claimed {
            let index = self.node_channels_key(&node);
            let channels: Vec<String> = self.command(redis::cmd("SMEMBERS").arg(&index).clone()).await?;
            for name in &channels {
                if let Ok(channel) = ChannelName::new(name) {
                    self.reap(&node, &channel).await?;
                }
            }
            // Two commands, not a pipeline: on a cluster the two keys are in different slots.
            let dead = self.global_key("dead_nodes");
            self.command::<()>(redis::cmd("DEL").arg(&index).clone()).await?;
            self.command::<()>(redis::cmd("ZREM").arg(&dead).arg(&node).clone()).await?;
            tracing::info!(%node, channels = channels.len(), "removed the presence of a node silent for presence_node_ttl_secs");
        }
        Ok(())
    }

    /// Removes `node`'s share of `channel`: its subscribers and its connections.
    async fn reap(&self, node: &str, channel: &ChannelName) -> Result<(), EngineError> {
        let (beyond, capacity) = self.beyond(&[self.global_key("occupied")]);
        let keys = [&self.presence_keys(channel)[..], &[self.key(channel, "subscribers")], &beyond].concat();
        let live = self.inner.live_channel(channel);
        let args: [&[u8]; 4] = [node.as_bytes(), live.as_bytes(), channel.as_str().as_bytes(), capacity.as_bytes()];
        let (vacated, left): (i64, Vec<Vec<u8>>) = self.call(&self.scripts.reap, &keys, &args, true).await?;
        for member in scripts::members(left).map_err(unreadable)? {
            self.observed(Transition::MemberRemoved(channel.clone(), member)).await;
        }
        if vacated == 1 {
            self.observed(Transition::Vacated(channel.clone())).await;
        }
        Ok(())
    }
}

//! Presence and occupancy in Redis, shared by every node: members, connections and subscriber counts per channel
//! (`scripts.rs`), and each node's liveness, so that a dead node's share goes within a known time
//! (`liveness.rs`).
//!
//! Every connection is stored as `<node>/<connection>`, every subscriber count per node, and each node keeps
//! the index `<prefix>node:{<node>}:channels` of the channels it holds a share of. A living node renews its
//! entry in `<prefix>nodes` every third of `presence_node_ttl`; a node silent for the whole ttl is claimed by
//! exactly one other node, which removes its share channel by channel (its members leave, its channels may be
//! vacated). A node that finds itself declared dead (Redis was out of its reach that long) takes a new name and
//! stores its connections and counts again.
//!
//! This node remembers what it stored (its connections, its counts), for that case and to retry a leave that
//! failed while Redis was unreachable.

mod cluster;
mod liveness;
mod scripts;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use herald_proto::ChannelName;
use redis::{FromRedisValue, Script, Value};

use super::events::RedisLog;
use super::Inner;
use crate::engine::presence::{
    JoinError, Joined, Member, Members, Occupancy, PresenceEvent, PresenceListener, PresenceStore, Transition,
};
use crate::engine::{BoxFuture, EngineError};
pub(super) use liveness::follow as keep_alive;
pub(super) use scripts::ANNOUNCEMENT;

/// The scripts, loaded once.
struct Scripts {
    join: Script,
    leave: Script,
    members: Script,
    set_subscribers: Script,
    reap: Script,
    heartbeat: Script,
    retire: Script,
    claim_dead: Script,
    release: Script,
    holds: Script,
}

/// What this node stored, to store again under a new name or to retry.
#[derive(Default)]
struct Local {
    /// This node's name in Redis; a new one after it was declared dead.
    node: String,
    /// Connections joined: their channel, member and the most members they were let in under.
    connections: HashMap<u64, (ChannelName, Member, usize)>,
    /// The subscriber counts this node reported, when not zero.
    subscribers: HashMap<ChannelName, u64>,
    /// Leaves that failed, to retry.
    unfinished: Vec<(ChannelName, String)>,
    /// Channels where this node's share may have become empty, to drop from its index.
    idle: HashSet<ChannelName>,
}

/// Presence in Redis.
pub(super) struct RedisPresence {
    inner: Arc<Inner>,
    scripts: Scripts,
    local: Mutex<Local>,
    /// The node stops: it renews its liveness no more.
    retired: AtomicBool,
    /// On a Redis Cluster: the writes beyond a channel's slot are done around the scripts (`cluster.rs`).
    cluster: bool,
    /// The log of lifecycle events, which this store appends its transitions to itself on a cluster.
    log: Arc<RedisLog>,
}

/// A fresh node name: random enough that two nodes never share one.
fn node_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

fn unreadable(err: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(err.to_string())
}

impl RedisPresence {
    /// Presence on `inner`'s Redis, registered as a living node.
    pub(super) async fn start(inner: Arc<Inner>, log: Arc<RedisLog>) -> Result<Arc<Self>, EngineError> {
        let scripts = Scripts {
            join: inner.commands.script(&scripts::join()),
            leave: inner.commands.script(&scripts::leave()),
            members: Script::new(scripts::MEMBERS),
            set_subscribers: inner.commands.script(&scripts::set_subscribers()),
            reap: inner.commands.script(&scripts::reap()),
            heartbeat: Script::new(scripts::HEARTBEAT),
            retire: Script::new(scripts::RETIRE),
            claim_dead: Script::new(scripts::CLAIM_DEAD),
            release: Script::new(scripts::RELEASE),
            holds: Script::new(scripts::HOLDS),
        };
        let local = Mutex::new(Local { node: node_name(), ..Local::default() });
        let cluster = matches!(inner.commands, super::connection::Commands::Cluster(_));
        let presence = Arc::new(Self { inner, scripts, local, retired: AtomicBool::new(false), cluster, log });
        presence.heartbeat(true).await?;
        Ok(presence)
    }

    fn lock(&self) -> MutexGuard<'_, Local> {
        // Map insertions and removals only: consistent whenever they stop.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn node(&self) -> String {
        self.lock().node.clone()
    }

    fn key(&self, channel: &ChannelName, what: &str) -> String {
        format!("{}{{{channel}}}:{what}", self.inner.config.redis_prefix)
    }

    /// The keys of a channel's presence, in the order the scripts take them.
    fn presence_keys(&self, channel: &ChannelName) -> [String; 4] {
        ["members", "connections", "counts", "presence_seq"].map(|what| self.key(channel, what))
    }

    /// A key of the whole deployment (the nodes, the dead ones, the occupied channels). On a cluster they share
    /// one hash tag, so that a script may touch two of them.
    fn global_key(&self, what: &str) -> String {
        let prefix = &self.inner.config.redis_prefix;
        if self.cluster {
            format!("{{{prefix}global}}:{what}")
        } else {
            format!("{prefix}{what}")
        }
    }

    /// Keys a script takes beyond its channel's (`beyond`, then the log and its counter as its last two), and
    /// the log's capacity, its last argument (0: off). On a cluster none: the caller writes those itself.
    fn beyond(&self, beyond: &[String]) -> (Vec<String>, String) {
        if self.cluster {
            return (Vec::new(), "0".into());
        }
        let prefix = &self.inner.config.redis_prefix;
        let mut keys = beyond.to_vec();
        keys.extend([format!("{prefix}webhooks:log"), format!("{prefix}webhooks:n")]);
        (keys, super::events::capacity(&self.inner).to_string())
    }

    fn node_channels_key(&self, node: &str) -> String {
        format!("{}node:{{{node}}}:channels", self.inner.config.redis_prefix)
    }

    /// Runs `script` with `keys` and `args`; `again` when running it twice does no harm.
    async fn call<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[&[u8]],
        again: bool,
    ) -> Result<T, EngineError> {
        self.inner
            .run(again, |mut con| {
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                for arg in args {
                    invocation.arg(*arg);
                }
                async move { invocation.invoke_async(&mut con).await }
            })
            .await
    }

    /// Runs one command; each may run twice (once more after a connection Redis had closed) without harm.
    async fn command<T: FromRedisValue>(&self, command: redis::Cmd) -> Result<T, EngineError> {
        self.inner
            .run(true, |mut con| {
                let command = command.clone();
                async move { command.query_async(&mut con).await }
            })
            .await
    }

    async fn join_as(
        &self,
        node: &str,
        channel: &ChannelName,
        connection: u64,
        member: &Member,
        max: usize,
    ) -> Result<Joined, JoinError> {
        if self.cluster {
            self.index_channel(node, channel).await?;
        }
        let (beyond, capacity) = self.beyond(&[self.node_channels_key(node)]);
        let keys = [&self.presence_keys(channel)[..], &beyond].concat();
        let field = format!("{node}/{connection}");
        let (max, live) = (max.to_string(), self.inner.live_channel(channel));
        let args: [&[u8]; 7] = [
            field.as_bytes(),
            member.user_id.as_bytes(),
            &member.user_info,
            max.as_bytes(),
            live.as_bytes(),
            channel.as_str().as_bytes(),
            capacity.as_bytes(),
        ];
        let reply: Value = self.call(&self.scripts.join, &keys, &args, true).await?;
        let Value::Array(parts) = reply else { return Err(unreadable("join reply").into()) };
        if parts.len() == 1 {
            return Err(JoinError::Full { max: max.parse().unwrap_or_default() });
        }
        let (new, seq, flat): (i64, Vec<u8>, Vec<Vec<u8>>) =
            FromRedisValue::from_redis_value(Value::Array(parts)).map_err(unreadable)?;
        let members = Members {
            members: scripts::members(flat).map_err(unreadable)?,
            seq: scripts::seq(&seq).map_err(unreadable)?,
        };
        if new == 1 {
            self.observed(Transition::MemberAdded(channel.clone(), member.clone())).await;
        }
        Ok(Joined { members: members.sorted(), new: new == 1 })
    }

    /// Runs the leave of `field` on `channel`.
    async fn leave_field(&self, channel: &ChannelName, field: &str) -> Result<(), EngineError> {
        let (beyond, capacity) = self.beyond(&[]);
        let keys = [&self.presence_keys(channel)[..], &beyond].concat();
        let live = self.inner.live_channel(channel);
        let args: [&[u8]; 4] = [field.as_bytes(), live.as_bytes(), channel.as_str().as_bytes(), capacity.as_bytes()];
        let left: Vec<Vec<u8>> = self.call(&self.scripts.leave, &keys, &args, true).await?;
        if let Some(member) = scripts::members(left).map_err(unreadable)?.pop() {
            self.observed(Transition::MemberRemoved(channel.clone(), member)).await;
        }
        Ok(())
    }

    async fn set_subscribers_as(&self, node: &str, channel: &ChannelName, count: u64) -> Result<(), EngineError> {
        if self.cluster && count > 0 {
            self.index_channel(node, channel).await?;
        }
        let (beyond, capacity) = self.beyond(&[self.global_key("occupied"), self.node_channels_key(node)]);
        let keys = [&[self.key(channel, "subscribers")][..], &beyond].concat();
        let count = count.to_string();
        let args: [&[u8]; 4] = [node.as_bytes(), count.as_bytes(), channel.as_str().as_bytes(), capacity.as_bytes()];
        let change: i64 = self.call(&self.scripts.set_subscribers, &keys, &args, true).await?;
        match change {
            1 => self.observed(Transition::Occupied(channel.clone())).await,
            -1 => self.observed(Transition::Vacated(channel.clone())).await,
            _ => {}
        }
        Ok(())
    }

    /// Hands on an announcement of `channel`'s presence from Pub/Sub; returns it, when it could be read.
    pub(super) fn announced(inner: &Inner, channel: &ChannelName, body: &[u8]) -> Option<Arc<PresenceEvent>> {
        match scripts::decode_announcement(channel, body) {
            Ok(event) => {
                inner.presence.event(&event);
                Some(event)
            }
            Err(err) => {
                tracing::warn!(%err, %channel, "skipping an unreadable presence announcement");
                None
            }
        }
    }
}

impl PresenceStore for RedisPresence {
    fn listen(&self, listener: Arc<dyn PresenceListener>) {
        self.inner.presence.set(listener);
    }

    fn join<'a>(
        &'a self,
        channel: &'a ChannelName,
        connection: u64,
        member: &'a Member,
        max_members: usize,
    ) -> BoxFuture<'a, Result<Joined, JoinError>> {
        Box::pin(async move {
            let node = {
                let mut local = self.lock();
                local.connections.insert(connection, (channel.clone(), member.clone(), max_members));
                local.node.clone()
            };
            let joined = self.join_as(&node, channel, connection, member, max_members).await;
            if let Err(JoinError::Full { .. }) = joined {
                self.lock().connections.remove(&connection);
            }
            // After any other failure the join may have been stored: the hub's leave undoes it either way.
            joined
        })
    }

    fn leave<'a>(&'a self, channel: &'a ChannelName, connection: u64) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let field = {
                let mut local = self.lock();
                local.connections.remove(&connection);
                local.idle.insert(channel.clone());
                format!("{}/{connection}", local.node)
            };
            let left = self.leave_field(channel, &field).await;
            if left.is_err() {
                self.lock().unfinished.push((channel.clone(), field));
            }
            left
        })
    }

    fn members<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, Result<Members, EngineError>> {
        Box::pin(async move {
            let [members, _, _, seq] = self.presence_keys(channel);
            let (seq, flat): (Vec<u8>, Vec<Vec<u8>>) =
                self.call(&self.scripts.members, &[members, seq], &[], true).await?;
            let members = scripts::members(flat).map_err(unreadable)?;
            Ok(Members { members, seq: scripts::seq(&seq).map_err(unreadable)? }.sorted())
        })
    }

    fn set_subscribers<'a>(&'a self, channel: &'a ChannelName, count: u64) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let node = {
                let mut local = self.lock();
                if count == 0 {
                    local.subscribers.remove(channel);
                    local.idle.insert(channel.clone());
                } else {
                    local.subscribers.insert(channel.clone(), count);
                }
                local.node.clone()
            };
            self.set_subscribers_as(&node, channel, count).await
        })
    }

    fn occupancy<'a>(&'a self, channel: &'a ChannelName) -> BoxFuture<'a, Result<Occupancy, EngineError>> {
        Box::pin(async move {
            let (subscribers, members) = (self.key(channel, "subscribers"), self.key(channel, "members"));
            let (counts, members): (Vec<u64>, u64) = self
                .inner
                .run(true, |mut con| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("HVALS").arg(&subscribers).cmd("HLEN").arg(&members);
                    async move { pipe.query_async(&mut con).await }
                })
                .await?;
            Ok(Occupancy { subscribers: counts.iter().sum(), members })
        })
    }

    fn occupied<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(ChannelName, Occupancy)>, EngineError>> {
        Box::pin(async move {
            let index = self.global_key("occupied");
            // Channel names are ASCII, so every name that starts with the prefix sorts before prefix + 0xff.
            let (from, to) = (format!("[{prefix}").into_bytes(), [b"[", prefix.as_bytes(), b"\xff"].concat());
            let mut command = redis::cmd("ZRANGEBYLEX");
            command.arg(&index).arg(&from).arg(&to).arg("LIMIT").arg(0).arg(limit);
            let names: Vec<String> = self.command(command).await?;
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                let Ok(channel) = ChannelName::new(&name) else { continue };
                let occupancy = self.occupancy(&channel).await?;
                if occupancy.occupied() {
                    found.push((channel, occupancy));
                }
            }
            Ok(found)
        })
    }

    fn retire(&self) -> BoxFuture<'_, ()> {
        self.retired.store(true, Ordering::Relaxed);
        Box::pin(async move {
            let config = &self.inner.config;
            let (ttl, grace) =
                (config.presence_node_ttl.as_millis().to_string(), config.presence_grace.as_millis().to_string());
            let node = self.node();
            let args: [&[u8]; 3] = [node.as_bytes(), ttl.as_bytes(), grace.as_bytes()];
            let retired = self.call::<i64>(&self.scripts.retire, &[self.global_key("nodes")], &args, true).await;
            if let Err(err) = retired {
                tracing::warn!(%err, "could not tell Redis this node stops: its members leave after presence_node_ttl_secs");
            }
        })
    }
}

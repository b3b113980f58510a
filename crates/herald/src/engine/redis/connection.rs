//! One Redis or a Redis Cluster: which one `redis_url` names, and the command connection to it.
//!
//! `redis://…` (or `unix://…`) is one Redis, as it always was: a [`ConnectionManager`], classic Pub/Sub.
//! `redis+cluster://host:port[,host:port…]` names seed nodes of a Redis Cluster: commands go through redis-rs's
//! cluster connection, which routes each one to the primary owning its key's slot and follows `MOVED`/`ASK` and
//! failovers; Pub/Sub is sharded (`SPUBLISH`/`SSUBSCRIBE`, Redis ≥ 7.0), so a message is announced on the one
//! shard owning its channel instead of being copied over the cluster bus to every node. The sharded
//! subscriptions keep connections of their own (`pubsub/shard_link.rs`), not this one.
//! [`Commands`] hides which of the two a command runs on from the rest of the engine.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};

/// The scheme naming a cluster's seed nodes.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where Herald's Redis is.
pub(super) enum Deployment {
    /// One Redis (perhaps with replicas behind one address).
    Single(redis::Client),
    /// A Redis Cluster, reached first through these seed URLs (`redis://host:port`).
    Cluster(Vec<String>),
}

impl Deployment {
    /// Reads `redis_url`.
    pub(super) fn parse(url: &str) -> RedisResult<Self> {
        match url.strip_prefix(CLUSTER_SCHEME) {
            None => redis::Client::open(url).map(Self::Single),
            Some(rest) => Ok(Self::Cluster(cluster_seeds(rest))),
        }
    }

    /// The command connection.
    pub(super) async fn commands(&self, timeout: Duration) -> RedisResult<Commands> {
        match self {
            Self::Single(client) => {
                let settings = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                client.get_connection_manager_with_config(settings).await.map(Commands::Single)
            }
            Self::Cluster(seeds) => {
                let client = cluster_client(seeds, timeout).build()?;
                client.get_async_connection().await.map(Commands::Cluster)
            }
        }
    }
}

/// The settings of every cluster connection: requests time out like a single Redis's, and a request that met a
/// moved slot or a dead primary is retried a few times (the cluster connection refreshes its slot map between
/// attempts), for about as long as a replica takes to be promoted with a short `cluster-node-timeout`.
fn cluster_client(seeds: &[String], timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(4)
        .min_retry_wait(100)
        .max_retry_wait(1000)
}

/// `[user:password@]host:port[,host:port…][/…]` → one `redis://` URL per seed, each with the credentials.
fn cluster_seeds(rest: &str) -> Vec<String> {
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    hosts.split(',').filter(|h| !h.is_empty()).map(|host| format!("redis://{credentials}{host}")).collect()
}

/// The connection commands run on.
#[derive(Clone)]
pub(super) enum Commands {
    /// One Redis.
    Single(ConnectionManager),
    /// A cluster: each command goes to the primary of its first key's slot.
    Cluster(ClusterConnection),
}

impl Commands {
    /// A script written for one Redis, as it runs here: on a cluster its announcements are sharded (`SPUBLISH`
    /// reaches the subscribers on the shard owning the channel's slot, which is the slot of the script's keys).
    pub(super) fn script(&self, text: &str) -> Script {
        match self {
            Self::Single(_) => Script::new(text),
            Self::Cluster(_) => Script::new(&text.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")),
        }
    }

    /// The command announcing on a channel's Pub/Sub channel: sharded on a cluster.
    pub(super) fn publish_command(&self) -> &'static str {
        match self {
            Self::Single(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }

    /// `WAIT replicas timeout` on the connection that wrote `key` (the primary owning its slot, on a cluster):
    /// how many replicas acknowledged every write this connection made before.
    pub(super) async fn wait(&mut self, key: &str, replicas: u32, timeout: Duration) -> RedisResult<u64> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        match self {
            Self::Single(con) => wait.query_async(con).await,
            Self::Cluster(con) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                let reply = con.route_command(wait, RoutingInfo::SingleNode(route)).await?;
                Ok(redis::from_redis_value(reply)?)
            }
        }
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(con) => con.req_packed_command(cmd),
            Self::Cluster(con) => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(con) => con.req_packed_commands(pipeline, offset, count),
            Self::Cluster(con) => con.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(con) => con.get_db(),
            Self::Cluster(con) => con.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_every_seed_with_its_credentials() {
        assert_eq!(cluster_seeds("10.0.0.1:7000,10.0.0.2:7000"), ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
        assert_eq!(cluster_seeds(":pw@a:1,b:2/"), ["redis://:pw@a:1", "redis://:pw@b:2"]);
        assert_eq!(cluster_seeds("a:1,"), ["redis://a:1"]);
    }

    #[test]
    fn a_plain_url_is_one_redis_and_a_cluster_url_a_cluster() {
        assert!(matches!(Deployment::parse("redis://127.0.0.1:6379"), Ok(Deployment::Single(_))));
        assert!(matches!(Deployment::parse("redis+cluster://a:1,b:2"), Ok(Deployment::Cluster(s)) if s.len() == 2));
    }
}

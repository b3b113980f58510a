//! What a node knows of its Redis Cluster's shards, for `/healthz` and the metrics: every second, `CLUSTER
//! NODES` from any node, read as the primaries that own slots, those flagged failing, and the primaries that
//! stopped owning slots since the last look (a failover promoted a replica, or a resharding emptied a primary).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tokio_util::sync::CancellationToken;

use super::connection::Commands;
use super::Inner;
use crate::engine::ClusterHealth;

/// How often the cluster's state is read.
const EVERY: Duration = Duration::from_secs(1);

/// The last state read.
#[derive(Default)]
pub(super) struct ClusterState {
    shards: AtomicU64,
    reachable: AtomicU64,
    failovers: AtomicU64,
}

impl ClusterState {
    pub(super) fn health(&self) -> ClusterHealth {
        ClusterHealth {
            shards: self.shards.load(Ordering::Relaxed),
            reachable: self.reachable.load(Ordering::Relaxed),
            failovers: self.failovers.load(Ordering::Relaxed),
        }
    }
}

/// The primaries owning slots in a `CLUSTER NODES` reply (by node id), and how many of them are flagged failing.
fn owners(nodes: &str) -> (BTreeSet<String>, u64) {
    let mut primaries = BTreeSet::new();
    let mut failing = 0;
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // id address flags master ping pong epoch link slot…
        if fields.len() < 9 || !fields[2].split(',').any(|f| f == "master") {
            continue;
        }
        primaries.insert(fields[0].to_string());
        if fields[2].split(',').any(|f| f == "fail" || f == "fail?") || fields[7] == "disconnected" {
            failing += 1;
        }
    }
    (primaries, failing)
}

/// Reads the cluster's state every [`EVERY`] until `stop`.
pub(super) async fn follow(inner: Arc<Inner>, state: Arc<ClusterState>, stop: CancellationToken) {
    let Commands::Cluster(con) = &inner.commands else { return };
    let mut last: Option<BTreeSet<String>> = None;
    loop {
        let mut con = con.clone();
        let reply = con
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .ok()
            .and_then(|v| redis::from_redis_value::<String>(v).ok());
        if let Some(text) = reply {
            let (primaries, failing) = owners(&text);
            let gone = last.as_ref().map_or(0, |before| before.difference(&primaries).count() as u64);
            let (known, reachable) = (primaries.len() as u64, primaries.len() as u64 - failing);
            state.shards.store(known, Ordering::Relaxed);
            state.reachable.store(reachable, Ordering::Relaxed);
            state.failovers.fetch_add(gone, Ordering::Relaxed);
            inner.metrics.cluster_shards(known, reachable, gone);
            last = Some(primaries);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a 127.0.0.1:7000@17000 master,fail - 1 1 1 disconnected
b 127.0.0.1:7001@17001 myself,master - 0 0 2 connected 5461-10922
c 127.0.0.1:7002@17002 master - 0 1 3 connected 10923-16383
d 127.0.0.1:7003@17003 slave c 0 1 3 connected
e 127.0.0.1:7004@17004 master - 0 1 7 connected 0-5460
f 127.0.0.1:7005@17005 master,fail? - 0 1 8 connected 16000
";

    #[test]
    fn primaries_owning_slots_are_the_shards_and_failing_ones_are_not_reachable() {
        let (primaries, failing) = owners(NODES);
        assert_eq!(
            primaries.into_iter().collect::<Vec<_>>(),
            ["b", "c", "e", "f"],
            "a has no slots left, d is a replica"
        );
        assert_eq!(failing, 1);
    }
}

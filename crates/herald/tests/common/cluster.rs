//! A Redis Cluster of the test's own: 3 primaries with one replica each, on spare ports in a temporary folder,
//! never the machine's shared Redis. Torn down (SIGKILL, folder removed) when the last test holding it drops it.
//!
//! Tests of one binary share a cluster while they run at the same time ([`OwnCluster::shared`]), each with its
//! own key prefix, so a suite of many cases starts a handful of processes, not six per case. A test that kills or
//! reshards nodes starts its own ([`OwnCluster::start`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a node may go unreached before the cluster fails it over: short, so a failover test takes seconds.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// How long the cluster may take to form or to settle after a change.
const SETTLE: Duration = Duration::from_secs(30);

pub struct OwnCluster {
    nodes: Mutex<Vec<(u16, Option<Child>)>>,
    dir: PathBuf,
}

static SHARED: Mutex<Weak<OwnCluster>> = Mutex::new(Weak::new());

impl OwnCluster {
    /// The cluster this binary's running tests share, started if none is running.
    pub fn shared() -> Arc<OwnCluster> {
        let mut shared = SHARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cluster) = shared.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(OwnCluster::start());
        *shared = Arc::downgrade(&cluster);
        cluster
    }

    /// Starts six nodes and joins them into a cluster of three shards; returns once every node sees it whole.
    pub fn start() -> OwnCluster {
        let first = spare_ports(1)[0];
        let dir = std::env::temp_dir().join(format!("herald-test-cluster-{}-{first}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let cluster = OwnCluster { nodes: Mutex::new(Vec::new()), dir };
        // A port found free can be taken by another process before its redis-server binds it (another test binary's
        // cluster, picking at the same moment): that node is then not ours, and is replaced by one on another port.
        let mut port = first;
        while cluster.ports().len() < 6 {
            if !cluster.start_node(port) {
                eprintln!("redis-server could not take port {port}; trying another");
            }
            port = spare_ports(1)[0];
        }
        let addresses: Vec<String> = cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli is installed");
        // Bounded: redis-cli waits for ever for nodes that never agree.
        let deadline = Instant::now() + SETTLE;
        let status = loop {
            if let Some(status) = create.try_wait().expect("redis-cli runs") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = create.kill();
                let _ = create.wait();
                panic!("redis-cli --cluster create did not finish within {SETTLE:?} (ports {addresses:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "redis-cli --cluster create failed");
        cluster.wait_settled();
        cluster
    }

    /// Starts a node on `port`; false (and nothing kept) when the process that answers there is not the one started.
    fn start_node(&self, port: u16) -> bool {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // Replicas sync at once (not after the default 5 s), so a failover test need not wait for them.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--cluster-require-full-coverage", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + SETTLE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server on {port} starts in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = format!("process_id:{}", child.id());
        if !self.cli(port, &["INFO", "server"]).lines().any(|line| line.trim() == pid) {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        let mut nodes = self.nodes.lock().unwrap();
        match nodes.iter_mut().find(|(p, _)| *p == port) {
            Some(node) => node.1 = Some(child),
            None => nodes.push((port, Some(child))),
        }
        true
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.lock().unwrap().iter().map(|(p, _)| *p).collect()
    }

    /// `redis+cluster://` naming every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Runs `redis-cli -p port args…` and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The port of the primary owning `key`'s slot, as a running node sees it.
    pub fn primary_of(&self, key: &str) -> u16 {
        let slot: u16 = self.cli(self.any_running(), &["CLUSTER", "KEYSLOT", key]).trim().parse().expect("a slot");
        self.primary_of_slot(slot)
    }

    /// The port of the primary owning `slot`.
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        self.find_primary(slot).unwrap_or_else(|| panic!("no primary owns slot {slot}"))
    }

    fn find_primary(&self, slot: u16) -> Option<u16> {
        let nodes = self.cli(self.any_running(), &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let owns = fields[8..].iter().any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            if owns {
                return fields[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok());
            }
        }
        None
    }

    /// Waits until a primary other than `old` owns `key`'s slot (its replica was promoted).
    pub fn wait_promoted(&self, key: &str, old: u16) {
        let deadline = Instant::now() + SETTLE;
        while self.try_primary_of(key).map_or(true, |p| p == old) {
            assert!(Instant::now() < deadline, "a replica of {old} is promoted in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_primary_of(&self, key: &str) -> Option<u16> {
        let slot: u16 = self.cli(self.any_running(), &["CLUSTER", "KEYSLOT", key]).trim().parse().ok()?;
        self.find_primary(slot)
    }

    /// The ports of the replicas of the primary on `port`.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let id = self.node_id(port);
        let nodes = self.cli(port, &["CLUSTER", "NODES"]);
        nodes
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 3 && f[2].contains("slave") && f[3] == id)
            .filter_map(|f| f[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()))
            .collect()
    }

    /// The node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["CLUSTER", "MYID"]).trim().to_string()
    }

    fn any_running(&self) -> u16 {
        let nodes = self.nodes.lock().unwrap();
        nodes.iter().find(|(_, child)| child.is_some()).map(|(p, _)| *p).expect("a running node")
    }

    /// Kills the node on `port` at once (SIGKILL), as a crash would.
    pub fn kill(&self, port: u16) {
        let mut nodes = self.nodes.lock().unwrap();
        if let Some((_, Some(mut child))) = nodes.iter_mut().find(|(p, _)| *p == port).map(|n| (n.0, n.1.take())) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node on `port` again, with its cluster configuration; it rejoins (as a replica if its shard
    /// failed over meanwhile).
    pub fn restart(&self, port: u16) {
        assert!(self.start_node(port), "port {port} was taken by another process while its node was down");
    }

    /// Waits until every running node reports the cluster whole (`cluster_state:ok`, every slot served) and every
    /// replica is in sync with its primary (a replica that never synced is not promoted).
    pub fn wait_settled(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let running: Vec<u16> = {
                let nodes = self.nodes.lock().unwrap();
                nodes.iter().filter(|(_, c)| c.is_some()).map(|(p, _)| *p).collect()
            };
            let ok = running.iter().all(|port| {
                let info = self.cli(*port, &["CLUSTER", "INFO"]);
                let replication = self.cli(*port, &["INFO", "replication"]);
                let synced = replication.contains("role:master") || replication.contains("master_link_status:up");
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") && synced
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster settles in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for (_, child) in self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter_mut() {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the next cluster of this process looks for ports: clusters started at once must not pick the same ones
/// (a free port stays free until its redis-server binds it).
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// `n` ports that are free, each with its cluster bus port (port + 10000) free too.
fn spare_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::Ordering;
    let mut ports = Vec::new();
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    // Start somewhere different per process, so test binaries running at once rarely race for a port.
    let base = 20_000 + (std::process::id() % 200) * 100;
    let _ = NEXT_PORT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    while ports.len() < n {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(20_000 + (port - 20_000) % 25_000).expect("a port");
        if free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    ports
}

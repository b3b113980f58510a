//! Herald and Redis as separate processes, for tests that crash a node or restart Redis.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Client, PATIENCE};

/// The `herald` binary, with a clean environment for its settings.
pub fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env_remove("HERALD_LISTEN").env("NO_COLOR", "1").kill_on_drop(true);
    command
}

/// A `herald serve` process.
pub struct Node {
    pub child: Child,
    pub client: Client,
}

impl Node {
    /// Starts `herald serve` on a free port with extra arguments and environment; waits until it listens.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut child = herald()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("HERALD_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = tokio::time::timeout(PATIENCE * 2, async {
            while let Some(line) = lines.next_line().await.expect("read log") {
                if let Some(addr) = line.split("addr=").nth(1) {
                    return addr.split_whitespace().next().expect("an address").parse().expect("a socket address");
                }
            }
            panic!("herald serve exited before listening");
        })
        .await
        .expect("herald serve starts in time");
        // Keep draining the log so the node never blocks on a full pipe; SHOW_NODE_LOG=1 shows it.
        let show = std::env::var_os("SHOW_NODE_LOG").is_some();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if show {
                    eprintln!("[{addr}] {line}");
                }
            }
        });
        Node { child, client: Client { addr, local: None } }
    }

    pub fn url(&self) -> String {
        self.client.url()
    }

    /// Kills the process at once (SIGKILL): a crash, not a shutdown.
    pub async fn crash(mut self) {
        self.child.kill().await.expect("kill");
    }
}

/// A `redis-server` of the test's own, on a free port, never the machine's shared one.
pub struct OwnRedis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
}

impl OwnRedis {
    /// Starts one; with `persistent`, an append-only file in its own folder keeps the data across restarts.
    pub async fn start(persistent: bool) -> OwnRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("herald-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = OwnRedis { child: None, port, dir, persistent };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and folder.
    pub async fn restart(&mut self) {
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", appendonly, "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        tokio::time::timeout(PATIENCE, async {
            while tokio::net::TcpStream::connect(&addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server starts in time");
    }

    /// Stops the server abruptly (with `appendfsync always`, a persistent one has every write on disk).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis");
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The shared Redis for tests, or `None` (the test then says it was skipped).
pub fn test_redis_url() -> Option<String> {
    match std::env::var("HERALD_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: HERALD_TEST_REDIS_URL is not set (.ci/run sets it)");
            None
        }
    }
}

/// A key prefix no other test run uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("herald-test:{}:{test}:{nanos}:", std::process::id())
}

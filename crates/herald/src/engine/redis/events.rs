//! The log of lifecycle events in Redis: one stream for the cluster, `<prefix>webhooks:log` (on a Redis Cluster
//! `{<prefix>webhooks}:log`, and the other keys below alike, one hash tag for them all).
//!
//! Presence scripts append their transitions to it in the step that observes them (`presence/scripts.rs`,
//! `log_event`), so each is logged once, in the order Redis ran the scripts; [`RedisLog::append`] adds the rest,
//! and on a cluster the presence transitions too, right after the script that observed them
//! (`presence/cluster.rs`).
//! Each entry has the stream's own id (unique and increasing, the event's id for receivers) and a number `n` from
//! `<prefix>webhooks:n`, one more per entry, so a reader that finds a gap knows how many were trimmed unread. The
//! stream keeps about `capacity` entries (`MAXLEN ~`). Readers' positions are `<prefix>webhooks:acked:<reader>`,
//! and the one node that delivers holds `<prefix>webhooks:leader` for a ttl it renews.
//!
//! Waiting for news uses a connection of its own (`XREAD BLOCK`), so it never holds up the engine's commands.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use herald_proto::ChannelName;
use redis::{Script, Value};
use tokio::sync::{Mutex, OnceCell};

use super::connection::{Commands, Deployment};
use super::Inner;
use crate::engine::events::{Entry, EventKind, EventLog, LifecycleEvent, LogId};
use crate::engine::{BoxFuture, EngineError};

/// How long a wait for news blocks at most.
const WAIT: Duration = Duration::from_secs(1);

/// Appends one entry. KEYS: the stream, the counter. ARGV: capacity, then field, value, … (without `n`).
const APPEND: &str = r"
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'n', n, unpack(ARGV, 2))
return n
";

/// Takes or renews the lead. KEYS: the leader key. ARGV: node, ttl (ms). Returns 1 when `node` leads.
const LEAD: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// The Redis engine's log.
pub(super) struct RedisLog {
    inner: Arc<Inner>,
    deployment: Arc<Deployment>,
    append: Script,
    lead: Script,
    /// The connection that blocks waiting for news, made when first needed.
    waiting: OnceCell<Mutex<Commands>>,
}

impl RedisLog {
    pub(super) fn new(inner: Arc<Inner>, deployment: Arc<Deployment>) -> Self {
        Self { inner, deployment, append: Script::new(APPEND), lead: Script::new(LEAD), waiting: OnceCell::new() }
    }

    /// A key of the log. On a cluster they share one hash tag, so that appending (the stream and its counter) is
    /// one script.
    fn key(&self, what: &str) -> String {
        let prefix = &self.inner.config.redis_prefix;
        match self.inner.commands {
            Commands::Cluster(_) => format!("{{{prefix}webhooks}}:{what}"),
            Commands::Single(_) => format!("{prefix}webhooks:{what}"),
        }
    }

    /// Reads `XRANGE`/`XREAD` entries: `[[id, [field, value, …]], …]`.
    fn entries(reply: Value) -> Result<Vec<Entry>, EngineError> {
        let bad = |what: &str| EngineError::Unavailable(format!("unreadable webhook log entry: {what}"));
        let Value::Array(items) = reply else { return Ok(Vec::new()) };
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let (id, fields): (String, Vec<Vec<u8>>) = redis::from_redis_value(item).map_err(|_| bad("shape"))?;
            let field = |name: &str| {
                fields.chunks(2).find(|pair| pair[0] == name.as_bytes()).and_then(|pair| pair.get(1)).cloned()
            };
            let text = |name: &str| field(name).and_then(|v| String::from_utf8(v).ok());
            let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
            let kind = text("name").and_then(|n| EventKind::from_name(&n)).ok_or_else(|| bad("name"))?;
            let channel = text("channel").and_then(|c| ChannelName::new(&c).ok()).ok_or_else(|| bad("channel"))?;
            let mut event = LifecycleEvent::new(kind, channel, number("t").unwrap_or_default());
            event.user_id = text("user_id");
            event.user_info = field("user_info").map(Into::into);
            event.event = text("event");
            event.data = text("data");
            event.socket_id = text("socket_id");
            entries.push(Entry { id: LogId { id, n: number("n").ok_or_else(|| bad("n"))? }, event });
        }
        Ok(entries)
    }

    async fn waiting(&self) -> Option<&Mutex<Commands>> {
        let made =
            self.waiting.get_or_try_init(|| async { self.deployment.commands(WAIT * 3).await.map(Mutex::new) }).await;
        made.ok()
    }
}

/// The capacity scripts are given: 0 while logging is off.
pub(super) fn capacity(inner: &Inner) -> usize {
    inner.events_capacity.load(Ordering::Relaxed)
}

impl EventLog for RedisLog {
    fn enable(&self, capacity: usize) {
        self.inner.events_capacity.store(capacity, Ordering::Relaxed);
    }

    fn append(&self, event: LifecycleEvent) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let capacity = capacity(&self.inner);
            if capacity == 0 {
                return Ok(());
            }
            let mut fields: Vec<(&str, Vec<u8>)> = vec![
                ("name", event.kind.name().into()),
                ("channel", event.channel.as_str().into()),
                ("t", event.time_ms.to_string().into()),
            ];
            let optional = [
                ("user_id", event.user_id.map(String::into_bytes)),
                ("user_info", event.user_info.map(|b| b.to_vec())),
                ("event", event.event.map(String::into_bytes)),
                ("data", event.data.map(String::into_bytes)),
                ("socket_id", event.socket_id.map(String::into_bytes)),
            ];
            fields.extend(optional.into_iter().filter_map(|(name, value)| Some((name, value?))));
            let keys = [self.key("log"), self.key("n")];
            self.inner
                .run(false, |mut con| {
                    let mut invocation = self.append.key(&keys[0]);
                    invocation.key(&keys[1]).arg(capacity);
                    for (name, value) in &fields {
                        invocation.arg(*name).arg(&value[..]);
                    }
                    async move { invocation.invoke_async::<u64>(&mut con).await }
                })
                .await
                .map(|_| ())
        })
    }

    fn read<'a>(&'a self, after: Option<&'a LogId>, limit: usize) -> BoxFuture<'a, Result<Vec<Entry>, EngineError>> {
        Box::pin(async move {
            let start = after.map_or_else(|| "-".to_string(), |id| format!("({}", id.id));
            let key = self.key("log");
            let reply: Value = self
                .inner
                .run(true, |mut con| {
                    let mut command = redis::cmd("XRANGE");
                    command.arg(&key).arg(&start).arg("+").arg("COUNT").arg(limit);
                    async move { command.query_async(&mut con).await }
                })
                .await?;
            Self::entries(reply)
        })
    }

    fn head(&self) -> BoxFuture<'_, Result<Option<LogId>, EngineError>> {
        Box::pin(async move {
            let key = self.key("log");
            let reply: Value = self
                .inner
                .run(true, |mut con| {
                    let mut command = redis::cmd("XREVRANGE");
                    command.arg(&key).arg("+").arg("-").arg("COUNT").arg(1);
                    async move { command.query_async(&mut con).await }
                })
                .await?;
            Ok(Self::entries(reply)?.pop().map(|entry| entry.id))
        })
    }

    fn acked<'a>(&'a self, reader: &'a str) -> BoxFuture<'a, Result<Option<LogId>, EngineError>> {
        Box::pin(async move {
            let key = self.key(&format!("acked:{reader}"));
            let text: Option<String> = self
                .inner
                .run(true, |mut con| {
                    let command = redis::cmd("GET").arg(&key).clone();
                    async move { command.query_async(&mut con).await }
                })
                .await?;
            Ok(text.and_then(|text| {
                let (id, n) = text.split_once(' ')?;
                Some(LogId { id: id.to_owned(), n: n.parse().ok()? })
            }))
        })
    }

    fn ack<'a>(&'a self, reader: &'a str, id: &'a LogId) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let key = self.key(&format!("acked:{reader}"));
            let value = format!("{} {}", id.id, id.n);
            self.inner
                .run(true, |mut con| {
                    let command = redis::cmd("SET").arg(&key).arg(&value).clone();
                    async move { command.query_async::<()>(&mut con).await }
                })
                .await
        })
    }

    fn lead<'a>(&'a self, node: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(async move {
            let key = self.key("leader");
            let ttl = ttl.as_millis().to_string();
            let led: i64 = self
                .inner
                .run(true, |mut con| {
                    let mut invocation = self.lead.key(&key);
                    invocation.arg(node).arg(&ttl);
                    async move { invocation.invoke_async(&mut con).await }
                })
                .await?;
            Ok(led == 1)
        })
    }

    fn changed<'a>(&'a self, after: Option<&'a LogId>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(waiting) = self.waiting().await else {
                tokio::time::sleep(WAIT).await;
                return;
            };
            let from = after.map_or("0-0", |id| id.id.as_str());
            let mut con = waiting.lock().await;
            let mut command = redis::cmd("XREAD");
            command.arg("COUNT").arg(1).arg("BLOCK").arg(WAIT.as_millis() as u64).arg("STREAMS").arg(self.key("log"));
            let waited: Result<Value, _> = command.arg(from).query_async(&mut *con).await;
            if waited.is_err() {
                drop(con);
                tokio::time::sleep(WAIT).await;
            }
        })
    }
}

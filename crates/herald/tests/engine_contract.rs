//! One contract, every engine: the same cases run against the in-memory engine, the disk engine and Redis,
//! through the hub's public API, so all store, trim, read, watch and sweep by the same rules.
//!
//! Each case is written once, as a function of a hub factory, and instantiated per engine by [`contract!`] as a
//! test of its own (`memory::case`, `disk::case`, `redis::case`), so a failure on one engine never hides another's.
//! Each disk case has a data dir of its own, removed as soon as the engine has opened its file (which it keeps
//! open).
//! The Redis tests need `HERALD_TEST_REDIS_URL` (`.ci/run` sets it) and say `skipped` without it; each uses a
//! key prefix of its own. An engine added later (a disk engine, Redis Cluster) gets the whole suite with one line.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald::config::{Config, EngineKind};
use herald::hub::{Hub, Item, Origin, Start, Subscription};
use herald::metrics::Transport;
use herald_proto::{ChannelName, EventName, Position};

/// Which engine a case runs on.
#[derive(Clone, Copy)]
enum Engine {
    Memory,
    Disk,
    Redis,
    /// A Redis Cluster of the test binary's own (three shards, a replica each), with sharded Pub/Sub.
    RedisCluster,
}

thread_local! {
    /// The cluster a case's hubs run on, held until the case's thread ends.
    static CLUSTER: std::cell::RefCell<Option<Arc<common::cluster::OwnCluster>>> = const { std::cell::RefCell::new(None) };
    /// The data directories of a case's disk hubs, removed when the case's thread ends (after its runtime, and so
    /// its engines, have stopped).
    static DATA_DIRS: std::cell::RefCell<Vec<DataDir>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A disk hub's scratch directory, removed on drop.
struct DataDir(std::path::PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds a hub of one engine for one case, with `tweak` applied to its configuration; `None` when that engine
/// cannot run here (no Redis for the suite).
#[derive(Clone, Copy)]
struct Hubs {
    engine: Engine,
    case: &'static str,
}

impl Hubs {
    async fn with(self, tweak: impl Fn(&mut Config)) -> Option<Arc<Hub>> {
        match self.engine {
            Engine::Memory => {
                let mut config = Config::default();
                tweak(&mut config);
                Some(hub(config).await)
            }
            Engine::Disk => {
                let dir = common::scratch_dir(self.case);
                let mut config = Config { engine: EngineKind::Disk, data_dir: Some(dir.clone()), ..Config::default() };
                tweak(&mut config);
                DATA_DIRS.with(|dirs| dirs.borrow_mut().push(DataDir(dir)));
                Some(hub(config).await)
            }
            Engine::Redis => {
                let url = common::node::test_redis_url()?;
                let mut config = Config {
                    engine: EngineKind::Redis,
                    redis_url: url,
                    redis_prefix: common::node::unique_prefix(self.case),
                    ..Config::default()
                };
                tweak(&mut config);
                Some(hub(config).await)
            }
            Engine::RedisCluster => {
                let cluster = CLUSTER
                    .with(|held| held.borrow_mut().get_or_insert_with(common::cluster::OwnCluster::shared).clone());
                let mut config = Config {
                    engine: EngineKind::Redis,
                    redis_url: cluster.url(),
                    redis_prefix: common::node::unique_prefix(self.case),
                    ..Config::default()
                };
                tweak(&mut config);
                Some(hub(config).await)
            }
        }
    }

    async fn default(self) -> Option<Arc<Hub>> {
        self.with(|_| {}).await
    }
}

/// A hub on the engine `config` names, started as the server starts it.
async fn hub(config: Config) -> Arc<Hub> {
    let config = Arc::new(config);
    Hub::new(config.clone(), |deliver, metrics| herald::engine::start(config, deliver, metrics))
        .await
        .expect("the engine starts")
}

/// Instantiates every case once per engine.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Hubs { engine: super::Engine::Memory, case: stringify!($case) }).await;
            })*
        }
        mod disk {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Hubs { engine: super::Engine::Disk, case: stringify!($case) }).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Hubs { engine: super::Engine::Redis, case: stringify!($case) }).await;
            })*
        }
        mod redis_cluster {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Hubs { engine: super::Engine::RedisCluster, case: stringify!($case) }).await;
            })*
        }
    };
}

contract!(
    offsets_start_at_one_without_gaps_in_one_epoch,
    reads_honour_every_start,
    a_position_the_history_cannot_honour_is_a_reset_with_what_remains,
    stored_messages_read_back_exactly,
    messages_older_than_the_namespace_ttl_are_dropped,
    a_subscriber_receives_each_stored_message_once_in_order,
    a_subscriber_that_unsubscribed_receives_nothing_while_others_still_do,
    a_channel_watched_again_after_everyone_left_delivers_again,
    a_sweep_keeps_a_watched_channel_and_its_offsets,
    a_connected_engine_is_healthy,
    a_subscribe_cancelled_half_way_leaves_nothing_followed,
    an_origin_travels_with_its_message_to_history_and_subscribers,
    a_signal_reaches_every_node_once_and_is_not_stored,
);

fn ch(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

async fn publish(hub: &Hub, channel: &str, n: u64) -> Vec<Position> {
    let mut out = Vec::new();
    for i in 1..=n {
        let data = Bytes::from(format!("{{\"i\":{i}}}"));
        out.push(hub.publish(ch(channel), EventName::default_event(), data).await.unwrap().message.position);
    }
    out
}

async fn offsets(hub: &Hub, channel: &str, start: Start, limit: usize) -> (Vec<u64>, bool) {
    let read = hub.read(&ch(channel), start, limit).await.unwrap();
    (read.messages.iter().map(|m| m.message.position.offset).collect(), read.reset)
}

async fn offsets_start_at_one_without_gaps_in_one_epoch(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    let positions = publish(&hub, "a", 5).await;
    assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3, 4, 5], "{}", hub.engine_name());
    assert!(positions.iter().all(|p| p.epoch == positions[0].epoch && p.epoch != 0));
    assert_eq!(publish(&hub, "b", 1).await[0].offset, 1, "each channel counts on its own");
}

async fn reads_honour_every_start(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    let epoch = publish(&hub, "a", 5).await[0].epoch;
    let name = hub.engine_name();
    assert_eq!(offsets(&hub, "a", Start::Oldest, 100).await, (vec![1, 2, 3, 4, 5], false), "{name}");
    assert_eq!(offsets(&hub, "a", Start::Oldest, 2).await, (vec![1, 2], false), "{name}");
    assert_eq!(offsets(&hub, "a", Start::Newest(2), 100).await, (vec![4, 5], false), "{name}");
    assert_eq!(offsets(&hub, "a", Start::Now, 100).await, (vec![], false), "{name}");
    assert_eq!(offsets(&hub, "a", Start::After(Position::new(epoch, 3)), 100).await, (vec![4, 5], false));
    assert_eq!(offsets(&hub, "a", Start::After(Position::new(epoch, 5)), 100).await, (vec![], false));
    assert_eq!(offsets(&hub, "a", Start::After(Position::default()), 100).await, (vec![1, 2, 3, 4, 5], false));
    let read = hub.read(&ch("a"), Start::After(Position::new(epoch, 3)), 1).await.unwrap();
    assert_eq!(
        (read.start, read.head, read.end()),
        (Position::new(epoch, 3), Position::new(epoch, 5), Position::new(epoch, 4))
    );
}

async fn a_position_the_history_cannot_honour_is_a_reset_with_what_remains(hubs: Hubs) {
    let Some(hub) = hubs.with(|c| c.default_namespace.history_size = 3).await else { return };
    let epoch = publish(&hub, "a", 5).await[0].epoch;
    let name = hub.engine_name();
    assert_eq!(offsets(&hub, "a", Start::After(Position::new(epoch, 1)), 100).await, (vec![3, 4, 5], true), "{name}");
    assert_eq!(offsets(&hub, "a", Start::After(Position::new(epoch, 2)), 100).await, (vec![3, 4, 5], false), "{name}");
    assert_eq!(offsets(&hub, "a", Start::After(Position::new(epoch + 1, 4)), 100).await, (vec![3, 4, 5], true));
    assert_eq!(offsets(&hub, "a", Start::After(Position::new(epoch, 9)), 100).await, (vec![3, 4, 5], true));
    assert_eq!(offsets(&hub, "a", Start::After(Position::default()), 100).await, (vec![3, 4, 5], true));
    assert_eq!(offsets(&hub, "none", Start::After(Position::new(epoch, 1)), 100).await, (vec![], true));
    assert_eq!(offsets(&hub, "none", Start::After(Position::default()), 100).await, (vec![], false));
    assert_eq!(offsets(&hub, "none", Start::Oldest, 100).await, (vec![], false));
}

async fn stored_messages_read_back_exactly(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    let data = Bytes::from_static(br#"{"z":1,"a":"line\nbreak","big":123456789012345678901234567890}"#);
    let stored = hub.publish(ch("x:y/z@w=v"), EventName::new("ev.t:1-2").unwrap(), data.clone()).await.unwrap();
    let read = hub.read(&ch("x:y/z@w=v"), Start::Oldest, 10).await.unwrap();
    let back = &read.messages[0];
    assert_eq!(back.envelope, stored.envelope, "{}", hub.engine_name());
    assert_eq!(back.message.data, data);
}

async fn messages_older_than_the_namespace_ttl_are_dropped(hubs: Hubs) {
    let Some(hub) = hubs.with(|c| c.default_namespace.history_ttl = Duration::from_secs(1)).await else { return };
    publish(&hub, "a", 2).await;
    // Real time for Redis (it keeps its own clock): wait until the history is empty, at most a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !offsets(&hub, "a", Start::Oldest, 10).await.0.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "{} kept expired messages", hub.engine_name());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(publish(&hub, "a", 1).await[0].offset, 3, "expiry keeps the offset counter");
}

async fn a_subscriber_receives_each_stored_message_once_in_order(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    let mut connection = subscribed(&hub, "a").await;
    publish(&hub, "a", 20).await;
    assert_eq!(received(&mut connection, 20).await, (1..=20).collect::<Vec<_>>());
}

/// A subscription to the live messages of `channel`, with no history.
async fn subscribed(hub: &Arc<Hub>, channel: &str) -> Subscription {
    let mut subscription = hub.subscription(Transport::WebSocket);
    subscription.subscribe(&ch(channel), Start::Now, 0).await.unwrap();
    subscription
}

/// The offsets of the next `n` live messages of `subscription`.
async fn received(subscription: &mut Subscription, n: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let live = tokio::time::timeout(common::PATIENCE, subscription.recv()).await.unwrap();
        for item in subscription.follow(live, n - seen.len()).await.into_result().unwrap() {
            match item {
                Item::Message(message) => seen.push(message.message.position.offset),
                Item::Reset { channel, .. } => panic!("a reset of {channel}"),
                Item::Presence(event) => panic!("a change of presence of {}", event.channel),
            }
        }
    }
    seen
}

/// Whether a live message of `subscription` is waiting, without waiting for one.
async fn has_news(subscription: &mut Subscription) -> bool {
    tokio::time::timeout(Duration::from_millis(50), subscription.recv()).await.is_ok()
}

async fn a_subscriber_that_unsubscribed_receives_nothing_while_others_still_do(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    let (mut gone, mut staying) = (subscribed(&hub, "a").await, subscribed(&hub, "a").await);
    assert!(gone.unsubscribe(&ch("a")));
    publish(&hub, "a", 3).await;
    assert_eq!(received(&mut staying, 3).await, [1, 2, 3]);
    // One delivery hands a message to every subscriber of the channel: had `gone` been one, it would hold them now.
    assert!(!has_news(&mut gone).await);
}

async fn a_channel_watched_again_after_everyone_left_delivers_again(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    {
        let mut first = subscribed(&hub, "a").await;
        publish(&hub, "a", 1).await;
        assert_eq!(received(&mut first, 1).await, [1]);
    }
    let mut again = subscribed(&hub, "a").await;
    publish(&hub, "a", 2).await;
    assert_eq!(received(&mut again, 2).await, [2, 3]);
}

async fn a_sweep_keeps_a_watched_channel_and_its_offsets(hubs: Hubs) {
    let ttl = Duration::from_millis(300);
    let Some(hub) = hubs.with(|c| c.default_namespace.history_ttl = ttl).await else { return };
    let mut watching = subscribed(&hub, "a").await;
    let first = publish(&hub, "a", 2).await;
    assert_eq!(received(&mut watching, 2).await, [1, 2]);
    // Real time for Redis, which keeps its own clock.
    tokio::time::sleep(ttl * 2).await;
    hub.sweep();
    assert_eq!(offsets(&hub, "a", Start::Oldest, 10).await, (vec![], false), "the expired history is gone");
    let next = publish(&hub, "a", 1).await[0];
    assert_eq!((next.epoch, next.offset), (first[0].epoch, 3), "same epoch, the counter kept");
    assert_eq!(received(&mut watching, 1).await, [3]);
}

async fn a_connected_engine_is_healthy(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    assert!(hub.healthy());
    publish(&hub, "a", 1).await;
    assert!(hub.healthy());
}

async fn a_subscribe_cancelled_half_way_leaves_nothing_followed(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    let mut subscription = hub.subscription(Transport::WebSocket);
    // Polled once, then dropped, as when its client leaves while the engine confirms the subscription.
    let _ = futures_util::FutureExt::now_or_never(subscription.subscribe(&ch("a"), Start::Now, 0));
    drop(subscription);
    assert_eq!(hub.stats().channels, 0, "the engine follows no channel for nobody");
}

async fn an_origin_travels_with_its_message_to_history_and_subscribers(hubs: Hubs) {
    let Some(hub) = hubs.default().await else { return };
    let mut watching = subscribed(&hub, "app:private-chat").await;
    let origin = Origin { sender: Some("12.34".into()), user_id: Some("u \"7\"".into()), data_as_value: true };
    let event = EventName::any(r"App\Events\Said").unwrap();
    let data = Bytes::from_static(br#"{"text": "hi"}"#);
    hub.publish_from(ch("app:private-chat"), event.clone(), data.clone(), origin.clone()).await.unwrap();
    hub.publish(ch("app:private-chat"), EventName::default_event(), Bytes::from_static(b"1")).await.unwrap();
    let read = hub.read(&ch("app:private-chat"), Start::Oldest, 10).await.unwrap();
    let stored: Vec<(Origin, String)> =
        read.messages.iter().map(|m| (m.origin.clone(), m.message.event.to_string())).collect();
    assert_eq!(
        stored,
        [(origin.clone(), event.to_string()), (Origin::default(), "message".into())],
        "{}",
        hub.engine_name()
    );
    assert_eq!(read.messages[0].message.data, data, "kept as given");
    let live = tokio::time::timeout(common::PATIENCE, watching.recv()).await.unwrap();
    let Item::Message(first) = watching.follow(live, 1).await.into_result().unwrap().remove(0) else {
        panic!("a reset")
    };
    assert_eq!((&first.origin, &first.message.event), (&origin, &event), "{}", hub.engine_name());
}

async fn a_signal_reaches_every_node_once_and_is_not_stored(hubs: Hubs) {
    let Some(a) = hubs.default().await else { return };
    // A second node on the same store (Redis: the same prefix); the memory and disk engines are one node.
    let b = match hubs.engine {
        Engine::Memory | Engine::Disk => None,
        Engine::Redis | Engine::RedisCluster => {
            let prefix = a.config().redis_prefix.clone();
            let url = a.config().redis_url.clone();
            Some(
                hub(Config { engine: EngineKind::Redis, redis_url: url, redis_prefix: prefix, ..Config::default() })
                    .await,
            )
        }
    };
    let mut receivers = vec![a.signals(), a.signals()];
    receivers.extend(b.as_ref().map(|b| b.signals()));
    // Redis confirms each node's subscription to signals asynchronously: probe until every receiver hears.
    let mut sent = 0;
    for receiver in &mut receivers {
        while tokio::time::timeout(Duration::from_millis(200), receiver.recv()).await.is_err() {
            a.signal(Bytes::from(format!("probe-{sent}"))).await.unwrap();
            sent += 1;
            assert!(sent < 50, "no signal arrived on {}", a.engine_name());
        }
    }
    a.signal(Bytes::from_static(b"close user 7")).await.unwrap();
    for receiver in &mut receivers {
        let got = tokio::time::timeout(common::PATIENCE, async {
            loop {
                let signal = receiver.recv().await.unwrap();
                if &signal[..] == b"close user 7" {
                    return signal;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("a receiver of {} missed the signal", a.engine_name()));
        assert_eq!(&got[..], b"close user 7");
        assert!(receiver.try_recv().is_err(), "once");
    }
    assert_eq!(a.stats().messages, 0, "nothing stored");
}

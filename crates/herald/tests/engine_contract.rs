//! One contract, every engine: the same cases run against the in-memory engine and against Redis, through the
//! hub's public API, so both store, trim and read by the same rules.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald::config::{Config, EngineKind};
use herald::engine::Start;
use herald::hub::Hub;
use herald_proto::{ChannelName, EventName, Position};

/// Hubs to test: memory always, Redis when the suite has one.
async fn hubs(test: &str, tweak: impl Fn(&mut Config)) -> Vec<Arc<Hub>> {
    let mut memory = Config::default();
    tweak(&mut memory);
    let mut hubs = vec![Hub::memory(Arc::new(memory))];
    if let Some(url) = common::node::test_redis_url() {
        let mut redis = Config {
            engine: EngineKind::Redis,
            redis_url: url,
            redis_prefix: common::node::unique_prefix(test),
            ..Config::default()
        };
        tweak(&mut redis);
        hubs.push(Hub::start(Arc::new(redis)).await.expect("redis is reachable"));
    }
    hubs
}

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

#[tokio::test]
async fn offsets_start_at_one_without_gaps_in_one_epoch() {
    for hub in hubs("offsets", |_| {}).await {
        let positions = publish(&hub, "a", 5).await;
        assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3, 4, 5], "{}", hub.engine_name());
        assert!(positions.iter().all(|p| p.epoch == positions[0].epoch && p.epoch != 0));
        assert_eq!(publish(&hub, "b", 1).await[0].offset, 1, "each channel counts on its own");
    }
}

#[tokio::test]
async fn reads_honour_every_start() {
    for hub in hubs("starts", |_| {}).await {
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
}

#[tokio::test]
async fn a_position_the_history_cannot_honour_is_a_reset_with_what_remains() {
    for hub in hubs("reset", |c| c.default_namespace.history_size = 3).await {
        let epoch = publish(&hub, "a", 5).await[0].epoch;
        let name = hub.engine_name();
        assert_eq!(
            offsets(&hub, "a", Start::After(Position::new(epoch, 1)), 100).await,
            (vec![3, 4, 5], true),
            "{name}"
        );
        assert_eq!(
            offsets(&hub, "a", Start::After(Position::new(epoch, 2)), 100).await,
            (vec![3, 4, 5], false),
            "{name}"
        );
        assert_eq!(offsets(&hub, "a", Start::After(Position::new(epoch + 1, 4)), 100).await, (vec![3, 4, 5], true));
        assert_eq!(offsets(&hub, "a", Start::After(Position::new(epoch, 9)), 100).await, (vec![3, 4, 5], true));
        assert_eq!(offsets(&hub, "a", Start::After(Position::default()), 100).await, (vec![3, 4, 5], true));
        assert_eq!(offsets(&hub, "none", Start::After(Position::new(epoch, 1)), 100).await, (vec![], true));
        assert_eq!(offsets(&hub, "none", Start::After(Position::default()), 100).await, (vec![], false));
        assert_eq!(offsets(&hub, "none", Start::Oldest, 100).await, (vec![], false));
    }
}

#[tokio::test]
async fn stored_messages_read_back_exactly() {
    for hub in hubs("exact", |_| {}).await {
        let data = Bytes::from_static(br#"{"z":1,"a":"line\nbreak","big":123456789012345678901234567890}"#);
        let stored = hub.publish(ch("x:y/z@w=v"), EventName::new("ev.t:1-2").unwrap(), data.clone()).await.unwrap();
        let read = hub.read(&ch("x:y/z@w=v"), Start::Oldest, 10).await.unwrap();
        let back = &read.messages[0];
        assert_eq!(back.envelope, stored.envelope, "{}", hub.engine_name());
        assert_eq!(back.message.data, data);
    }
}

#[tokio::test]
async fn messages_older_than_the_namespace_ttl_are_dropped() {
    for hub in hubs("ttl", |c| c.default_namespace.history_ttl = Duration::from_secs(1)).await {
        publish(&hub, "a", 2).await;
        // Real time for Redis (it keeps its own clock): wait until the history is empty, at most a few seconds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !offsets(&hub, "a", Start::Oldest, 10).await.0.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "{} kept expired messages", hub.engine_name());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(publish(&hub, "a", 1).await[0].offset, 3, "expiry keeps the offset counter");
    }
}

#[tokio::test]
async fn a_subscriber_receives_each_stored_message_once_in_order() {
    for hub in hubs("live", |_| {}).await {
        let mut connection = hub.connect(herald::metrics::Transport::WebSocket);
        connection.subscribe(&ch("a")).await;
        publish(&hub, "a", 20).await;
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let message = tokio::time::timeout(common::PATIENCE, connection.recv()).await.unwrap().unwrap();
            seen.push(message.message.position.offset);
        }
        assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "{}", hub.engine_name());
    }
}

//! Several Herald nodes sharing channels through Redis, as separate processes: fan-out between nodes over every
//! transport, one gap-free sequence from publishers on every node, a crashed node's clients resuming elsewhere,
//! long polls landing on a different node each time, and Redis itself going away and coming back (without
//! flooding subscribers that missed nothing).
//!
//! These tests need `HERALD_TEST_REDIS_URL` (`.ci/run` sets it); each uses its own key prefix. The tests that
//! restart Redis start a `redis-server` of their own on a spare port.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use std::time::Duration;

use common::node::{test_redis_url, unique_prefix, Node, OwnRedis};
use common::PATIENCE;
use herald_client::{Client, Event, SubscribeOptions, Subscription, Transport};
use serde_json::json;

const TRANSPORTS: [Transport; 4] = [
    Transport::WebSocket,
    Transport::Sse,
    Transport::LongPoll,
    Transport::Poll { interval: Duration::from_millis(50) },
];

async fn nodes(n: usize, redis_url: &str, prefix: &str) -> Vec<Node> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            Node::start(&["--engine", "redis", "--redis-url", redis_url], &[("HERALD_REDIS_PREFIX", prefix)]).await,
        );
    }
    out
}

async fn subscribe(node: &Node, channel: &str, transport: Transport, since: Option<&str>) -> Subscription {
    let mut options = SubscribeOptions::new([channel], transport);
    if let Some(since) = since {
        options = options.since(since);
    }
    Client::new(&node.url()).unwrap().subscribe(options).await.unwrap()
}

/// The next `n` events as (offset, data "i"), failing on a reset.
async fn next_offsets(subscription: &mut Subscription, n: usize) -> Vec<(u64, i64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let event = tokio::time::timeout(PATIENCE, subscription.next()).await.expect("in time").expect("open").unwrap();
        match event {
            Event::Message(m) => {
                let data: serde_json::Value = serde_json::from_str(m.data.get()).unwrap();
                out.push((m.offset, data["i"].as_i64().unwrap()));
            }
            Event::Reset { channels } => panic!("unexpected reset of {channels:?}"),
        }
    }
    out
}

async fn publish(node: &Node, channel: &str, i: i64) -> herald_client::Published {
    Client::new(&node.url()).unwrap().publish(channel, Some("tick"), &json!({ "i": i })).await.unwrap()
}

#[tokio::test]
async fn a_message_published_on_one_node_reaches_subscribers_on_the_others_over_every_transport() {
    let Some(redis) = test_redis_url() else { return };
    let nodes = nodes(3, &redis, &unique_prefix("fanout")).await;
    let mut subscriptions = Vec::new();
    for node in &nodes[1..] {
        for transport in TRANSPORTS {
            subscriptions.push((transport, subscribe(node, "orders", transport, None).await));
        }
    }
    for i in 1..=20 {
        publish(&nodes[0], "orders", i).await;
    }
    let expected: Vec<(u64, i64)> = (1..=20).map(|i| (i as u64, i)).collect();
    for (transport, subscription) in &mut subscriptions {
        assert_eq!(next_offsets(subscription, 20).await, expected, "{transport:?}");
    }
}

#[tokio::test]
async fn publishers_on_every_node_at_once_make_one_gapless_sequence_seen_identically_everywhere() {
    let Some(redis) = test_redis_url() else { return };
    let nodes = nodes(3, &redis, &unique_prefix("concurrent")).await;
    let mut subscriptions = Vec::new();
    for node in &nodes {
        subscriptions.push(subscribe(node, "chat:room", Transport::WebSocket, None).await);
    }
    let mut publishers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let url = node.url();
        publishers.push(tokio::spawn(async move {
            let client = Client::new(&url).unwrap();
            for i in 0..30 {
                client.publish("chat:room", None, &json!({ "i": n as i64 * 100 + i })).await.unwrap();
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let first = next_offsets(&mut subscriptions[0], 90).await;
    assert_eq!(first.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (1..=90).collect::<Vec<_>>());
    let mut data: Vec<i64> = first.iter().map(|(_, i)| *i).collect();
    data.sort_unstable();
    data.dedup();
    assert_eq!(data.len(), 90, "every publish stored once");
    for subscription in &mut subscriptions[1..] {
        assert_eq!(next_offsets(subscription, 90).await, first, "every node sees the same sequence");
    }
}

#[tokio::test]
async fn after_a_node_crashes_its_clients_resume_on_another_node_with_exactly_what_they_missed() {
    let Some(redis) = test_redis_url() else { return };
    let mut nodes = nodes(3, &redis, &unique_prefix("crash")).await;
    let mut subscriptions = Vec::new();
    for transport in TRANSPORTS {
        subscriptions.push((transport, subscribe(&nodes[1], "feed", transport, None).await));
    }
    for i in 1..=5 {
        publish(&nodes[0], "feed", i).await;
    }
    let mut cursors = Vec::new();
    for (transport, subscription) in &mut subscriptions {
        assert_eq!(next_offsets(subscription, 5).await.last(), Some(&(5, 5)), "{transport:?}");
        cursors.push((*transport, subscription.cursor()));
    }
    let crashed = nodes.remove(1);
    crashed.crash().await;
    for i in 6..=12 {
        publish(&nodes[0], "feed", i).await;
    }
    let expected: Vec<(u64, i64)> = (6..=12).map(|i| (i as u64, i)).collect();
    for (transport, cursor) in cursors {
        let mut resumed = subscribe(&nodes[1], "feed", transport, Some(&cursor)).await;
        assert_eq!(next_offsets(&mut resumed, 7).await, expected, "{transport:?}");
    }
}

#[tokio::test]
async fn a_long_poll_client_landing_on_a_different_node_each_time_loses_nothing() {
    let Some(redis) = test_redis_url() else { return };
    let nodes = nodes(3, &redis, &unique_prefix("roundrobin")).await;
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let publisher = {
        let urls = urls.clone();
        tokio::spawn(async move {
            for i in 1..=60i64 {
                let client = Client::new(&urls[(i as usize * 7) % 3]).unwrap();
                client.publish("orders:7", None, &json!({ "i": i })).await.unwrap();
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut request = 0;
    while seen.len() < 60 {
        let node = &nodes[request % 3];
        request += 1;
        let since = cursor.as_deref().map(|c| format!("&since={c}")).unwrap_or_default();
        let answer = node.client.get(&format!("/v1/poll?channel=orders:7&wait=5{since}")).await.json();
        assert_eq!(answer["reset"], false);
        for m in answer["messages"].as_array().unwrap() {
            seen.push(m["offset"].as_u64().unwrap());
        }
        cursor = answer["cursor"].as_str().map(str::to_owned);
        assert!(request < 500, "too many polls: {seen:?}");
    }
    publisher.await.unwrap();
    assert_eq!(seen, (1..=60).collect::<Vec<_>>());
    assert!(request >= 3, "the polls went round the nodes");
}

/// Waits until `/healthz` answers `status`.
async fn until_health(node: &Node, status: u16) {
    tokio::time::timeout(PATIENCE * 2, async {
        while node.client.get("/healthz").await.status != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/healthz never answered {status}"));
}

#[tokio::test]
async fn while_redis_is_down_publishing_fails_cleanly_and_subscribers_resume_gapless_when_it_returns() {
    if test_redis_url().is_none() {
        return;
    }
    let mut redis = OwnRedis::start(true).await;
    let node = Node::start(&["--engine", "redis", "--redis-url", &redis.url()], &[]).await;
    let mut subscriptions = Vec::new();
    for transport in [Transport::WebSocket, Transport::Sse] {
        subscriptions.push((transport, subscribe(&node, "dashboard", transport, None).await));
    }
    for i in 1..=3 {
        publish(&node, "dashboard", i).await;
    }
    for (transport, subscription) in &mut subscriptions {
        assert_eq!(next_offsets(subscription, 3).await.len(), 3, "{transport:?}");
    }

    redis.stop().await;
    let refused = Client::new(&node.url()).unwrap().publish("dashboard", None, &json!({ "i": 99 })).await;
    match refused {
        Err(herald_client::ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (503, "engine_unavailable"))
        }
        other => panic!("expected 503 engine_unavailable, got {other:?}"),
    }
    until_health(&node, 503).await;

    redis.restart().await;
    until_health(&node, 200).await;
    for i in 4..=6 {
        publish(&node, "dashboard", i).await;
    }
    let expected: Vec<(u64, i64)> = (4..=6).map(|i| (i as u64, i)).collect();
    for (transport, subscription) in &mut subscriptions {
        assert_eq!(next_offsets(subscription, 3).await, expected, "{transport:?} stayed connected, no gap");
    }
}

#[tokio::test]
async fn when_redis_comes_back_without_the_data_subscribers_are_told_with_a_reset() {
    if test_redis_url().is_none() {
        return;
    }
    let mut redis = OwnRedis::start(false).await;
    let node = Node::start(&["--engine", "redis", "--redis-url", &redis.url()], &[]).await;
    let mut subscription = subscribe(&node, "dashboard", Transport::WebSocket, None).await;
    publish(&node, "dashboard", 1).await;
    publish(&node, "dashboard", 2).await;
    assert_eq!(next_offsets(&mut subscription, 2).await.len(), 2);

    redis.stop().await;
    redis.restart().await;
    until_health(&node, 200).await;
    publish(&node, "dashboard", 3).await;
    let event = tokio::time::timeout(PATIENCE, subscription.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(event, Event::Reset { .. }), "history was lost: {event:?}");
    assert_eq!(next_offsets(&mut subscription, 1).await, [(1, 3)], "then the new history, from its start");
}

/// A node on its own Redis whose channels keep 200 messages, more than a connection's queue (here 64), and
/// `clients` WebSocket subscribers of `dashboard` that have read 150 messages.
async fn node_with_a_long_history(redis: &OwnRedis, clients: usize) -> (Node, Vec<Subscription>) {
    let config = std::env::temp_dir().join(format!("herald-test-{}-{}.toml", std::process::id(), redis.port));
    std::fs::write(&config, "connection_queue = 64\n[default_namespace]\nhistory_size = 200\n").unwrap();
    let args = ["--engine", "redis", "--redis-url", &redis.url(), "--config", config.to_str().unwrap()];
    let node = Node::start(&args, &[]).await;
    std::fs::remove_file(&config).unwrap();
    let mut subscriptions = Vec::new();
    for _ in 0..clients {
        subscriptions.push(subscribe(&node, "dashboard", Transport::WebSocket, None).await);
    }
    let publisher = Client::new(&node.url()).unwrap();
    for i in 1..=150 {
        publisher.publish("dashboard", Some("tick"), &json!({ "i": i })).await.unwrap();
    }
    for subscription in &mut subscriptions {
        assert_eq!(next_offsets(subscription, 150).await.last(), Some(&(150, 150)));
    }
    (node, subscriptions)
}

/// Publishes `range` and asserts every subscription gets exactly those next, with no reset.
async fn assert_next_are(node: &Node, subscriptions: &mut [Subscription], range: std::ops::RangeInclusive<i64>) {
    for i in range.clone() {
        publish(node, "dashboard", i).await;
    }
    let expected: Vec<(u64, i64)> = range.map(|i| (i as u64, i)).collect();
    for subscription in subscriptions {
        assert_eq!(next_offsets(subscription, expected.len()).await, expected, "still connected, no gap");
    }
}

const SLOW_WS: &str = r#"herald_slow_consumer_disconnects_total{transport="ws"}"#;
const SUBSCRIBER_READS: &str = r#"herald_catch_up_reads_total{by="subscriber"}"#;
const NODE_READS: &str = r#"herald_catch_up_reads_total{by="node"}"#;

#[tokio::test]
async fn a_redis_restart_does_not_flood_or_disconnect_subscribers_that_missed_nothing() {
    if test_redis_url().is_none() {
        return;
    }
    let mut redis = OwnRedis::start(true).await;
    let (node, mut subscriptions) = node_with_a_long_history(&redis, 5).await;

    redis.stop().await;
    until_health(&node, 503).await;
    redis.restart().await;
    until_health(&node, 200).await;
    assert_next_are(&node, &mut subscriptions, 151..=152).await;
    assert_eq!(node.client.metric(SLOW_WS).await, 0, "nobody was flooded with history it had");
    assert_eq!(node.client.metric(SUBSCRIBER_READS).await, 0, "nobody had a gap to read");
    assert!(node.client.metric(NODE_READS).await >= 1, "the node caught its channel up (again, while Redis loads)");
}

#[tokio::test]
async fn messages_stored_while_pub_sub_was_cut_reach_every_subscriber_once_without_a_read_each() {
    if test_redis_url().is_none() {
        return;
    }
    let redis = OwnRedis::start(false).await;
    let (node, mut subscriptions) = node_with_a_long_history(&redis, 5).await;

    // Redis stays up; only this node's Pub/Sub connection is cut, and messages are stored before it is back.
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let killed: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut admin).await.unwrap();
    assert_eq!(killed, 1);
    assert_next_are(&node, &mut subscriptions, 151..=160).await;
    assert_eq!(node.client.metric(SLOW_WS).await, 0);
    assert_eq!(node.client.metric(SUBSCRIBER_READS).await, 0, "handed on once, not read by each subscriber");
    assert_eq!(node.client.metric(NODE_READS).await, 1, "one read for the channel");
}

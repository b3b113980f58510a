//! Webhooks against real HTTP receivers: the lifecycle of a channel and its members in order, signed; a receiver
//! that fails twice gets the same events again (same ids) until it answers 2xx; a receiver that hangs is given up
//! on at the timeout and retried while the others, and browsers, go on; an endpoint further behind than its queue
//! loses the oldest events, counted; client events and cache misses reach the endpoints that want them. Over
//! HTTPS: a receiver whose certificate chains to `webhook_ca_file` gets its events, signed; one whose certificate
//! nobody vouches for gets nothing, and the failed handshakes are retried and counted as TLS failures. On a Redis
//! Cluster (the test's own), two nodes sharing a channel and a member send each event of its lifecycle once.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::receiver::{Answers, Receiver};
use common::tls::TestCa;
use common::tokens;
use common::{spawn, TestServer, Ws};
use herald::config::{Config, EngineKind, NamespaceSettings, WebhookSettings};
use herald::webhooks::format::herald_signature;
use serde_json::{json, Value};

const SECRET: &str = "whsec-the-tests-0123456789";

fn hook(name: &str, receiver: &Receiver, events: &[&str], channels: &[&str]) -> WebhookSettings {
    WebhookSettings {
        name: Some(name.into()),
        url: receiver.url(),
        format: "herald".into(),
        secret: SECRET.into(),
        key: None,
        events: events.iter().map(|e| e.to_string()).collect(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
    }
}

/// `room:*` a public presence namespace where clients may publish; no grace; the given webhooks.
fn config(hooks: Vec<WebhookSettings>) -> Config {
    let mut config = common::config();
    config.jwt.secret = Some(tokens::SECRET.into());
    config.presence_grace = Duration::ZERO;
    config.webhook_max_backoff = Duration::from_secs(1);
    config.namespaces.insert(
        "room".into(),
        NamespaceSettings {
            presence: true,
            public: Some(true),
            allow_client_publish: true,
            ..NamespaceSettings::default()
        },
    );
    config.webhooks = hooks;
    config
}

/// A WebSocket of the user `sub` subscribed to `channel`.
async fn member(server: &TestServer, sub: &str, channel: &str) -> Ws {
    let token = tokens::hs256(&json!({ "sub": sub, "exp": tokens::now() + 600, "info": { "name": sub } }));
    let mut ws = server.ws_with(&format!("/v1/ws?token={token}"), &[]).await.unwrap();
    assert_eq!(ws.call(json!({ "op": "subscribe", "channel": channel })).await["op"], "subscribed");
    ws
}

/// Waits until the counter `series` is at least `n` (a retried request goes on being counted meanwhile).
async fn at_least(server: &TestServer, series: &str, n: u64) {
    tokio::time::timeout(common::PATIENCE, async {
        while server.metric(series).await < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{series} never reached {n}"));
}

fn names(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| format!("{} {}", e["name"].as_str().unwrap(), e["user_id"].as_str().unwrap_or(""))).collect()
}

#[tokio::test]
async fn a_channel_s_lifecycle_reaches_a_webhook_in_order_signed_with_an_id_per_event() {
    let receiver = Receiver::start(Answers::First(vec![])).await;
    let server = spawn(config(vec![hook("backend", &receiver, &[], &["room:*"])])).await;
    let ada = member(&server, "ada", "room:1").await;
    drop(ada);
    let events = receiver.until("the four events", |e| e.len() >= 4).await;
    assert_eq!(names(&events), ["channel_occupied ", "member_added ada", "member_removed ada", "channel_vacated "]);
    assert_eq!(events[1]["user_info"], json!({ "name": "ada" }));
    assert!(events.iter().all(|e| e["channel"] == "room:1" && e["time_ms"].as_u64().is_some()));
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "each event has its own id");
    for request in receiver.received() {
        let signature = request.header("Herald-Webhook-Signature").unwrap().to_string();
        let t: u64 = signature.strip_prefix("t=").unwrap().split(',').next().unwrap().parse().unwrap();
        assert!(t.abs_diff(tokens::now()) <= 5, "the time is now");
        assert_eq!(signature, herald_signature(SECRET, t, &request.body), "signed over t and the body");
        assert_eq!(request.header("Content-Type"), Some("application/json"));
    }
    assert!(server.metric(r#"herald_webhook_events_sent_total{endpoint="backend"}"#).await >= 4);
}

#[tokio::test]
async fn on_a_redis_cluster_two_nodes_send_each_event_of_a_channel_s_lifecycle_once() {
    let cluster = common::cluster::OwnCluster::shared();
    let receiver = Receiver::start(Answers::First(vec![])).await;
    let mut config = config(vec![hook("backend", &receiver, &[], &["room:*"])]);
    config.engine = EngineKind::Redis;
    config.redis_url = cluster.url();
    config.redis_prefix = common::node::unique_prefix("hooks-cluster");
    let (a, b) = (spawn(config.clone()).await, spawn(config).await);
    // The same user on both nodes is one member; the channel is occupied from the first subscriber on.
    let on_a = member(&a, "ada", "room:1").await;
    let on_b = member(&b, "ada", "room:1").await;
    let bob = member(&b, "bob", "room:1").await;
    drop(bob);
    // Connections closed together are seen closed in no set order: bob's leave is awaited before ada's tabs go.
    receiver.until("bob's leave", |e| names(e).iter().any(|n| n == "member_removed bob")).await;
    drop(on_a);
    drop(on_b);
    let expected = [
        "channel_occupied ",
        "member_added ada",
        "member_added bob",
        "member_removed bob",
        "member_removed ada",
        "channel_vacated ",
    ];
    receiver.until("the six events", |e| e.len() >= expected.len()).await;
    // Whatever a second sender would add arrives within its next round.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(names(&receiver.delivered()), expected);
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_same_events_again_until_it_answers_2xx() {
    let receiver = Receiver::start(Answers::First(vec![500, 503])).await;
    let server = spawn(config(vec![hook("flaky", &receiver, &["channel_occupied"], &[])])).await;
    let _watching = server.sse("channel=room:1", &[]).await;
    let events = receiver.until("the event, at last", |e| !e.is_empty()).await;
    assert_eq!(names(&events), ["channel_occupied "]);
    let received = receiver.received();
    assert_eq!(received.iter().map(|r| r.status).collect::<Vec<_>>(), [Some(500), Some(503), Some(200)]);
    let ids: Vec<Value> = received.iter().map(|r| r.events()[0]["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "the same event, by its id, each time: {ids:?}");
    server.until_metric(r#"herald_webhook_retries_total{endpoint="flaky"}"#, 2).await;
    assert_eq!(server.metric(r#"herald_webhook_failures_total{endpoint="flaky"}"#).await, 2);
    assert_eq!(server.metric(r#"herald_webhook_events_sent_total{endpoint="flaky"}"#).await, 1);
}

#[tokio::test]
async fn a_hanging_receiver_is_given_up_on_at_the_timeout_while_others_and_browsers_go_on() {
    let hanging = Receiver::start(Answers::Never).await;
    let working = Receiver::start(Answers::First(vec![])).await;
    let mut config = config(vec![hook("hanging", &hanging, &[], &[]), hook("working", &working, &[], &[])]);
    config.webhook_timeout = Duration::from_secs(1);
    let server = spawn(config).await;
    let mut browser = server.ws().await;
    assert_eq!(browser.call(json!({ "op": "subscribe", "channel": "room:news" })).await["op"], "subscribed");
    working.until("occupied", |e| !e.is_empty()).await;
    hanging.until_requests(2).await;
    server.until_metric(r#"herald_webhook_failures_total{endpoint="hanging"}"#, 2).await;
    // Meanwhile a browser gets its messages as ever, and the other endpoint its events.
    server.publish("room:news", "tick", json!(1)).await;
    assert_eq!(browser.recv().await["data"], 1);
    let _ada = member(&server, "ada", "room:1").await;
    working.until("ada's join", |e| names(e).contains(&"member_added ada".to_string())).await;
}

#[tokio::test]
async fn an_endpoint_further_behind_than_the_queue_loses_the_oldest_events_counted() {
    let receiver = Receiver::start(Answers::Never).await;
    let mut config = config(vec![hook("behind", &receiver, &["channel_occupied"], &[])]);
    config.webhook_queue = 5;
    config.webhook_timeout = Duration::from_secs(1);
    let server = spawn(config).await;
    // The first batch is in flight (and failing) while 20 more channels are occupied.
    let _first = server.sse("channel=room:a0", &[]).await;
    receiver.until_requests(1).await;
    let mut streams = Vec::new();
    for i in 1..=20 {
        streams.push(server.sse(&format!("channel=room:a{i}"), &[]).await);
    }
    // Every channel is occupied (so its event logged) before the receiver comes back.
    tokio::time::timeout(common::PATIENCE, async {
        while server.get("/v1/channels?prefix=room:").await.json()["channels"].as_array().unwrap().len() < 21 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    receiver.answer(Answers::First(vec![]));
    let events = receiver.until("the newest events", |e| e.iter().any(|e| e["channel"] == "room:a20")).await;
    let channels: Vec<&str> = events.iter().map(|e| e["channel"].as_str().unwrap()).collect();
    assert_eq!(channels.first(), Some(&"room:a0"), "the batch in flight is delivered");
    assert_eq!(channels.len(), 1 + 5, "then the newest 5 the queue kept: {channels:?}");
    assert_eq!(server.metric(r#"herald_webhook_events_dropped_total{endpoint="behind"}"#).await, 15);
}

#[tokio::test]
async fn client_events_and_cache_misses_reach_the_endpoints_that_want_them() {
    let receiver = Receiver::start(Answers::First(vec![])).await;
    let other = Receiver::start(Answers::First(vec![])).await;
    let server = spawn(config(vec![
        hook("clients", &receiver, &["client_event", "cache_miss"], &["room:*"]),
        hook("occupancy", &other, &["channel_occupied"], &[]),
    ]))
    .await;
    let mut ada = member(&server, "ada", "room:1").await;
    let published =
        ada.call(json!({ "op": "publish", "channel": "room:1", "event": "said", "data": { "text": "hi" } })).await;
    assert_eq!(published["op"], "published", "{published}");
    let mut replay = server.ws().await;
    replay.call(json!({ "op": "subscribe", "channel": "room:empty", "last": 1 })).await;
    replay.call(json!({ "op": "subscribe", "channel": "room:1", "last": 1 })).await;
    let events = receiver.until("a client event and a cache miss", |e| e.len() >= 2).await;
    assert_eq!(names(&events), ["client_event ada", "cache_miss "]);
    assert_eq!((events[0]["event"].as_str(), events[0]["data"].clone()), (Some("said"), json!({ "text": "hi" })));
    assert_eq!(events[1]["channel"], "room:empty", "room:1 had a message to replay");
    other.until("occupied channels", |e| e.len() >= 2).await;
    assert!(other.delivered().iter().all(|e| e["name"] == "channel_occupied"));
}

#[tokio::test]
async fn webhooks_that_cannot_be_used_are_refused_at_start_naming_their_key() {
    let receiver = Receiver::start(Answers::First(vec![])).await;
    let mut bad_pattern = hook("x", &receiver, &[], &["a b"]);
    bad_pattern.channels = vec!["a b".into()];
    let refused = herald::Server::bind(config(vec![bad_pattern])).await.err().unwrap().to_string();
    assert!(refused.starts_with("webhooks[0].channels"), "{refused}");
    for (toml, key) in [
        ("[[webhooks]]\nurl = \"ftp://x/\"\nsecret = \"0123456789abcdef\"", "webhooks[0].url"),
        ("[[webhooks]]\nurl = \"https:///h\"\nsecret = \"0123456789abcdef\"", "webhooks[0].url"),
        ("[[webhooks]]\nurl = \"http://x/\"\nsecret = \"short\"", "webhooks[0].secret"),
        ("[[webhooks]]\nurl = \"http://x/\"\nsecret = \"s\"\nformat = \"pusher\"", "webhooks[0].key"),
        ("[[webhooks]]\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\nevents = [\"everything\"]", "webhooks[0].events"),
        (
            "[[webhooks]]\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\n[[webhooks]]\nurl = \"http://y/\"\nsecret = \"0123456789abcdef\"\nname = \"webhook-0\"",
            "webhooks[1].name",
        ),
        ("webhook_batch = 1001", "webhook_batch"),
        ("webhook_queue = 0", "webhook_queue"),
    ] {
        let refused = Config::from_toml(toml).unwrap_err().to_string();
        assert!(refused.starts_with(key), "{toml}: {refused}");
    }
    let mut unreadable_ca = config(vec![]);
    unreadable_ca.webhook_ca_file = Some("/nonexistent/ca.pem".into());
    let refused = herald::Server::bind(unreadable_ca).await.err().unwrap().to_string();
    assert!(refused.starts_with("webhook_ca_file: cannot read /nonexistent/ca.pem"), "{refused}");
}

#[tokio::test]
async fn an_https_receiver_whose_certificate_chains_to_the_webhook_ca_gets_the_events_signed() {
    let ca = TestCa::new("webhooks-trusted");
    let receiver = Receiver::start_tls(Answers::First(vec![]), ca.server_config("receiver")).await;
    assert!(receiver.url().starts_with("https://localhost:"));
    let mut config = config(vec![hook("secure", &receiver, &[], &["room:*"])]);
    config.webhook_ca_file = Some(ca.root_file());
    let server = spawn(config).await;
    drop(member(&server, "ada", "room:1").await);
    let events = receiver.until("the four events", |e| e.len() >= 4).await;
    assert_eq!(names(&events), ["channel_occupied ", "member_added ada", "member_removed ada", "channel_vacated "]);
    for request in receiver.received() {
        let signature = request.header("Herald-Webhook-Signature").unwrap().to_string();
        let t: u64 = signature.strip_prefix("t=").unwrap().split(',').next().unwrap().parse().unwrap();
        assert_eq!(signature, herald_signature(SECRET, t, &request.body), "signed over t and the body");
    }
    assert_eq!(server.metric(r#"herald_webhook_tls_failures_total{endpoint="secure"}"#).await, 0);
}

#[tokio::test]
async fn an_https_receiver_with_a_certificate_nobody_vouches_for_gets_nothing_and_is_retried_as_a_tls_failure() {
    let (trusted, stranger) = (TestCa::new("webhooks-ca"), TestCa::new("webhooks-stranger"));
    let receiver = Receiver::start_tls(Answers::First(vec![]), stranger.server_config("impostor")).await;
    let mut config = config(vec![hook("impostor", &receiver, &["channel_occupied"], &[])]);
    config.webhook_ca_file = Some(trusted.root_file());
    let server = spawn(config).await;
    let _watching = server.sse("channel=room:1", &[]).await;
    receiver.until_refused(2).await;
    at_least(&server, r#"herald_webhook_tls_failures_total{endpoint="impostor"}"#, 2).await;
    at_least(&server, r#"herald_webhook_retries_total{endpoint="impostor"}"#, 1).await;
    assert!(receiver.received().is_empty(), "no request reached a receiver that could not be authenticated");
    assert_eq!(server.metric(r#"herald_webhook_events_sent_total{endpoint="impostor"}"#).await, 0);
    let failures = server.metric(r#"herald_webhook_failures_total{endpoint="impostor"}"#).await;
    assert!(failures >= 2, "a TLS failure is a failed request: {failures}");
}

//! Limits: one test per limit shows the refusal a client gets, that it is counted in `herald_refusals_total`,
//! and that another client is still served. Other clients are other loopback addresses (`127.0.0.2` …), or
//! other `X-Forwarded-For` addresses behind a trusted proxy.

#![allow(clippy::unwrap_used)]

mod common;

use common::tokens::publisher_key;
use common::tokens::BACKEND_KEY;
use common::{config, spawn, Sse, TestServer};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The refusal counter of `reason`.
fn refused(reason: &str) -> String {
    format!(r#"herald_refusals_total{{reason="{reason}"}}"#)
}

/// An open SSE stream of `channel` from `client`; panics unless it is accepted.
async fn stream(client: common::Client, channel: &str, headers: &[(&str, &str)]) -> Sse {
    let mut sse = client.sse(&format!("channel={channel}"), headers).await;
    assert_eq!(sse.status, 200);
    sse.next().await.unwrap();
    sse
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share_of_connections() {
    let mut config = config();
    config.max_connections_per_ip = 3;
    let server = spawn(config).await;
    let greedy = server.client.coming_from("127.0.0.2");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stream(greedy, "a", &[]).await);
    }

    let over = greedy.get("/v1/sse?channel=a").await;
    assert_eq!((over.status, over.error_code().as_str()), (429, "too_many_connections"));
    assert_eq!(over.header("Retry-After"), Some("5"));
    let ws = greedy.ws_with("/v1/ws", &[]).await.err().unwrap();
    assert_eq!((ws.status, ws.header("Retry-After")), (429, Some("5")));
    let long_poll = greedy.get("/v1/channels/a/messages?since=latest&wait=5").await;
    assert_eq!(long_poll.status, 429);
    assert_eq!(server.metric(&refused("max_connections_per_ip")).await, 3);

    // Another address subscribes and receives as if nothing happened; a short poll is not a connection.
    let mut other = stream(server.client.coming_from("127.0.0.3"), "a", &[]).await;
    assert_eq!(greedy.get("/v1/channels/a/messages").await.status, 200);
    server.publish("a", "tick", json!(1)).await;
    assert_eq!(other.next_data().await.data.as_deref(), Some("1"));

    held.pop();
    server.until_metric(r#"herald_connections{transport="sse"}"#, 3).await;
    stream(greedy, "a", &[]).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_share() {
    let mut config = config();
    config.max_connections_per_ip = 1;
    config.trusted_proxies = vec!["127.0.0.1".to_string()];
    let server = spawn(config).await;
    let _first = stream(server.client, "a", &[("X-Forwarded-For", "198.51.100.1")]).await;
    let again = server.get_with("/v1/sse?channel=a", &[("X-Forwarded-For", "198.51.100.1")]).await;
    assert_eq!(again.status, 429);
    let _other = stream(server.client, "a", &[("X-Forwarded-For", "198.51.100.2")]).await;
}

#[tokio::test]
async fn without_a_trusted_proxy_x_forwarded_for_cannot_buy_more_connections() {
    let mut config = config();
    config.max_connections_per_ip = 1;
    let server = spawn(config).await;
    let client = server.client.coming_from("127.0.0.2");
    let _first = stream(client, "a", &[("X-Forwarded-For", "198.51.100.1")]).await;
    let spoofed = client.get_with("/v1/sse?channel=a", &[("X-Forwarded-For", "198.51.100.2")]).await;
    assert_eq!(spoofed.status, 429);
}

#[tokio::test]
async fn the_server_holds_at_most_max_connections() {
    let mut config = config();
    config.max_connections = 2;
    let server = spawn(config).await;
    let first = stream(server.client.coming_from("127.0.0.2"), "a", &[]).await;
    let _second = stream(server.client.coming_from("127.0.0.3"), "a", &[]).await;
    let third = server.client.coming_from("127.0.0.4").get("/v1/sse?channel=a").await;
    assert_eq!((third.status, third.error_code().as_str()), (429, "too_many_connections"));
    assert_eq!(server.metric(&refused("max_connections")).await, 1);
    // Publishing and short polls are not connections: the backend is never locked out.
    server.publish("a", "tick", json!(1)).await;
    drop(first);
    server.until_metric(r#"herald_connections{transport="sse"}"#, 1).await;
    stream(server.client.coming_from("127.0.0.4"), "a", &[]).await;
}

#[tokio::test]
async fn a_websocket_publishing_too_fast_is_told_to_slow_down_and_others_are_not() {
    let mut config = config();
    config.publish_rate_per_connection = 2;
    config
        .namespaces
        .insert("chat".into(), herald::config::NamespaceSettings { allow_client_publish: true, ..Default::default() });
    let server = spawn(config).await;
    let mut fast = server.ws().await;
    let publish = |id: u32| json!({ "op": "publish", "channel": "chat:1", "data": id, "id": id });
    assert_eq!(fast.call(publish(1)).await["op"], "published");
    assert_eq!(fast.call(publish(2)).await["op"], "published");
    let slowed = fast.call(publish(3)).await;
    assert_eq!(
        (slowed["op"].as_str(), slowed["code"].as_str(), slowed["id"].as_u64()),
        (Some("error"), Some("rate_limited"), Some(3))
    );
    assert_eq!(server.metric(&refused("publish_rate_per_connection")).await, 1);

    let mut other = server.ws().await;
    assert_eq!(other.call(publish(4)).await["op"], "published");
    fast.assert_quiet().await;
}

async fn post_with_key(server: &TestServer, key: &str) -> common::Response {
    let auth = format!("Bearer {key}");
    server.request("POST", "/v1/channels/a/messages", &[("Authorization", &auth)], br#"{"data":1}"#).await
}

#[tokio::test]
async fn a_publisher_key_over_its_rate_gets_429_with_retry_after_and_other_keys_publish() {
    let mut config = config();
    config.publish_rate_per_key = 2;
    config.publisher_keys =
        vec![publisher_key("backend", BACKEND_KEY, &[]), publisher_key("reports", "reports-key-0123456789", &[])];
    let server = spawn(config).await;
    assert_eq!(post_with_key(&server, BACKEND_KEY).await.status, 201);
    assert_eq!(post_with_key(&server, BACKEND_KEY).await.status, 201);
    let over = post_with_key(&server, BACKEND_KEY).await;
    assert_eq!((over.status, over.error_code().as_str(), over.header("Retry-After")), (429, "rate_limited", Some("1")));
    assert_eq!(server.metric(&refused("publish_rate_per_key")).await, 1);
    assert_eq!(post_with_key(&server, "reports-key-0123456789").await.status, 201);
}

#[tokio::test]
async fn too_many_subscriptions_is_an_error_frame_and_counted() {
    let mut config = config();
    config.max_subscriptions_per_connection = 1;
    let server = spawn(config).await;
    let mut ws = server.ws().await;
    assert_eq!(ws.call(json!({ "op": "subscribe", "channel": "a" })).await["op"], "subscribed");
    assert_eq!(ws.call(json!({ "op": "subscribe", "channel": "b" })).await["code"], "too_many_subscriptions");
    assert_eq!(server.metric(&refused("max_subscriptions_per_connection")).await, 1);
    let mut other = server.ws().await;
    assert_eq!(other.call(json!({ "op": "subscribe", "channel": "b" })).await["op"], "subscribed");
}

#[tokio::test]
async fn too_many_channels_in_one_request_is_400_and_counted() {
    let mut config = config();
    config.max_channels_per_request = 2;
    let server = spawn(config).await;
    let r = server.get("/v1/poll?channel=a&channel=b&channel=c").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "too_many_channels"));
    assert_eq!(server.get("/v1/sse?channel=a&channel=b&channel=c").await.status, 400);
    assert_eq!(server.metric(&refused("max_channels_per_request")).await, 2);
    assert_eq!(server.get("/v1/poll?channel=a&channel=b").await.status, 200);
}

#[tokio::test]
async fn a_body_too_large_is_413_and_counted() {
    let mut config = config();
    config.max_body_bytes = 64;
    let server = spawn(config).await;
    let big = serde_json::to_vec(&json!({ "data": "x".repeat(100) })).unwrap();
    let r = server.request("POST", "/v1/channels/a/messages", &[], &big).await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"));
    assert_eq!(server.metric(&refused("max_body_bytes")).await, 1);
    server.publish("a", "e", json!(1)).await;
}

#[tokio::test]
async fn a_frame_too_large_closes_1009_and_is_counted() {
    let mut config = config();
    config.max_frame_bytes = 64;
    let server = spawn(config).await;
    let mut big = server.ws().await;
    big.send_raw(WsMessage::Text("x".repeat(100).into())).await;
    assert_eq!(big.close_code().await, Some(1009));
    server.until_metric(&refused("max_frame_bytes"), 1).await;
    let mut other = server.ws().await;
    assert_eq!(other.call(json!({ "op": "ping" })).await["op"], "pong");
}

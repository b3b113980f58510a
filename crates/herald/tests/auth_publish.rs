//! Who may publish: publisher keys on the HTTP API (missing, wrong, limited to other channels, valid), and
//! tokens' `publish` claims for clients publishing over WebSocket.

#![allow(clippy::unwrap_used)]

mod common;

use common::tokens::{self, BACKEND_KEY, ORDERS_KEY};
use common::{spawn, start, TestServer, Ws};
use serde_json::json;

async fn publish_with(server: &TestServer, channel: &str, authorization: Option<&str>) -> common::Response {
    let body = serde_json::to_vec(&json!({ "event": "e", "data": 1 })).unwrap();
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(authorization.map(|a| ("Authorization", a)));
    server.request("POST", &format!("/v1/channels/{channel}/messages"), &headers, &body).await
}

fn refusal(r: &common::Response) -> (u16, String) {
    (r.status, r.error_code())
}

#[tokio::test]
async fn publishing_without_a_key_is_401_key_required() {
    let server = spawn(tokens::secured()).await;
    let r = publish_with(&server, "orders:1", None).await;
    assert_eq!(refusal(&r), (401, "key_required".into()));
    assert_eq!(r.header("WWW-Authenticate"), Some(r#"Bearer realm="herald""#));
    assert_eq!(server.metric(r#"herald_refusals_total{reason="key_required"}"#).await, 1);
}

#[tokio::test]
async fn publishing_with_a_wrong_key_is_401_invalid_key() {
    let server = spawn(tokens::secured()).await;
    for wrong in ["Bearer wrong-key-0123456789", "Bearer ", "Basic YmFja2VuZDprZXk=", &format!("Bearer {BACKEND_KEY}x")]
    {
        assert_eq!(
            refusal(&publish_with(&server, "orders:1", Some(wrong)).await),
            (401, "invalid_key".into()),
            "{wrong}"
        );
    }
}

#[tokio::test]
async fn a_subscriber_token_is_not_a_publisher_key() {
    let server = spawn(tokens::secured()).await;
    let token = tokens::hs256(&tokens::claims("u1", &["*"]));
    let r = publish_with(&server, "orders:1", Some(&format!("Bearer {token}"))).await;
    assert_eq!(refusal(&r), (401, "invalid_key".into()));
}

#[tokio::test]
async fn a_key_limited_to_other_channels_is_403_channel_forbidden() {
    let server = spawn(tokens::secured()).await;
    let r = publish_with(&server, "chat:room1", Some(&format!("Bearer {ORDERS_KEY}"))).await;
    assert_eq!(refusal(&r), (403, "channel_forbidden".into()));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("chat:room1"));
}

#[tokio::test]
async fn valid_keys_publish_where_they_may() {
    let server = spawn(tokens::secured()).await;
    assert_eq!(publish_with(&server, "orders:1", Some(&format!("Bearer {ORDERS_KEY}"))).await.status, 201);
    assert_eq!(publish_with(&server, "chat:room1", Some(&format!("Bearer {BACKEND_KEY}"))).await.status, 201);
    assert_eq!(server.metric("herald_messages_published_total").await, 2);
}

#[tokio::test]
async fn an_unauthenticated_body_is_not_even_read() {
    let server = spawn(tokens::secured()).await;
    let huge = vec![b'x'; 1024 * 1024];
    let r = server.request("POST", "/v1/channels/orders:1/messages", &[], &huge).await;
    assert_eq!(refusal(&r), (401, "key_required".into()), "not 413: who asks comes first");
}

#[tokio::test]
async fn without_keys_anyone_publishes_and_a_header_is_ignored() {
    let server = start().await;
    assert_eq!(publish_with(&server, "orders:1", None).await.status, 201);
    assert_eq!(publish_with(&server, "orders:1", Some("Bearer anything")).await.status, 201);
}

/// A WebSocket on a secured server, authenticated with `claims`.
async fn ws_with_token(server: &TestServer, claims: &serde_json::Value) -> Ws {
    let mut ws = server.ws().await;
    let answer = ws.call(json!({ "op": "auth", "token": tokens::hs256(claims), "id": 0 })).await;
    assert_eq!(answer["op"], "authenticated", "{answer}");
    ws
}

async fn ws_publish(ws: &mut Ws, channel: &str) -> serde_json::Value {
    ws.call(json!({ "op": "publish", "channel": channel, "data": "hi", "id": 1 })).await
}

#[tokio::test]
async fn a_client_publishes_where_its_token_says() {
    let server = spawn(tokens::secured()).await;
    let mut claims = tokens::claims("u1", &["chat:*"]);
    claims["publish"] = json!(["chat:room1"]);
    let mut ws = ws_with_token(&server, &claims).await;
    assert_eq!(ws_publish(&mut ws, "chat:room1").await["op"], "published");
    let refused = ws_publish(&mut ws, "chat:room2").await;
    assert_eq!((refused["op"].as_str(), refused["code"].as_str()), (Some("error"), Some("channel_forbidden")));
}

#[tokio::test]
async fn a_client_without_a_token_may_not_publish_in_a_private_namespace() {
    let server = spawn(tokens::secured()).await;
    let mut ws = server.ws().await;
    assert_eq!(ws_publish(&mut ws, "chat:room1").await["code"], "token_required");
}

#[tokio::test]
async fn no_token_lets_a_client_publish_where_the_namespace_forbids_it() {
    let server = spawn(tokens::secured()).await;
    let mut claims = tokens::claims("u1", &["*"]);
    claims["publish"] = json!(["*"]);
    let mut ws = ws_with_token(&server, &claims).await;
    assert_eq!(ws_publish(&mut ws, "orders:1").await["code"], "client_publish_forbidden");
}

//! Tokens over a WebSocket's lifetime: the `auth` frame, refreshing a token before it expires, the `ended`
//! frames when it expires (public subscriptions go on), a new token that grants less, and the end of an SSE
//! stream whose token expires. Time is the runtime's paused clock where the test only reads answers to its own
//! frames (tokens expire in 30 s, no leeway). Frames the server sends on its own (`ended`, live messages) do not
//! reach this harness's WebSocket client while the clock is paused, so the tests that read them wait for a real
//! token of two seconds (whole seconds: one to two left when it is sent) instead.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tokens::{self, BACKEND_KEY};
use common::{spawn, TestServer, Ws};
use serde_json::{json, Value};

async fn server() -> TestServer {
    let mut config = tokens::secured();
    config.jwt.leeway_secs = 0;
    spawn(config).await
}

fn token_for(sub: &str, channels: &[&str], lifetime: u64) -> String {
    tokens::hs256(&json!({ "sub": sub, "exp": tokens::now() + lifetime, "channels": channels }))
}

async fn publish(server: &TestServer, channel: &str, data: Value) {
    let body = serde_json::to_vec(&json!({ "data": data })).unwrap();
    let auth = format!("Bearer {BACKEND_KEY}");
    let r =
        server.request("POST", &format!("/v1/channels/{channel}/messages"), &[("Authorization", &auth)], &body).await;
    assert_eq!(r.status, 201);
}

/// Moves the clock past a 30 s token's expiry and waits until the server has acted on it (`expired` counts the
/// expiries seen so far), so what it wrote is on the socket before the test reads with a timeout.
async fn expire(server: &TestServer, expired: u64) {
    tokio::time::advance(Duration::from_secs(31)).await;
    server.until_metric(r#"herald_refusals_total{reason="token_expired"}"#, expired).await;
}

async fn auth(ws: &mut Ws, token: &str) -> Value {
    ws.call(json!({ "op": "auth", "token": token, "id": "auth" })).await
}

async fn subscribe(ws: &mut Ws, channel: &str) -> Value {
    ws.call(json!({ "op": "subscribe", "channel": channel, "id": channel })).await
}

#[tokio::test]
async fn auth_answers_with_the_user_and_the_expiry() {
    let server = server().await;
    let mut ws = server.ws().await;
    let exp = tokens::now() + 30;
    let token = tokens::hs256(&json!({ "sub": "u42", "exp": exp }));
    assert_eq!(auth(&mut ws, &token).await, json!({ "op": "authenticated", "sub": "u42", "exp": exp, "id": "auth" }));
}

#[tokio::test]
async fn a_refused_auth_frame_keeps_the_connection_and_the_earlier_token() {
    let server = server().await;
    let mut ws = server.ws().await;
    assert_eq!(auth(&mut ws, &token_for("u1", &["orders:*"], 60)).await["op"], "authenticated");
    let answer = auth(&mut ws, "garbage").await;
    assert_eq!((answer["op"].as_str(), answer["code"].as_str()), (Some("error"), Some("invalid_token")));
    assert_eq!(subscribe(&mut ws, "orders:1").await["op"], "subscribed", "the earlier token still holds");
}

/// Whether the connection still has `channel`: unsubscribing answers `unsubscribed` or `not_subscribed`.
async fn still_subscribed(ws: &mut Ws, channel: &str) -> bool {
    let answer = ws.call(json!({ "op": "unsubscribe", "channel": channel })).await;
    match (answer["op"].as_str(), answer["code"].as_str()) {
        (Some("unsubscribed"), _) => true,
        (Some("error"), Some("not_subscribed")) => false,
        _ => panic!("{answer}"),
    }
}

#[tokio::test]
async fn an_expired_token_ends_private_subscriptions_with_an_ended_frame() {
    let server = server().await;
    let mut ws = server.ws().await;
    auth(&mut ws, &token_for("u1", &["orders:*"], 2)).await;
    for channel in ["orders:1", "orders:2", "news:today"] {
        assert_eq!(subscribe(&mut ws, channel).await["op"], "subscribed");
    }
    // Real time (see the module's note): the `ended` frames come within two seconds.
    let message = "the token expired: send a new one in an `auth` frame, then subscribe again with your cursor";
    for channel in ["orders:1", "orders:2"] {
        let ended = json!({ "op": "ended", "channel": channel, "code": "token_expired", "message": message });
        assert_eq!(ws.recv().await, ended);
    }
    ws.assert_quiet().await;
    assert!(still_subscribed(&mut ws, "news:today").await, "a public subscription needs no token");
    assert!(!still_subscribed(&mut ws, "orders:1").await);
    assert_eq!(server.metric(r#"herald_refusals_total{reason="token_expired"}"#).await, 1);
}

#[tokio::test]
async fn after_its_token_expired_a_connection_still_gets_its_public_messages() {
    let server = server().await;
    let mut ws = server.ws().await;
    auth(&mut ws, &token_for("u1", &["orders:*"], 2)).await;
    subscribe(&mut ws, "orders:1").await;
    subscribe(&mut ws, "news:today").await;
    // Real time: the token expires within two seconds, and the `ended` frame says when it did.
    assert_eq!(ws.recv().await["op"], "ended");
    publish(&server, "orders:1", json!("private")).await;
    publish(&server, "news:today", json!("public")).await;
    let frame = ws.recv().await;
    assert_eq!((frame["channel"].as_str(), frame["data"].as_str()), (Some("news:today"), Some("public")));
    ws.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn after_expiry_private_subscribes_say_token_expired_until_a_new_auth() {
    let server = server().await;
    let mut ws = server.ws().await;
    auth(&mut ws, &token_for("u1", &["orders:*"], 30)).await;
    expire(&server, 1).await;
    assert_eq!(subscribe(&mut ws, "orders:1").await["code"], "token_expired");
    assert_eq!(auth(&mut ws, &token_for("u1", &["orders:*"], 30)).await["op"], "authenticated");
    assert_eq!(subscribe(&mut ws, "orders:1").await["op"], "subscribed");
}

#[tokio::test(start_paused = true)]
async fn refreshing_before_expiry_keeps_every_subscription() {
    let server = server().await;
    let mut ws = server.ws().await;
    auth(&mut ws, &token_for("u1", &["orders:*"], 30)).await;
    subscribe(&mut ws, "orders:1").await;
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(auth(&mut ws, &token_for("u1", &["orders:*"], 60)).await["op"], "authenticated");
    tokio::time::advance(Duration::from_secs(20)).await;
    ws.assert_quiet().await;
    assert!(still_subscribed(&mut ws, "orders:1").await);
}

#[tokio::test]
async fn a_new_token_that_grants_less_ends_what_it_does_not_grant() {
    let server = server().await;
    let mut ws = server.ws().await;
    auth(&mut ws, &token_for("u1", &["orders:*"], 60)).await;
    subscribe(&mut ws, "orders:1").await;
    subscribe(&mut ws, "orders:2").await;
    let ended = ws.call(json!({ "op": "auth", "token": token_for("u1", &["orders:2"], 60), "id": "a" })).await;
    assert_eq!((ended["op"].as_str(), ended["channel"].as_str()), (Some("ended"), Some("orders:1")));
    assert_eq!(ended["code"], "channel_forbidden");
    assert_eq!(ws.recv().await["op"], "authenticated");
    publish(&server, "orders:2", json!(2)).await;
    assert_eq!(ws.recv().await["channel"], "orders:2");
}

#[tokio::test]
async fn a_token_on_the_handshake_lasts_like_one_from_a_frame() {
    let server = server().await;
    let token = token_for("u1", &["orders:*"], 60);
    let mut ws = server.ws_with(&format!("/v1/ws?token={token}"), &[]).await.unwrap();
    assert_eq!(subscribe(&mut ws, "orders:1").await["op"], "subscribed");
}

#[tokio::test(start_paused = true)]
async fn an_sse_stream_of_private_channels_ends_with_an_error_event_when_its_token_expires() {
    let server = server().await;
    let token = token_for("u1", &["orders:*"], 30);
    let mut sse = server.sse(&format!("channel=orders:1&token={token}"), &[]).await;
    assert_eq!(sse.status, 200);
    sse.next().await.unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    let event = loop {
        let event = sse.next().await.expect("an error event before the end");
        if event.event.is_some() {
            break event;
        }
    };
    assert_eq!(event.event.as_deref(), Some("herald.error"));
    assert_eq!(event.json()["code"], "token_expired");
    assert!(sse.next().await.is_none(), "the stream ends");
}

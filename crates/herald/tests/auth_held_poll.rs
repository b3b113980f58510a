//! A held poll relies on its token as a stream does: `/messages`, `/v1/poll` and `/latest` with `wait`
//! are held no longer than the token is accepted, answer `401 token_expired` at that instant, and never deliver
//! what was published after it. Time is the runtime's paused clock; tokens last 20 s with no leeway, so they are
//! refused from the whole second after `exp`, 20 to 21 s after the request.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tokens::{self, BACKEND_KEY};
use common::{spawn, Client, TestServer};
use serde_json::json;
use tokio::time::Instant;

/// Every held poll of `orders:{n}`, with `wait=45`: longer than the token, shorter than the test client's
/// patience. (`/latest` holds only while the channel has nothing newer than the request knows: each test takes a
/// channel of its own.)
const HELD: [&str; 3] = [
    "/v1/channels/orders:{n}/messages?since=latest&wait=45",
    "/v1/poll?channel=orders:{n}&channel=news:today&since=latest&wait=45",
    "/v1/channels/orders:{n}/latest?wait=45",
];

fn held(path: &str, n: usize) -> String {
    path.replace("{n}", &n.to_string())
}

async fn server() -> TestServer {
    let mut config = tokens::secured();
    config.jwt.leeway_secs = 0;
    config.max_wait = Duration::from_secs(50);
    spawn(config).await
}

fn token(channels: &[&str]) -> String {
    tokens::hs256(&json!({ "sub": "u1", "exp": tokens::now() + 20, "channels": channels }))
}

async fn publish(client: Client, channel: &str) {
    let body = serde_json::to_vec(&json!({ "data": "after the deadline" })).unwrap();
    let auth = format!("Bearer {BACKEND_KEY}");
    let path = format!("/v1/channels/{channel}/messages");
    assert_eq!(client.request("POST", &path, &[("Authorization", &auth)], &body).await.status, 201);
}

#[tokio::test(start_paused = true)]
async fn a_held_poll_of_a_private_channel_ends_with_token_expired_when_its_token_stops_being_accepted() {
    let server = server().await;
    for path in HELD {
        let bearer = format!("Bearer {}", token(&["orders:*"]));
        let before = Instant::now();
        let r = server.get_with(&held(path, 1), &[("Authorization", &bearer)]).await;
        let held = before.elapsed();
        assert_eq!((r.status, r.error_code().as_str()), (401, "token_expired"), "{path}: {}", r.text());
        assert!(r.header("WWW-Authenticate").is_some_and(|v| v.contains("invalid_token")), "{path}");
        assert!(held > Duration::from_secs(20) && held <= Duration::from_secs(21), "{path}: held {held:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_published_after_the_token_expired_is_not_delivered_to_a_poll_held_under_it() {
    let server = server().await;
    for (i, path) in HELD.into_iter().enumerate() {
        let bearer = format!("Bearer {}", token(&["orders:*"]));
        let (client, url) = (server.client, held(path, i));
        let request = tokio::spawn(async move { client.get_with(&url, &[("Authorization", &bearer)]).await });
        server.until_metric("herald_connections{transport=\"long_poll\"}", 1).await;
        tokio::time::advance(Duration::from_secs(25)).await;
        publish(server.client, &format!("orders:{i}")).await;
        let r = request.await.unwrap();
        assert_eq!((r.status, r.error_code().as_str()), (401, "token_expired"), "{path}: {}", r.text());
        assert_eq!(server.metric(r#"herald_refusals_total{reason="token_expired"}"#).await, i as u64 + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_given_for_public_channels_only_does_not_cut_a_held_poll_short() {
    let server = server().await;
    let bearer = format!("Bearer {}", token(&["orders:*"]));
    let before = Instant::now();
    let r =
        server.get_with("/v1/channels/news:today/messages?since=latest&wait=45", &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(before.elapsed() >= Duration::from_secs(45), "held {:?}", before.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_message_published_before_the_deadline_is_delivered_to_a_poll_held_under_the_token() {
    let server = server().await;
    let bearer = format!("Bearer {}", token(&["orders:*"]));
    let client = server.client;
    let held = tokio::spawn(async move {
        client.get_with("/v1/channels/orders:1/messages?since=latest&wait=45", &[("Authorization", &bearer)]).await
    });
    server.until_metric("herald_connections{transport=\"long_poll\"}", 1).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    publish(server.client, "orders:1").await;
    let r = held.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["messages"][0]["data"], "after the deadline");
}

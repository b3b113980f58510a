//! Origins: the `cors_origins` allow-list answers CORS and guards WebSocket handshakes against cross-site
//! hijacking; `*` allows every origin.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, spawn, start, TestServer};

const SHOP: &str = "https://shop.example";

async fn shop_only() -> TestServer {
    let mut config = config();
    config.cors_origins = vec![SHOP.to_string()];
    spawn(config).await
}

#[tokio::test]
async fn a_websocket_from_a_foreign_origin_is_refused() {
    let server = shop_only().await;
    let r = server.ws_with("/v1/ws", &[("Origin", "https://evil.example")]).await.err().unwrap();
    assert_eq!(r.status, 403);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "origin_forbidden");
    assert_eq!(server.metric(r#"herald_refusals_total{reason="origin_forbidden"}"#).await, 1);
}

#[tokio::test]
async fn a_websocket_from_an_allowed_origin_its_own_host_or_no_browser_connects() {
    let server = shop_only().await;
    let own = format!("http://{}", server.addr);
    for origin in [Some(SHOP), Some(own.as_str()), None] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let mut ws = server.ws_with("/v1/ws", &headers).await.unwrap_or_else(|r| panic!("{origin:?}: {}", r.status));
        assert_eq!(ws.call(serde_json::json!({ "op": "ping" })).await["op"], "pong");
    }
}

#[tokio::test]
async fn a_star_allows_any_origin() {
    let server = start().await;
    assert!(server.ws_with("/v1/ws", &[("Origin", "https://anyone.example")]).await.is_ok());
    let r = server.get_with("/healthz", &[("Origin", "https://anyone.example")]).await;
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
}

#[tokio::test]
async fn cors_answers_name_only_allowed_origins() {
    let server = shop_only().await;
    let allowed = server.get_with("/healthz", &[("Origin", SHOP)]).await;
    assert_eq!(allowed.header("Access-Control-Allow-Origin"), Some(SHOP));
    let foreign = server.get_with("/healthz", &[("Origin", "https://evil.example")]).await;
    assert_eq!(foreign.header("Access-Control-Allow-Origin"), None);
    let preflight = server
        .request(
            "OPTIONS",
            "/v1/channels/a/messages",
            &[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")],
            b"",
        )
        .await;
    assert_eq!((preflight.status, preflight.header("Access-Control-Allow-Origin")), (204, None));
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_here_with_what_the_browser_may_send() {
    let server = shop_only().await;
    let preflight = server
        .request(
            "OPTIONS",
            "/v1/channels/a/messages",
            &[("Origin", SHOP), ("Access-Control-Request-Method", "POST")],
            br#"{"data":1}"#,
        )
        .await;
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_eq!(preflight.header("Access-Control-Allow-Origin"), Some(SHOP));
    assert_eq!(preflight.header("Access-Control-Allow-Methods"), Some("GET, POST, OPTIONS"));
    assert_eq!(
        preflight.header("Access-Control-Allow-Headers"),
        Some("Content-Type, If-None-Match, Last-Event-ID, Authorization")
    );
    assert_eq!(preflight.header("Access-Control-Max-Age"), Some("600"));
    assert_eq!(preflight.header("Vary"), Some("Origin"));
    // The route never saw it: nothing was published.
    assert_eq!(server.get("/v1/channels/a/messages").await.json()["messages"], serde_json::json!([]));
    // A request that is not a preflight goes to its route, and gets the same origin and the exposed headers only.
    let published = server
        .request(
            "POST",
            "/v1/channels/a/messages",
            &[("Origin", SHOP), ("Content-Type", "application/json")],
            br#"{"data":1}"#,
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.text());
    assert_eq!(published.header("Access-Control-Allow-Origin"), Some(SHOP));
    assert_eq!(published.header("Access-Control-Expose-Headers"), Some("ETag, X-Herald-Event, X-Herald-Offset"));
    assert_eq!(published.header("Access-Control-Allow-Methods"), None);
}

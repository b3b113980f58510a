//! `GET /v1/channels/{channel}/latest`: the newest value as a plain JSON document, ETags, and long polling.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use common::start;
use serde_json::json;

#[tokio::test]
async fn an_empty_channel_is_404_channel_empty() {
    let server = start().await;
    let r = server.get("/v1/channels/dashboard/latest").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "channel_empty"));
}

#[tokio::test]
async fn the_body_is_the_published_data_with_etag_and_event_headers() {
    let server = start().await;
    server.publish("dashboard", "newTopSeller", json!({ "top_seller": "Ahmed" })).await;
    let published = server.publish("dashboard", "newTopSeller", json!({ "top_seller": "Hassan" })).await;
    let r = server.get("/v1/channels/dashboard/latest").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"top_seller":"Hassan"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("x-herald-event"), Some("newTopSeller"));
    assert_eq!(r.header("x-herald-offset"), Some("2"));
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", published["cursor"].as_str().unwrap()).as_str()));
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_is_304() {
    let server = start().await;
    server.publish("a", "e", json!(1)).await;
    let etag = server.get("/v1/channels/a/latest").await.header("etag").unwrap().to_string();
    let r = server.get_with("/v1/channels/a/latest", &[("If-None-Match", &etag)]).await;
    assert_eq!((r.status, r.header("etag")), (304, Some(etag.as_str())));
    assert!(r.body.is_empty());
    assert_eq!(server.get_with("/v1/channels/a/latest", &[("If-None-Match", "*")]).await.status, 304);
}

#[tokio::test]
async fn an_older_or_foreign_etag_gets_the_current_value() {
    let server = start().await;
    server.publish("a", "e", json!(1)).await;
    let old = server.get("/v1/channels/a/latest").await.header("etag").unwrap().to_string();
    server.publish("a", "e", json!(2)).await;
    for etag in [old.as_str(), "\"something-else\"", "W/\"xyz\""] {
        let r = server.get_with("/v1/channels/a/latest", &[("If-None-Match", etag)]).await;
        assert_eq!((r.status, r.text()), (200, "2".to_string()), "{etag}");
    }
}

#[tokio::test]
async fn with_wait_a_current_client_is_held_until_a_newer_value() {
    let server = start().await;
    server.publish("a", "e", json!("old")).await;
    let etag = server.get("/v1/channels/a/latest").await.header("etag").unwrap().to_string();
    let client = server.client;
    let held =
        tokio::spawn(
            async move { client.get_with("/v1/channels/a/latest?wait=25", &[("If-None-Match", &etag)]).await },
        );
    server.until_metric("herald_connections{transport=\"long_poll\"}", 1).await;
    server.publish("a", "update", json!("new")).await;
    let r = held.await.unwrap();
    assert_eq!((r.status, r.text()), (200, "\"new\"".to_string()));
    assert_eq!(r.header("x-herald-event"), Some("update"));
}

#[tokio::test]
async fn with_wait_an_empty_channel_is_held_until_its_first_message() {
    let server = start().await;
    let client = server.client;
    let held = tokio::spawn(async move { client.get("/v1/channels/a/latest?wait=25").await });
    server.until_metric("herald_connections{transport=\"long_poll\"}", 1).await;
    server.publish("a", "e", json!("first")).await;
    let r = held.await.unwrap();
    assert_eq!((r.status, r.text()), (200, "\"first\"".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_ends_with_nothing_newer_is_304_with_if_none_match() {
    let server = start().await;
    server.publish("a", "e", json!(1)).await;
    let etag = server.get("/v1/channels/a/latest").await.header("etag").unwrap().to_string();
    let r = server.get_with("/v1/channels/a/latest?wait=30", &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
}

#[tokio::test(start_paused = true)]
async fn a_wait_on_an_empty_channel_that_ends_is_404_without_if_none_match() {
    let server = start().await;
    let r = server.get("/v1/channels/a/latest?wait=30").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "channel_empty"));
}

#[tokio::test]
async fn a_bad_wait_or_channel_is_400() {
    let server = start().await;
    assert_eq!(server.get("/v1/channels/a/latest?wait=soon").await.error_code(), "invalid_parameter");
    assert_eq!(server.get("/v1/channels/a%21/latest").await.error_code(), "invalid_channel");
}

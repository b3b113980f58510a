//! `POST /v1/channels/{channel}/messages`: what is stored, what is answered, and every bad input refused.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use common::{config, spawn, start};
use serde_json::json;

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[tokio::test]
async fn publishing_answers_201_with_gapless_offsets_and_a_cursor() {
    let server = start().await;
    for expected in 1..=3 {
        let answer = server.publish("dashboard", "newTopSeller", json!({ "top_seller": "Hassan" })).await;
        assert_eq!(answer["channel"], "dashboard");
        assert_eq!(answer["offset"], expected);
        assert!(answer["cursor"].as_str().is_some_and(|c| !c.is_empty()));
        assert!(answer["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "{answer}");
    }
}

#[tokio::test]
async fn the_stored_envelope_keeps_the_data_and_defaults_the_event() {
    let server = start().await;
    let body = br#"{"data": {"z": 1, "a": [true, null, "x y"]}}"#;
    let r = server.request("POST", "/v1/channels/orders/messages", &[JSON], body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let history = server.get("/v1/channels/orders/messages").await.json();
    let envelope = &history["messages"][0];
    assert_eq!(envelope["event"], "message");
    assert_eq!(envelope["offset"], 1);
    assert_eq!(envelope["cursor"], r.json()["cursor"]);
    // Key order and values as published; only whitespace is gone.
    let latest = server.get("/v1/channels/orders/latest").await;
    assert_eq!(latest.text(), r#"{"z":1,"a":[true,null,"x y"]}"#);
}

#[tokio::test]
async fn a_slash_in_a_channel_name_is_written_percent_2f() {
    let server = start().await;
    let answer = server.publish("orders/42", "status", json!("preparing")).await;
    assert_eq!(answer["channel"], "orders/42");
    let latest = server.get("/v1/channels/orders%2F42/latest").await;
    assert_eq!((latest.status, latest.text()), (200, "\"preparing\"".to_string()));
}

#[tokio::test]
async fn null_is_valid_data_and_a_missing_content_type_is_taken_as_json() {
    let server = start().await;
    let r = server.request("POST", "/v1/channels/a/messages", &[], br#"{"data":null}"#).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn the_content_type_is_json_in_any_case_with_parameters() {
    let server = start().await;
    for value in ["Application/JSON", "application/json; charset=utf-8", " APPLICATION/json ;charset=UTF-8"] {
        let r = server.request("POST", "/v1/channels/a/messages", &[("Content-Type", value)], br#"{"data":1}"#).await;
        assert_eq!(r.status, 201, "{value}: {}", r.text());
    }
    let r = server
        .request("POST", "/v1/channels/a/messages", &[("Content-Type", "application/jsonp")], br#"{"data":1}"#)
        .await;
    assert_eq!(r.status, 415, "{}", r.text());
}

#[tokio::test]
async fn bad_publishes_get_the_documented_status_and_code() {
    let server = start().await;
    // (path, headers, body, status, code)
    type Case = (&'static str, &'static [(&'static str, &'static str)], &'static [u8], u16, &'static str);
    let cases: [Case; 9] = [
        ("/v1/channels/a%20b/messages", &[JSON], br#"{"data":1}"#, 400, "invalid_channel"),
        ("/v1/channels/a/messages", &[JSON], br#"{"data":1,"event":"new seller"}"#, 400, "invalid_event"),
        ("/v1/channels/a/messages", &[JSON], br#"{"data":1,"event":""}"#, 400, "invalid_event"),
        ("/v1/channels/a/messages", &[JSON], b"{not json", 400, "invalid_json"),
        ("/v1/channels/a/messages", &[JSON], b"", 400, "invalid_json"),
        ("/v1/channels/a/messages", &[JSON], br#"{"event":"e"}"#, 400, "invalid_body"),
        ("/v1/channels/a/messages", &[JSON], br#"{"data":1,"evnet":"e"}"#, 400, "invalid_body"),
        ("/v1/channels/a/messages", &[JSON], br#"[1,2]"#, 400, "invalid_body"),
        ("/v1/channels/a/messages", &[("Content-Type", "text/plain")], br#"{"data":1}"#, 415, "unsupported_media_type"),
    ];
    for (path, headers, body, status, code) in cases {
        let r = server.request("POST", path, headers, body).await;
        assert_eq!((r.status, r.error_code().as_str()), (status, code), "{path} {:?}", String::from_utf8_lossy(body));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    assert_eq!(server.get("/v1/channels/a/messages").await.json()["messages"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let mut config = config();
    config.max_body_bytes = 100;
    let server = spawn(config).await;
    let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(100));
    let r = server.request("POST", "/v1/channels/a/messages", &[JSON], big.as_bytes()).await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"));
    let fits = format!(r#"{{"data":"{}"}}"#, "x".repeat(80));
    assert_eq!(server.request("POST", "/v1/channels/a/messages", &[JSON], fits.as_bytes()).await.status, 201);
}

#[tokio::test]
async fn a_channel_name_of_255_bytes_is_accepted_and_256_refused() {
    let server = start().await;
    let ok = "c".repeat(255);
    assert_eq!(server.publish(&ok, "e", json!(1)).await["offset"], 1);
    let r =
        server.request("POST", &format!("/v1/channels/{}/messages", "c".repeat(256)), &[JSON], br#"{"data":1}"#).await;
    assert_eq!(r.error_code(), "invalid_channel");
}

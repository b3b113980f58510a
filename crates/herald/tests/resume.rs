//! One cursor across every transport: a client that drops, reconnects, or switches technique gets exactly what
//! it missed, in order, nothing twice.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use common::start;
use serde_json::{json, Value};

fn data_of(messages: &[Value]) -> Vec<i64> {
    messages.iter().map(|m| m["data"]["i"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn a_cursor_from_polling_resumes_over_sse_and_websocket() {
    let server = start().await;
    for i in 1..=3 {
        server.publish("orders", "status", json!({ "i": i })).await;
    }
    let polled = server.get("/v1/channels/orders/messages").await.json();
    let cursor = polled["cursor"].as_str().unwrap().to_string();
    for i in 4..=6 {
        server.publish("orders", "status", json!({ "i": i })).await;
    }

    let mut sse = server.sse(&format!("channel=orders&envelope=true&since={cursor}"), &[]).await;
    let mut over_sse = Vec::new();
    for _ in 0..3 {
        over_sse.push(sse.next_data().await.json());
    }
    assert_eq!(data_of(&over_sse), [4, 5, 6]);

    let mut ws = server.ws().await;
    let subscribed = ws.call(json!({ "op": "subscribe", "channel": "orders", "since": cursor })).await;
    assert_eq!(subscribed["cursor"], cursor);
    let mut over_ws = Vec::new();
    for _ in 0..3 {
        over_ws.push(ws.recv().await);
    }
    assert_eq!(data_of(&over_ws), [4, 5, 6]);
    // Nothing more: the next frame is the answer to a ping.
    assert_eq!(ws.call(json!({ "op": "ping" })).await["op"], "pong");
}

#[tokio::test]
async fn a_websocket_message_cursor_resumes_a_long_poll() {
    let server = start().await;
    let mut ws = server.ws().await;
    ws.call(json!({ "op": "subscribe", "channel": "chat:room" })).await;
    server.publish("chat:room", "said", json!({ "i": 1 })).await;
    let seen = ws.recv().await;
    drop(ws);
    server.publish("chat:room", "said", json!({ "i": 2 })).await;
    let answer =
        server.get(&format!("/v1/channels/chat:room/messages?since={}", seen["cursor"].as_str().unwrap())).await;
    assert_eq!(data_of(answer.json()["messages"].as_array().unwrap()), [2]);
}

#[tokio::test]
async fn an_sse_id_resumes_a_multi_channel_poll() {
    let server = start().await;
    let mut sse = server.sse("channel=a&channel=b", &[]).await;
    sse.next().await; // preamble
    server.publish("a", "e", json!({ "i": 1 })).await;
    server.publish("b", "e", json!({ "i": 2 })).await;
    sse.next_data().await;
    let second = sse.next_data().await;
    drop(sse);
    server.publish("a", "e", json!({ "i": 3 })).await;
    server.publish("b", "e", json!({ "i": 4 })).await;
    let id = second.id.unwrap();
    let answer = server.get(&format!("/v1/poll?channel=a&channel=b&since={id}")).await.json();
    assert_eq!(data_of(answer["messages"].as_array().unwrap()), [3, 4]);
}

#[tokio::test]
async fn a_subscriber_that_reconnects_many_times_sees_every_message_once_in_order() {
    let server = start().await;
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut next = 1;
    for round in 0..10 {
        // Publish some while disconnected, then resume, alternating transports.
        for _ in 0..3 {
            server.publish("feed", "e", json!({ "i": next })).await;
            next += 1;
        }
        let since = cursor.as_deref().map(|c| format!("&since={c}")).unwrap_or_default();
        match round % 3 {
            0 => {
                let answer = server.get(&format!("/v1/channels/feed/messages?x=1{since}")).await.json();
                seen.extend(data_of(answer["messages"].as_array().unwrap()));
                cursor = answer["cursor"].as_str().map(str::to_owned);
            }
            1 => {
                let mut sse = server.sse(&format!("channel=feed&envelope=true{since}"), &[]).await;
                sse.next().await;
                while seen.len() < next - 1 {
                    let event = sse.next_data().await;
                    seen.push(event.json()["data"]["i"].as_i64().unwrap());
                    cursor = event.id;
                }
            }
            _ => {
                let mut ws = server.ws().await;
                let mut subscribe = json!({ "op": "subscribe", "channel": "feed" });
                if let Some(c) = &cursor {
                    subscribe["since"] = json!(c);
                }
                ws.call(subscribe).await;
                while seen.len() < next - 1 {
                    let m = ws.recv().await;
                    seen.push(m["data"]["i"].as_i64().unwrap());
                    cursor = m["cursor"].as_str().map(str::to_owned);
                }
            }
        }
    }
    assert_eq!(seen, (1..next as i64).collect::<Vec<_>>());
}

//! `direct_writes`: the fan-out writes live messages straight into the sockets of WebSocket and one-channel SSE
//! subscribers that have nothing else to write. Every subscriber still gets every message once, in order, whether
//! its socket takes the writes, blocks (a client that stops reading: the fan-out falls back to its queue, which
//! overflows, and it resumes from its cursor without a gap) or is written half (the rest goes first).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{config, spawn, Client, Sse, TestServer, Ws};
use herald_proto::{ChannelName, EventName};
use serde_json::{json, Value};

/// Publishes messages `first..=last`, `{"n":i,"pad":…}`, on `channel` straight through the hub, each with `pad`
/// bytes of padding (large ones fill a socket that is not read in a few hundred messages). `Paced`: the test's
/// task yields after each, so the fan-out worker takes each message with nothing behind it and writes into the
/// lent sockets; `Burst`: all are handed over first, so the worker is behind and queues them.
async fn publish_padded(server: &TestServer, channel: &str, (first, last): (usize, usize), pad: usize, pace: Pace) {
    let padding = "x".repeat(pad);
    for i in first..=last {
        let data = Bytes::from(format!("{{\"n\":{i},\"pad\":\"{padding}\"}}"));
        server.hub.publish(ChannelName::new(channel).unwrap(), EventName::default_event(), data).await.unwrap();
        if pace == Pace::Paced {
            tokio::task::yield_now().await;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pace {
    Paced,
    Burst,
}

async fn ws_subscribed(server: &Client, request: Value) -> Ws {
    ws_opened(server, request).await.0
}

/// A WebSocket subscribed with `request`, and the cursor it starts from.
async fn ws_opened(server: &Client, request: Value) -> (Ws, String) {
    let mut ws = server.ws().await;
    let mut request = request;
    request["op"] = json!("subscribe");
    let answer = ws.call(request).await;
    assert_eq!(answer["op"], "subscribed", "{answer}");
    (ws, answer["cursor"].as_str().unwrap().to_string())
}

/// The `n` of each message frame until `count` are read or the connection closes; and the cursor of the last
/// one and the close code, if it closed.
async fn ws_numbers(ws: &mut Ws, count: usize) -> (Vec<u64>, Option<String>, Option<Option<u16>>) {
    let (mut numbers, mut cursor) = (Vec::new(), None);
    while numbers.len() < count {
        match ws.read().await {
            common::WsRead::Json(frame) => {
                assert_eq!(frame["op"], "message", "{frame}");
                let data: Value = frame["data"].clone();
                numbers.push(data["n"].as_u64().unwrap());
                cursor = Some(frame["cursor"].as_str().unwrap().to_string());
            }
            common::WsRead::Closed(code) => return (numbers, cursor, Some(code)),
        }
    }
    (numbers, cursor, None)
}

/// The `n` of each data event until `count` are read or the stream ends; and the last id.
async fn sse_numbers(sse: &mut Sse, count: usize) -> (Vec<u64>, Option<String>) {
    let (mut numbers, mut last_id) = (Vec::new(), None);
    while numbers.len() < count {
        let Some(event) = sse.next().await else { break };
        if event.data.is_some() {
            numbers.push(event.json()["n"].as_u64().unwrap());
        }
        last_id = event.id.or(last_id);
    }
    (numbers, last_id)
}

fn one_to(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

#[tokio::test]
async fn many_websocket_and_sse_subscribers_of_one_channel_get_every_message_once_in_order_from_the_fan_out() {
    let mut config = config();
    config.direct_writes = true;
    config.default_namespace.history_size = 1000;
    let server = spawn(config).await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        sockets.push(ws_subscribed(&server, json!({ "channel": "hot" })).await);
    }
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(server.sse("channel=hot", &[]).await);
    }
    for stream in &mut streams {
        assert!(stream.next().await.unwrap().retry.is_some(), "the preamble comes first");
    }
    // Written by the fan-out while it keeps up, then queued while it is behind, then written again.
    publish_padded(&server, "hot", (1, 100), 10, Pace::Paced).await;
    publish_padded(&server, "hot", (101, 200), 10, Pace::Burst).await;
    publish_padded(&server, "hot", (201, 300), 10, Pace::Paced).await;
    for ws in &mut sockets {
        assert_eq!(ws_numbers(ws, 300).await.0, one_to(300));
        ws.assert_quiet().await;
    }
    for sse in &mut streams {
        assert_eq!(sse_numbers(sse, 300).await.0, one_to(300));
    }
    assert!(server.metric(r#"herald_direct_writes_total{transport="ws"}"#).await > 0, "the fan-out wrote");
    assert!(server.metric(r#"herald_direct_writes_total{transport="sse"}"#).await > 0, "the fan-out wrote");
    let delivered = server.metric(r#"herald_messages_delivered_total{transport="ws"}"#).await;
    assert_eq!(delivered, 20 * 300, "each counted once, whoever wrote it");
}

/// Reads `channel` on `ws` (subscribed at `start`) until it has messages 1 to `n`, resuming from its last cursor on
/// a new connection each time the server closes it as a slow consumer; asserts that nothing comes twice or out of
/// order. Returns how many times it was closed.
async fn ws_everything(server: &Client, (mut ws, start): (Ws, String), channel: &str, n: u64) -> usize {
    let mut numbers: Vec<u64> = Vec::new();
    let mut closes = 0;
    let mut at = start;
    loop {
        let (more, cursor, closed) = ws_numbers(&mut ws, (n as usize) - numbers.len()).await;
        numbers.extend(more);
        at = cursor.unwrap_or(at);
        assert_eq!(numbers, one_to(numbers.len() as u64), "in order, once, across resumes");
        if closed.is_none() {
            assert_eq!(numbers.len() as u64, n);
            return closes;
        }
        closes += 1;
        assert!(closes < 100, "each resume makes progress");
        (ws, _) = ws_opened(server, json!({ "channel": channel, "since": at })).await;
    }
}

/// The same for an SSE stream of `channel`, resuming with `Last-Event-ID` each time it ends.
async fn sse_everything(server: &Client, mut sse: Sse, channel: &str, n: u64) -> usize {
    let mut numbers: Vec<u64> = Vec::new();
    let mut ends = 0;
    let mut last_id: Option<String> = None;
    loop {
        let (more, id) = sse_numbers(&mut sse, (n as usize) - numbers.len()).await;
        numbers.extend(more);
        last_id = id.or(last_id);
        assert_eq!(numbers, one_to(numbers.len() as u64), "in order, once, across resumes");
        if numbers.len() as u64 == n {
            return ends;
        }
        ends += 1;
        assert!(ends < 100, "each resume makes progress");
        let headers: Vec<(&str, &str)> = last_id.iter().map(|id| ("Last-Event-ID", id.as_str())).collect();
        sse = server.sse(&format!("channel={channel}"), &headers).await;
    }
}

#[tokio::test]
async fn websockets_that_stop_reading_get_everything_or_are_closed_as_slow_and_resume_without_a_gap() {
    let mut config = config();
    config.direct_writes = true;
    config.connection_queue = 4;
    config.default_namespace.history_size = 1000;
    let server = spawn(config).await;
    let stalled = ws_opened(&server, json!({ "channel": "c" })).await;
    let reading = ws_opened(&server, json!({ "channel": "c" })).await;
    let client = Client { addr: server.addr, local: None };
    let reader = tokio::spawn(async move { ws_everything(&client, reading, "c", 600).await });
    // 600 messages of 32 KiB: far more than the kernel's buffers of a socket nobody reads. Paced, so that the
    // fan-out writes them into the stalled socket until it would block, then queues.
    publish_padded(&server, "c", (1, 600), 32 * 1024, Pace::Paced).await;
    reader.await.unwrap();
    let closes = ws_everything(&server, stalled, "c", 600).await;
    assert!(closes > 0, "600 messages do not fit in the sockets' buffers: the queue overflowed");
    assert!(server.metric(r#"herald_slow_consumer_disconnects_total{transport="ws"}"#).await >= 1);
}

#[tokio::test]
async fn an_sse_stream_that_stops_reading_ends_as_slow_and_resumes_from_its_last_id_without_a_gap() {
    let mut config = config();
    config.direct_writes = true;
    config.connection_queue = 4;
    config.default_namespace.history_size = 1000;
    let server = spawn(config).await;
    let stalled = server.sse("channel=c", &[]).await;
    publish_padded(&server, "c", (1, 600), 32 * 1024, Pace::Paced).await;
    let ends = sse_everything(&server, stalled, "c", 600).await;
    assert!(ends > 0, "600 messages do not fit in the sockets' buffers: the queue overflowed");
    assert!(server.metric(r#"herald_slow_consumer_disconnects_total{transport="sse"}"#).await >= 1);
}

#[tokio::test]
async fn a_publish_over_http_answers_while_a_subscriber_is_blocked() {
    let mut config = config();
    config.direct_writes = true;
    config.connection_queue = 4096;
    let server = spawn(config).await;
    let _stalled = ws_subscribed(&server, json!({ "channel": "c" })).await;
    // Fill the stalled socket and its queue's first places.
    publish_padded(&server, "c", (1, 400), 32 * 1024, Pace::Paced).await;
    for i in 0..20 {
        let published = server.publish("c", "m", json!({ "i": i })).await;
        assert!(published["offset"].as_u64().unwrap() > 400, "{published}");
    }
}

#[tokio::test]
async fn a_channel_of_a_few_subscribers_is_written_by_the_fan_out_even_while_it_is_behind_with_a_crowded_one() {
    let mut config = config();
    config.direct_writes = true;
    config.default_namespace.history_size = 1000;
    let server = spawn(config).await;
    // Nine subscribers: more than a publish fans out itself (8), so every message of `crowded` goes to the worker.
    let mut crowd = Vec::new();
    for _ in 0..9 {
        crowd.push(ws_subscribed(&server, json!({ "channel": "crowded" })).await);
    }
    let mut small = ws_subscribed(&server, json!({ "channel": "small" })).await;
    // All handed over before the worker runs (one thread): it is behind for every message but the last, and queues
    // the crowded channel's for its subscribers' tasks, but writes the small channel's into its lent socket.
    for i in 1..=50 {
        publish_padded(&server, "crowded", (i, i), 10, Pace::Burst).await;
        publish_padded(&server, "small", (i, i), 10, Pace::Burst).await;
    }
    assert_eq!(ws_numbers(&mut small, 50).await.0, one_to(50));
    for ws in &mut crowd {
        assert_eq!(ws_numbers(ws, 50).await.0, one_to(50));
    }
    let direct = server.metric(r#"herald_direct_writes_total{transport="ws"}"#).await;
    assert!(direct >= 50, "the small channel's 50 messages were written by the fan-out, not queued: {direct}");
    assert_eq!(server.metric(r#"herald_messages_delivered_total{transport="ws"}"#).await, 10 * 50);
}

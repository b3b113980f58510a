//! `GET /v1/ws`: subscribing (where a subscription starts, resets), live messages, unsubscribing, publishing
//! from a client, ping, every refused frame, and the close codes for a frame too large and a slow consumer.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, position, spawn, start, Ws};
use herald::config::NamespaceSettings;
use herald_proto::Position;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The offset of a `message` frame of `channel`; panics on any other frame.
fn offset_of(frame: &Value, channel: &str) -> u64 {
    assert_eq!((frame["op"].as_str(), frame["channel"].as_str()), (Some("message"), Some(channel)), "{frame}");
    frame["offset"].as_u64().unwrap()
}

/// The offsets of the next `count` frames, all messages of `channel`.
async fn next_offsets(ws: &mut Ws, channel: &str, count: usize) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(count);
    for _ in 0..count {
        offsets.push(offset_of(&ws.recv().await, channel));
    }
    offsets
}

/// Subscribes and returns the `subscribed` frame.
async fn subscribe(ws: &mut Ws, request: Value) -> Value {
    let mut request = request;
    request["op"] = json!("subscribe");
    let answer = ws.call(request.clone()).await;
    assert_eq!((answer["op"].as_str(), &answer["channel"]), (Some("subscribed"), &request["channel"]), "{answer}");
    answer
}

fn cursor(frame: &Value) -> &str {
    frame["cursor"].as_str().unwrap()
}

/// Sends `frame`, expects an `error` frame with `code` (and the request's `id`, if it had one), then proves the
/// connection still answers.
async fn assert_refused(ws: &mut Ws, frame: WsMessage, code: &str, id: Option<Value>) {
    let shown = format!("{frame:?}");
    ws.send_raw(frame).await;
    let mut error = ws.recv().await;
    let message = error.as_object_mut().unwrap().remove("message");
    assert!(message.as_ref().and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "{shown}: {error}");
    let mut expected = json!({ "op": "error", "code": code });
    if let Some(id) = id {
        expected["id"] = id;
    }
    assert_eq!(error, expected, "{shown}");
    assert_eq!(ws.call(json!({ "op": "ping", "id": 0 })).await, json!({ "op": "pong", "id": 0 }), "after {shown}");
}

fn text(frame: &str) -> WsMessage {
    WsMessage::Text(frame.into())
}

#[tokio::test]
async fn subscribed_names_the_start_and_echoes_the_id_before_any_replayed_message() {
    let server = start().await;
    let published = server.publish_n("c", 2).await;
    let mut ws = server.ws().await;

    let subscribed = ws.call(json!({ "op": "subscribe", "channel": "c", "last": 2, "id": 1 })).await;
    let expected =
        json!({ "op": "subscribed", "channel": "c", "cursor": cursor(&subscribed), "reset": false, "id": 1 });
    assert_eq!(subscribed, expected);
    let epoch = position(cursor(&published[0]), "c").epoch;
    assert_eq!(position(cursor(&subscribed), "c"), Position::new(epoch, 0), "what follows is every message after it");
    assert_eq!(next_offsets(&mut ws, "c", 2).await, [1, 2]);
}

#[tokio::test]
async fn last_n_replays_the_newest_n_messages() {
    let server = start().await;
    server.publish_n("c", 5).await;
    let mut ws = server.ws().await;
    subscribe(&mut ws, json!({ "channel": "c", "last": 2 })).await;
    assert_eq!(next_offsets(&mut ws, "c", 2).await, [4, 5]);
    ws.assert_quiet().await;
}

#[tokio::test]
async fn without_since_or_last_only_new_messages_come() {
    let server = start().await;
    server.publish_n("c", 3).await;
    let mut ws = server.ws().await;
    subscribe(&mut ws, json!({ "channel": "c" })).await;
    ws.assert_quiet().await;
    server.publish("c", "tick", json!(4)).await;
    assert_eq!(next_offsets(&mut ws, "c", 1).await, [4]);
}

#[tokio::test]
async fn since_resumes_with_exactly_the_missed_messages() {
    let server = start().await;
    let published = server.publish_n("c", 5).await;
    let mut ws = server.ws().await;

    let subscribed = subscribe(&mut ws, json!({ "channel": "c", "since": cursor(&published[1]), "last": 1 })).await;
    assert_eq!(subscribed["reset"], false);
    assert_eq!(position(cursor(&subscribed), "c"), position(cursor(&published[1]), "c"));
    assert_eq!(next_offsets(&mut ws, "c", 3).await, [3, 4, 5], "the cursor wins over last");
    ws.assert_quiet().await;
    server.publish("c", "tick", json!(6)).await;
    assert_eq!(next_offsets(&mut ws, "c", 1).await, [6]);
}

#[tokio::test]
async fn a_live_message_is_the_envelope_with_op_message() {
    let server = start().await;
    let mut ws = server.ws().await;
    subscribe(&mut ws, json!({ "channel": "dashboard" })).await;
    server.publish("dashboard", "newTopSeller", json!({ "top_seller": "Hassan" })).await;

    let mut frame = ws.recv().await;
    let stored = server.get("/v1/channels/dashboard/messages").await.json()["messages"][0].clone();
    assert_eq!(frame.as_object_mut().unwrap().remove("op"), Some(json!("message")));
    assert_eq!(frame, stored);
}

#[tokio::test]
async fn after_unsubscribed_no_message_of_the_channel_follows() {
    let server = start().await;
    let mut ws = server.ws().await;
    subscribe(&mut ws, json!({ "channel": "c" })).await;

    let answer = ws.call(json!({ "op": "unsubscribe", "channel": "c", "id": 2 })).await;
    assert_eq!(answer, json!({ "op": "unsubscribed", "channel": "c", "id": 2 }));
    server.publish("c", "tick", json!(1)).await;
    ws.assert_quiet().await;
}

#[tokio::test]
async fn clients_may_not_publish_by_default() {
    let server = start().await;
    let mut ws = server.ws().await;
    let frame = text(r#"{"op":"publish","channel":"c","data":1,"id":3}"#);
    assert_refused(&mut ws, frame, "client_publish_forbidden", Some(json!(3))).await;
    assert_eq!(server.get("/v1/channels/c/messages").await.json()["messages"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn where_the_namespace_allows_it_a_client_publish_is_stored_and_delivered() {
    let mut config = config();
    config
        .namespaces
        .insert("chat".into(), NamespaceSettings { allow_client_publish: true, ..NamespaceSettings::default() });
    let server = spawn(config).await;
    let mut listener = server.ws().await;
    subscribe(&mut listener, json!({ "channel": "chat:room1" })).await;
    let mut talker = server.ws().await;

    let published = talker
        .call(
            json!({ "op": "publish", "channel": "chat:room1", "event": "said", "data": { "text": "hi" }, "id": "p1" }),
        )
        .await;
    let expected = json!({
        "op": "published", "channel": "chat:room1", "offset": 1,
        "cursor": cursor(&published), "time": published["time"], "id": "p1",
    });
    assert_eq!(published, expected);

    let heard = listener.recv().await;
    assert_eq!(offset_of(&heard, "chat:room1"), 1);
    assert_eq!(
        (&heard["event"], &heard["data"], &heard["cursor"]),
        (&json!("said"), &json!({ "text": "hi" }), &published["cursor"])
    );
}

#[tokio::test]
async fn ping_is_answered_with_pong_echoing_a_number_a_string_or_no_id() {
    let server = start().await;
    let mut ws = server.ws().await;
    assert_eq!(ws.call(json!({ "op": "ping", "id": 4 })).await, json!({ "op": "pong", "id": 4 }));
    assert_eq!(ws.call(json!({ "op": "ping", "id": "abc" })).await, json!({ "op": "pong", "id": "abc" }));
    assert_eq!(ws.call(json!({ "op": "ping" })).await, json!({ "op": "pong" }));
}

#[tokio::test]
async fn every_unreadable_frame_gets_an_error_and_the_connection_stays_usable() {
    let server = start().await;
    let mut ws = server.ws().await;
    let cases = [
        ("nope", "invalid_json", None),
        ("[1,2]", "invalid_json", None),
        (r#"{"op":"dance","id":7}"#, "unknown_op", Some(json!(7))),
        (r#"{"op":"subscribe","id":6}"#, "invalid_frame", Some(json!(6))),
        (r#"{"op":"subscribe","channel":"c","colour":"red","id":"x"}"#, "invalid_frame", Some(json!("x"))),
        (r#"{"op":"subscribe","channel":"c","last":-1}"#, "invalid_frame", None),
        (r#"{"op":"subscribe","channel":"a b","id":5}"#, "invalid_channel", Some(json!(5))),
        (r#"{"op":"subscribe","channel":"c","since":"!!","id":4}"#, "invalid_cursor", Some(json!(4))),
        (r#"{"op":"publish","channel":"c","event":"a b","data":1,"id":3}"#, "invalid_event", Some(json!(3))),
    ];
    for (frame, code, id) in cases {
        assert_refused(&mut ws, text(frame), code, id).await;
    }
}

#[tokio::test]
async fn a_binary_frame_is_refused() {
    let server = start().await;
    let mut ws = server.ws().await;
    assert_refused(&mut ws, WsMessage::Binary(b"{}".to_vec().into()), "binary_not_supported", None).await;
}

#[tokio::test]
async fn subscribing_twice_to_a_channel_is_refused() {
    let server = start().await;
    let mut ws = server.ws().await;
    subscribe(&mut ws, json!({ "channel": "c" })).await;
    assert_refused(&mut ws, text(r#"{"op":"subscribe","channel":"c","id":9}"#), "already_subscribed", Some(json!(9)))
        .await;
}

#[tokio::test]
async fn unsubscribing_from_a_channel_not_subscribed_is_refused() {
    let server = start().await;
    let mut ws = server.ws().await;
    assert_refused(&mut ws, text(r#"{"op":"unsubscribe","channel":"c","id":9}"#), "not_subscribed", Some(json!(9)))
        .await;
}

#[tokio::test]
async fn more_subscriptions_than_max_subscriptions_per_connection_are_refused() {
    let mut config = config();
    config.max_subscriptions_per_connection = 2;
    let server = spawn(config).await;
    let mut ws = server.ws().await;
    subscribe(&mut ws, json!({ "channel": "a" })).await;
    subscribe(&mut ws, json!({ "channel": "b" })).await;
    assert_refused(
        &mut ws,
        text(r#"{"op":"subscribe","channel":"c","id":3}"#),
        "too_many_subscriptions",
        Some(json!(3)),
    )
    .await;
    server.publish("c", "tick", json!(1)).await;
    ws.assert_quiet().await;
}

#[tokio::test]
async fn a_frame_larger_than_max_frame_bytes_closes_with_1009() {
    let mut config = config();
    config.max_frame_bytes = 1024;
    let server = spawn(config).await;
    let mut ws = server.ws().await;
    let within = "x".repeat(1000);
    assert_eq!(
        ws.call(json!({ "op": "ping", "id": within })).await["op"],
        "pong",
        "a frame within the limit is served"
    );
    ws.send(json!({ "op": "ping", "id": "x".repeat(2000) })).await;
    assert_eq!(ws.close_code().await, Some(1009));
}

#[tokio::test]
async fn a_connection_too_slow_for_its_queue_is_closed_with_4001_and_counted() {
    let mut config = config();
    config.connection_queue = 2;
    // The burst overflows the queue only when it goes through it: with direct writes the socket takes it all.
    // (tests/direct_writes.rs overflows a connection that writes directly by not reading it.)
    config.direct_writes = false;
    let server = spawn(config).await;
    let mut ws = server.ws().await;
    subscribe(&mut ws, json!({ "channel": "c" })).await;
    server.publish_burst("c", 50).await;
    assert_eq!(ws.close_code().await, Some(4001));
    assert_eq!(server.metric(r#"herald_slow_consumer_disconnects_total{transport="ws"}"#).await, 1);
}

#[tokio::test]
async fn a_cursor_older_than_the_history_is_subscribed_with_reset_then_the_retained_messages() {
    let mut config = config();
    config.default_namespace.history_size = 2;
    let server = spawn(config).await;
    let published = server.publish_n("c", 5).await;
    let mut ws = server.ws().await;

    let subscribed = subscribe(&mut ws, json!({ "channel": "c", "since": cursor(&published[0]) })).await;
    assert_eq!(subscribed["reset"], true);
    assert_eq!(position(cursor(&subscribed), "c"), position(cursor(&published[2]), "c"), "it starts after 3");
    assert_eq!(next_offsets(&mut ws, "c", 2).await, [4, 5]);
    ws.assert_quiet().await;
}

#[tokio::test]
async fn messages_of_many_channels_on_one_connection_come_in_publish_order() {
    let server = start().await;
    let mut ws = server.ws().await;
    for channel in ["a", "b", "c"] {
        subscribe(&mut ws, json!({ "channel": channel })).await;
    }
    let order = ["a", "b", "a", "c", "b", "a"];
    for channel in order {
        server.publish(channel, "tick", json!(null)).await;
    }
    let mut seen = Vec::new();
    for _ in order {
        let frame = ws.recv().await;
        seen.push((frame["channel"].as_str().unwrap().to_string(), frame["offset"].as_u64().unwrap()));
    }
    let expected: Vec<(String, u64)> =
        [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3)].iter().map(|&(c, o)| (c.to_string(), o)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_plain_request_to_the_websocket_endpoint_is_426_upgrade_required_in_json() {
    let server = start().await;
    let r = server.get("/v1/ws").await;
    assert_eq!((r.status, r.error_code().as_str()), (426, "upgrade_required"));
    assert_eq!(r.header("upgrade"), Some("websocket"));
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_nothing_for_two_ping_intervals_is_dropped() {
    let server = start().await;
    let mut ws = server.ws().await;
    assert_eq!(ws.call(json!({ "op": "ping" })).await["op"], "pong");
    // Not reading means not answering the server's pings: after two intervals (20 s each) it hangs up.
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    server.until_metric("herald_connections{transport=\"ws\"}", 0).await;
}

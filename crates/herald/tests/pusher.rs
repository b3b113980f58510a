//! The Pusher Channels protocol over real sockets: the connection and its close codes, public, private, encrypted
//! and cache channels, client events, socket_id exclusion, sign-in, server-to-user events and terminated
//! connections, the HTTP API and its signatures and limits, and how a Pusher app's channels meet Herald's own
//! transports. The official clients (pusher-js, the `pusher` SDKs, Laravel Echo) are tested from Node in
//! clients/pusher/test/.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::pusher::{app, auth, pusher_config, ID, KEY, SECRET};
use common::{spawn, WsRead};
use herald::pusher::wire::signature;
use serde_json::{json, Value};

/// The data a Pusher client reads from an event frame: the string, parsed as pusher-js parses it.
fn data_of(frame: &Value) -> Value {
    let text = frame["data"].as_str().unwrap_or_else(|| panic!("data is a string: {frame}"));
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

#[tokio::test]
async fn a_connection_is_established_with_a_socket_id_and_the_activity_timeout() {
    let server = spawn(pusher_config()).await;
    let mut ws = server.pusher_raw("/app/app-key?protocol=7&client=js&version=8.6.0").await;
    let hello = ws.recv().await;
    assert_eq!(hello["event"], "pusher:connection_established");
    let data: Value = serde_json::from_str(hello["data"].as_str().expect("data is a string")).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap();
    let (node, n) = socket_id.split_once('.').unwrap();
    assert!(!node.is_empty() && !n.is_empty() && (node.to_owned() + n).bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(data["activity_timeout"], 120);
    assert_eq!(server.metric("herald_connections{transport=\"pusher\"}").await, 1);
    let other = server.pusher(KEY).await;
    assert_ne!(other.socket_id, socket_id, "socket ids are unique");
}

/// Connects on `path` and returns the `pusher:error` code and the close code.
async fn refused(server: &common::TestServer, path: &str) -> (Value, Option<u16>) {
    let mut ws = server.pusher_raw(path).await;
    let error = ws.recv().await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    (error["data"]["code"].clone(), ws.close_code().await)
}

#[tokio::test]
async fn each_refused_connection_is_upgraded_then_closed_with_the_code_of_its_reason() {
    let mut config = pusher_config();
    let mut disabled = app("2", "disabled-key", "app-secret-2");
    disabled.enabled = false;
    let mut small = app("3", "small-key", "app-secret-3");
    small.limits.max_connections = 1;
    config.pusher.apps.extend([disabled, small]);
    config.cors_origins = vec!["https://shop.example".into()];
    let server = spawn(config).await;
    let cases = [
        ("/app/no-such-key?protocol=7", 4001),
        ("/app/disabled-key?protocol=7", 4003),
        ("/app/app-key/extra?protocol=7", 4005),
        ("/app/app-key?protocol=seven", 4006),
        ("/app/app-key?protocol=4", 4007),
        ("/app/app-key?client=js", 4008),
    ];
    for (path, code) in cases {
        assert_eq!(refused(&server, path).await, (json!(code), Some(code)), "{path}");
    }
    let _first = server.pusher("small-key").await;
    assert_eq!(refused(&server, "/app/small-key?protocol=7").await, (json!(4004), Some(4004)), "over the app's quota");
    let foreign = server.ws_with("/app/app-key?protocol=7", &[("Origin", "https://evil.example")]).await;
    let mut foreign = foreign.unwrap_or_else(|r| panic!("upgraded: {}", r.status));
    assert_eq!(foreign.recv().await["data"]["code"], 4009);
    assert_eq!(foreign.close_code().await, Some(4009));
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_unknown_app\"}").await, 1);
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_max_connections\"}").await, 1);
    assert_eq!(server.metric("herald_refusals_total{reason=\"origin_forbidden\"}").await, 1);
}

#[tokio::test]
async fn a_plain_request_to_the_socket_path_is_told_to_upgrade() {
    let server = spawn(pusher_config()).await;
    assert_eq!(server.get("/app/app-key?protocol=7").await.status, 426);
}

#[tokio::test]
async fn a_triggered_event_reaches_subscribers_byte_for_byte_and_herald_transports_as_json() {
    let server = spawn(pusher_config()).await;
    let mut client = server.pusher(KEY).await;
    client.subscribe("orders").await;
    let mut sse = server.sse("channel=1:orders", &[]).await;
    sse.next().await.expect("the preamble");
    let sent = r#"{"id": 7, "status": "shipped"}"#;
    server.trigger(&["orders"], r"App\Events\OrderShipped", sent).await;
    let frame = client.recv().await;
    assert_eq!(frame, json!({ "event": r"App\Events\OrderShipped", "channel": "orders", "data": sent }));
    let event = sse.next_data().await;
    assert_eq!(event.event.as_deref(), Some(r"App\Events\OrderShipped"));
    assert_eq!(event.data.as_deref(), Some(sent), "Herald's transports see the JSON value as sent");
    server.trigger(&["orders"], "note", "plain text, not JSON").await;
    assert_eq!(client.recv().await["data"], "plain text, not JSON");
    assert_eq!(sse.next_data().await.json(), json!("plain text, not JSON"), "text is a JSON string to Herald");
    assert_eq!(server.metric("herald_messages_delivered_total{transport=\"pusher\"}").await, 2);
}

#[tokio::test]
async fn a_herald_publish_reaches_pusher_subscribers_as_its_json_text() {
    let server = spawn(pusher_config()).await;
    let mut client = server.pusher(KEY).await;
    client.subscribe("dashboard").await;
    server.publish("1:dashboard", "newTopSeller", json!({ "top_seller": "Hassan" })).await;
    let frame = client.recv().await;
    assert_eq!(frame, json!({ "event": "newTopSeller", "channel": "dashboard", "data": r#"{"top_seller":"Hassan"}"# }));
    server.publish("1:dashboard", "pusher_internal:member_added", json!({ "user_id": "x" })).await;
    client.assert_quiet().await;
}

#[tokio::test]
async fn apps_are_isolated_from_each_other() {
    let mut config = pusher_config();
    config.pusher.apps.push(app("2", "other-key", "other-secret"));
    let server = spawn(config).await;
    let mut one = server.pusher(KEY).await;
    let mut two = server.pusher("other-key").await;
    one.subscribe("orders").await;
    two.subscribe("orders").await;
    server.trigger(&["orders"], "placed", "1").await;
    assert_eq!(one.recv().await["event"], "placed");
    two.assert_quiet().await;
    let wrong_app = server.pusher_api_at(("2", KEY, SECRET), "POST", "/events", b"{}", &[], 0).await;
    assert_eq!(wrong_app.status, 401, "app 1's key and secret do not sign for app 2");
}

#[tokio::test]
async fn the_socket_named_by_a_trigger_is_excluded_and_the_others_are_not() {
    let server = spawn(pusher_config()).await;
    let (mut sender, mut other) = (server.pusher(KEY).await, server.pusher(KEY).await);
    sender.subscribe("chat").await;
    other.subscribe("chat").await;
    let body = json!({ "name": "said", "channel": "chat", "data": "hi", "socket_id": sender.socket_id });
    assert_eq!(server.pusher_api("POST", "/events", &body).await.status, 200);
    assert_eq!(other.recv().await["event"], "said");
    sender.assert_quiet().await;
    let bad = json!({ "name": "said", "channel": "chat", "data": "hi", "socket_id": "not-a-socket" });
    assert_eq!(server.pusher_api("POST", "/events", &bad).await.error_code(), "invalid_socket_id");
}

#[tokio::test]
async fn private_channels_need_the_apps_signature_for_this_socket() {
    let server = spawn(pusher_config()).await;
    let mut client = server.pusher(KEY).await;
    let other_socket = auth("1.1", "private-orders", None);
    for bad in [None, Some("app-key:00"), Some(other_socket.as_str())] {
        let answer = client.subscribe_with("private-orders", bad, None).await;
        assert_eq!(answer["event"], "pusher:subscription_error", "{answer}");
        assert_eq!(
            (answer["data"]["type"].as_str(), answer["data"]["status"].as_u64()),
            (Some("AuthError"), Some(401))
        );
    }
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_channel_auth\"}").await, 3);
    client.subscribe("private-orders").await;
    server.trigger(&["private-orders"], "paid", "1").await;
    assert_eq!(data_of(&client.recv().await), json!(1));
    let sse = server.sse("channel=1:private-orders", &[]).await;
    assert_eq!(sse.status, 401, "Herald's transports need a token for a Pusher private channel");
}

#[tokio::test]
async fn client_events_go_to_the_other_subscribers_of_private_channels_only() {
    let server = spawn(pusher_config()).await;
    let (mut a, mut b) = (server.pusher(KEY).await, server.pusher(KEY).await);
    for channel in ["private-room", "private-encrypted-room", "public-room"] {
        let a_auth = channel.starts_with("private-").then(|| auth(&a.socket_id, channel, None));
        let b_auth = channel.starts_with("private-").then(|| auth(&b.socket_id, channel, None));
        assert_eq!(
            a.subscribe_with(channel, a_auth.as_deref(), None).await["event"],
            "pusher_internal:subscription_succeeded"
        );
        assert_eq!(
            b.subscribe_with(channel, b_auth.as_deref(), None).await["event"],
            "pusher_internal:subscription_succeeded"
        );
    }
    a.send(json!({ "event": "client-typing", "channel": "private-room", "data": { "on": true } })).await;
    assert_eq!(b.recv().await, json!({ "event": "client-typing", "channel": "private-room", "data": { "on": true } }));
    a.assert_quiet().await;
    for (channel, why) in
        [("private-encrypted-room", "only for"), ("public-room", "only for"), ("private-other", "subscribe")]
    {
        a.send(json!({ "event": "client-typing", "channel": channel, "data": 1 })).await;
        let error = a.recv().await;
        assert_eq!(error["event"], "pusher:error", "{channel}");
        assert!(error["data"]["message"].as_str().unwrap().contains(why), "{error}");
    }
    b.assert_quiet().await;
}

#[tokio::test]
async fn a_client_over_its_client_event_rate_is_closed_with_4301() {
    let mut config = pusher_config();
    config.pusher.apps[0].limits.client_events_per_second = 2;
    let server = spawn(config).await;
    let mut a = server.pusher(KEY).await;
    a.subscribe("private-room").await;
    for _ in 0..3 {
        a.send(json!({ "event": "client-x", "channel": "private-room", "data": {} })).await;
    }
    let (error, code) = a.closing().await;
    assert_eq!((error["data"]["code"].as_u64(), code), (Some(4301), Some(4301)));
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_client_events_per_second\"}").await, 1);
}

#[tokio::test]
async fn a_client_event_over_the_event_size_is_refused_and_the_connection_stays() {
    let mut config = pusher_config();
    config.pusher.apps[0].limits.max_event_bytes = 100;
    let server = spawn(config).await;
    let mut a = server.pusher(KEY).await;
    a.subscribe("private-room").await;
    a.send(json!({ "event": "client-x", "channel": "private-room", "data": "x".repeat(100) })).await;
    assert!(a.recv().await["data"]["message"].as_str().unwrap().contains("at most 100 bytes"));
    a.assert_quiet().await;
    let big = json!({ "name": "e", "channel": "a", "data": "x".repeat(101) });
    assert_eq!(server.pusher_api("POST", "/events", &big).await.status, 413);
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_max_event_bytes\"}").await, 2);
}

#[tokio::test]
async fn a_cache_channel_sends_its_last_event_on_subscribe_or_a_cache_miss() {
    let server = spawn(pusher_config()).await;
    let mut early = server.pusher(KEY).await;
    early.subscribe("cache-prices").await;
    assert_eq!(early.recv().await, json!({ "event": "pusher:cache_miss", "channel": "cache-prices", "data": "{}" }));
    server.trigger(&["cache-prices"], "price", "1").await;
    server.trigger(&["cache-prices"], "price", "2").await;
    let mut late = server.pusher(KEY).await;
    late.subscribe("cache-prices").await;
    assert_eq!(late.recv().await, json!({ "event": "price", "channel": "cache-prices", "data": "2" }));
    late.assert_quiet().await;
}

#[tokio::test]
async fn unsubscribing_stops_delivery_at_once() {
    let server = spawn(pusher_config()).await;
    let mut client = server.pusher(KEY).await;
    client.subscribe("a").await;
    client.send(json!({ "event": "pusher:unsubscribe", "data": { "channel": "a" } })).await;
    client.assert_quiet().await;
    server.trigger(&["a"], "e", "1").await;
    client.assert_quiet().await;
}

#[tokio::test]
async fn the_server_pings_an_idle_client_and_closes_one_that_does_not_answer_with_4201() {
    let mut config = pusher_config();
    config.pusher.activity_timeout = Duration::from_secs(1);
    config.pusher.pong_timeout = Duration::from_secs(1);
    let server = spawn(config).await;
    let mut answering = server.pusher(KEY).await;
    assert_eq!(answering.recv().await, json!({ "event": "pusher:ping", "data": "{}" }));
    answering.send(json!({ "event": "pusher:pong", "data": {} })).await;
    assert_eq!(answering.recv().await, json!({ "event": "pusher:ping", "data": "{}" }), "pinged again later");
    let mut silent = server.pusher(KEY).await;
    assert_eq!(silent.recv().await["event"], "pusher:ping");
    let (error, code) = silent.closing().await;
    assert_eq!((error["data"]["code"].as_u64(), code), (Some(4201), Some(4201)));
}

#[tokio::test]
async fn a_frame_over_max_frame_bytes_closes_with_1009() {
    let mut config = pusher_config();
    config.max_frame_bytes = 1024;
    let server = spawn(config).await;
    let mut client = server.pusher(KEY).await;
    client.send(json!({ "event": "client-x", "channel": "private-a", "data": "x".repeat(2000) })).await;
    assert_eq!(client.ws.close_code().await, Some(1009));
}

#[tokio::test]
async fn a_bad_frame_is_answered_with_an_error_and_the_connection_stays() {
    let server = spawn(pusher_config()).await;
    let mut client = server.pusher(KEY).await;
    for bad in [json!("not an object"), json!({ "event": "pusher:subscribe" }), json!({ "event": "hello" })] {
        client.send(bad.clone()).await;
        assert_eq!(client.recv().await["event"], "pusher:error", "{bad}");
    }
    let answer = client.subscribe_with("bad name!", None, None).await;
    assert_eq!(
        (answer["event"].as_str(), answer["data"]["type"].as_str()),
        (Some("pusher:subscription_error"), Some("InvalidChannel"))
    );
    client.assert_quiet().await;
}

#[tokio::test]
async fn a_signed_in_user_gets_server_to_user_events_and_is_terminated_on_request() {
    let server = spawn(pusher_config()).await;
    let mut user = server.pusher(KEY).await;
    let user_data = r#"{"id":"u7","name":"Ann"}"#;
    let auth = signature::auth(KEY, SECRET, &signature::user_text(&user.socket_id, user_data));
    user.send(json!({ "event": "pusher:signin", "data": { "auth": auth, "user_data": user_data } })).await;
    assert_eq!(user.recv().await, json!({ "event": "pusher:signin_success", "data": { "user_data": user_data } }));
    user.subscribe("#server-to-user-u7").await;
    let answer = user.subscribe_with("#server-to-user-u8", None, None).await;
    assert_eq!(answer["event"], "pusher:subscription_error", "only one's own");
    server.trigger(&["#server-to-user-u7"], "hello", r#"{"n":1}"#).await;
    assert_eq!(user.recv().await, json!({ "event": "hello", "channel": "#server-to-user-u7", "data": r#"{"n":1}"# }));
    let bystander = server.pusher(KEY).await;
    let r = server.pusher_api("POST", "/users/u7/terminate_connections", &Value::Null).await;
    assert_eq!((r.status, r.text()), (200, "{}".to_string()));
    let (error, code) = user.closing().await;
    assert_eq!((error["data"]["code"].as_u64(), code), (Some(4009), Some(4009)));
    let mut bystander = bystander;
    bystander.assert_quiet().await;
}

#[tokio::test]
async fn a_bad_sign_in_closes_with_4009() {
    let server = spawn(pusher_config()).await;
    let mut user = server.pusher(KEY).await;
    let user_data = r#"{"id":"u7"}"#;
    let forged = signature::auth(KEY, "not-the-secret", &signature::user_text(&user.socket_id, user_data));
    user.send(json!({ "event": "pusher:signin", "data": { "auth": forged, "user_data": user_data } })).await;
    let (error, code) = user.closing().await;
    assert_eq!((error["data"]["code"].as_u64(), code), (Some(4009), Some(4009)));
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_signin\"}").await, 1);
}

#[tokio::test]
async fn the_api_refuses_a_wrong_signature_a_stale_timestamp_and_a_wrong_body_md5_with_401() {
    let server = spawn(pusher_config()).await;
    let body = br#"{"name":"e","channel":"a","data":"1"}"#;
    let app = (ID, KEY, SECRET);
    assert_eq!(server.pusher_api_at(app, "POST", "/events", body, &[], 0).await.status, 200);
    let wrong_secret = server.pusher_api_at((ID, KEY, "another-secret"), "POST", "/events", body, &[], 0).await;
    assert_eq!((wrong_secret.status, wrong_secret.error_code()), (401, "invalid_signature".to_string()));
    assert_eq!(server.pusher_api_at(app, "POST", "/events", body, &[], -601).await.status, 401, "stale");
    assert_eq!(server.pusher_api_at(app, "POST", "/events", body, &[], 601).await.status, 401, "from the future");
    let md5 = signature::body_md5(b"another body");
    assert_eq!(server.pusher_api_at(app, "POST", "/events", body, &[("body_md5", &md5)], 0).await.status, 401);
    let unsigned = server.request("POST", "/apps/1/events", &[], body).await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_signature\"}").await, 5);
    assert_eq!(server.pusher_api_at(("9", KEY, SECRET), "POST", "/events", body, &[], 0).await.status, 404);
}

#[tokio::test]
async fn a_batch_triggers_each_event_in_order_and_is_bounded() {
    let mut config = pusher_config();
    config.pusher.apps[0].limits.max_batch_events = 3;
    config.pusher.apps[0].limits.max_channels_per_event = 2;
    let server = spawn(config).await;
    let mut client = server.pusher(KEY).await;
    client.subscribe("a").await;
    client.subscribe("b").await;
    let batch = json!({ "batch": [
        { "channel": "a", "name": "first", "data": "1" },
        { "channel": "b", "name": "second", "data": "2" },
        { "channel": "a", "name": "third", "data": "3" },
    ]});
    assert_eq!(server.pusher_api("POST", "/batch_events", &batch).await.status, 200);
    let names: Vec<Value> =
        [client.recv().await, client.recv().await, client.recv().await].map(|f| f["event"].clone()).to_vec();
    assert_eq!(names, [json!("first"), json!("second"), json!("third")]);
    let four = json!({ "batch": vec![json!({ "channel": "a", "name": "e", "data": "" }); 4] });
    assert_eq!(server.pusher_api("POST", "/batch_events", &four).await.error_code(), "too_many_events");
    let three_channels = json!({ "name": "e", "channels": ["a", "b", "c"], "data": "" });
    assert_eq!(server.pusher_api("POST", "/events", &three_channels).await.error_code(), "too_many_channels");
    let refused_batch = json!({ "batch": [{ "channel": "a", "name": "e", "data": "" }, { "channel": "no good", "name": "e", "data": "" }] });
    assert_eq!(server.pusher_api("POST", "/batch_events", &refused_batch).await.error_code(), "invalid_channel");
    client.assert_quiet().await;
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_max_batch_events\"}").await, 1);
    assert_eq!(server.metric("herald_refusals_total{reason=\"pusher_max_channels_per_event\"}").await, 1);
}

#[tokio::test]
async fn a_shutdown_closes_pusher_connections_with_4200() {
    let server = spawn(pusher_config()).await;
    let mut client = server.pusher(KEY).await;
    let stopping = tokio::spawn(server.stop());
    let (error, code) = client.closing().await;
    assert_eq!((error["data"]["code"].as_u64(), code), (Some(4200), Some(4200)));
    assert!(stopping.await.unwrap());
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4100() {
    let mut config = pusher_config();
    config.connection_queue = 4;
    let server = spawn(config).await;
    let mut client = server.pusher(KEY).await;
    client.subscribe("flood").await;
    // The client reads nothing while more than its queue is published at once.
    server.publish_burst("1:flood", 5_000).await;
    let code = loop {
        match client.ws.read().await {
            WsRead::Closed(code) => break code,
            WsRead::Json(_) => {}
        }
    };
    assert_eq!(code, Some(4100));
}

/// Subscribes `client` to a presence channel as `user_id` with `user_info`; returns the answer.
async fn join(client: &mut common::pusher::PusherWs, channel: &str, user_id: &str, user_info: Value) -> Value {
    let data = json!({ "user_id": user_id, "user_info": user_info }).to_string();
    let auth = auth(&client.socket_id, channel, Some(&data));
    client.subscribe_with(channel, Some(&auth), Some(&data)).await
}

/// The member list of a presence subscription's answer.
fn presence_of(answer: &Value) -> Value {
    assert_eq!(answer["event"], "pusher_internal:subscription_succeeded", "{answer}");
    serde_json::from_str::<Value>(answer["data"].as_str().unwrap()).unwrap()["presence"].clone()
}

fn quick_presence() -> herald::config::Config {
    let mut config = pusher_config();
    config.presence_grace = Duration::from_millis(200);
    config
}

#[tokio::test]
async fn presence_members_join_and_leave_once_per_user_not_per_connection() {
    let server = spawn(quick_presence()).await;
    let mut ann = server.pusher(KEY).await;
    let answer = join(&mut ann, "presence-room", "ann", json!({ "name": "Ann" })).await;
    assert_eq!(presence_of(&answer), json!({ "ids": ["ann"], "hash": { "ann": { "name": "Ann" } }, "count": 1 }));
    let mut bob = server.pusher(KEY).await;
    let answer = join(&mut bob, "presence-room", "bob", json!(null)).await;
    assert_eq!(presence_of(&answer)["count"], 2);
    let added = ann.recv().await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(
        serde_json::from_str::<Value>(added["data"].as_str().unwrap()).unwrap(),
        json!({ "user_id": "bob", "user_info": null })
    );
    bob.assert_quiet().await;
    let mut bob_tab = server.pusher(KEY).await;
    assert_eq!(presence_of(&join(&mut bob_tab, "presence-room", "bob", json!(null)).await)["count"], 2);
    ann.assert_quiet().await;
    bob_tab.send(json!({ "event": "pusher:unsubscribe", "data": { "channel": "presence-room" } })).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    ann.assert_quiet().await;
    drop(bob);
    let removed = ann.recv().await;
    assert_eq!(
        removed,
        json!({ "event": "pusher_internal:member_removed", "channel": "presence-room", "data": r#"{"user_id":"bob"}"# })
    );
}

#[tokio::test]
async fn a_presence_subscription_needs_signed_channel_data_with_a_user_id() {
    let server = spawn(quick_presence()).await;
    let mut client = server.pusher(KEY).await;
    let unsigned =
        client.subscribe_with("presence-room", Some(&auth(&client.socket_id, "presence-room", None)), None).await;
    assert_eq!(unsigned["data"]["type"], "AuthError", "the signature covers channel_data");
    let data = json!({ "user_info": {} }).to_string();
    let no_user = client
        .subscribe_with("presence-room", Some(&auth(&client.socket_id, "presence-room", Some(&data))), Some(&data))
        .await;
    assert_eq!(no_user["data"]["type"], "InvalidChannelData");
    let answer = join(&mut client, "presence-room", "7", json!({})).await;
    assert_eq!(presence_of(&answer)["ids"], json!(["7"]));
}

#[tokio::test]
async fn a_client_event_on_a_presence_channel_carries_its_users_id() {
    let server = spawn(quick_presence()).await;
    let (mut a, mut b) = (server.pusher(KEY).await, server.pusher(KEY).await);
    join(&mut a, "presence-room", "ann", json!(null)).await;
    join(&mut b, "presence-room", "bob", json!(null)).await;
    let _ = a.recv().await; // bob's member_added
    a.send(json!({ "event": "client-wave", "channel": "presence-room", "data": "hi" })).await;
    assert_eq!(
        b.recv().await,
        json!({ "event": "client-wave", "channel": "presence-room", "data": "hi", "user_id": "ann" })
    );
}

#[tokio::test]
async fn the_api_tells_occupied_channels_their_counts_and_a_presence_channels_users() {
    let server = spawn(quick_presence()).await;
    let (mut a, mut b, mut c) = (server.pusher(KEY).await, server.pusher(KEY).await, server.pusher(KEY).await);
    join(&mut a, "presence-room", "ann", json!(null)).await;
    join(&mut b, "presence-room", "ann", json!(null)).await;
    c.subscribe("news").await;
    // Counts from subscriptions travel to the store in the background: wait until they are there.
    let mut room = Value::Null;
    for _ in 0..100 {
        room = server_get(&server, "/channels/presence-room", &[("info", "user_count,subscription_count")]).await;
        if room["subscription_count"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(room, json!({ "occupied": true, "user_count": 1, "subscription_count": 2 }));
    let listed = server_get(&server, "/channels", &[("filter_by_prefix", "presence-"), ("info", "user_count")]).await;
    assert_eq!(listed, json!({ "channels": { "presence-room": { "user_count": 1 } } }));
    let all = server_get(&server, "/channels", &[]).await;
    assert_eq!(all, json!({ "channels": { "news": {}, "presence-room": {} } }));
    assert_eq!(server_get(&server, "/channels/presence-room/users", &[]).await, json!({ "users": [{ "id": "ann" }] }));
    assert_eq!(server_get(&server, "/channels/empty", &[]).await, json!({ "occupied": false }));
    let r = server.pusher_api_at((ID, KEY, SECRET), "GET", "/channels/news/users", b"", &[], 0).await;
    assert_eq!((r.status, r.error_code()), (400, "not_a_presence_channel".to_string()));
    let r = server.pusher_api_at((ID, KEY, SECRET), "GET", "/channels/news", b"", &[("info", "user_count")], 0).await;
    assert_eq!(r.status, 400, "user_count is a presence channel's");
    let trigger = json!({ "name": "e", "channels": ["news"], "data": "1", "info": "subscription_count" });
    let answer = server.pusher_api("POST", "/events", &trigger).await.json();
    assert_eq!(answer, json!({ "channels": { "news": { "subscription_count": 1 } } }));
    let herald = server.get("/v1/channels/1:presence-room").await.json();
    assert_eq!(
        (&herald["members"], &herald["subscribers"]),
        (&json!(1), &json!(2)),
        "Herald's own endpoint sees them too"
    );
    let members = server.get("/v1/channels/1:presence-room/presence").await;
    assert_eq!(members.status, 401, "a Pusher presence channel's members are private to Herald's transports");
}

/// A signed GET of the test app's API; panics unless 200.
async fn server_get(server: &common::TestServer, path: &str, query: &[(&str, &str)]) -> Value {
    let r = server.pusher_api_at((ID, KEY, SECRET), "GET", path, b"", query, 0).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

/// A receive or send request of an HTTP fallback session; the whole answer.
async fn xhr(client: common::Client, session: &str, kind: &str, body: &[u8]) -> common::Response {
    let path = format!("/pusher/app/{session}/{kind}?protocol=7&client=js&version=8.6.0");
    client.request("POST", &path, &[("Content-Type", "application/json")], body).await
}

/// The Pusher frames of an `a[…]` line.
fn frames_of(line: &str) -> Vec<Value> {
    let array: Vec<String> = serde_json::from_str(line.trim_end().strip_prefix('a').expect("an a line")).unwrap();
    array.iter().map(|frame| serde_json::from_str(frame).unwrap()).collect()
}

/// A client frame as an `xhr_send` body.
fn send_body(frame: Value) -> Vec<u8> {
    json!([frame.to_string()]).to_string().into_bytes()
}

#[tokio::test]
async fn xhr_polling_carries_the_protocol_in_sockjs_lines() {
    let server = spawn(pusher_config()).await;
    let (client, session) = (server.client, "app-key/123/abcdefgh");
    assert_eq!(xhr(client, session, "xhr", b"").await.text(), "o\n");
    let hello = frames_of(&xhr(client, session, "xhr", b"").await.text());
    assert_eq!(hello[0]["event"], "pusher:connection_established");
    let subscribe = send_body(json!({ "event": "pusher:subscribe", "data": { "channel": "orders" } }));
    assert_eq!(xhr(client, session, "xhr_send", &subscribe).await.status, 204);
    let succeeded = frames_of(&xhr(client, session, "xhr", b"").await.text());
    assert_eq!(succeeded[0]["event"], "pusher_internal:subscription_succeeded");
    let held = tokio::spawn(async move { xhr(client, session, "xhr", b"").await.text() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(xhr(client, session, "xhr", b"").await.text(), "c[2010,\"Another connection still open\"]\n");
    server.trigger(&["orders"], "placed", "1").await;
    assert_eq!(frames_of(&held.await.unwrap()), [json!({ "event": "placed", "channel": "orders", "data": "1" })]);
    assert_eq!(xhr(client, "app-key/123/other", "xhr_send", &subscribe).await.status, 404, "no such session");
    assert_eq!(
        xhr(client.coming_from("127.0.0.2"), session, "xhr_send", &subscribe).await.status,
        404,
        "another address"
    );
    assert_eq!(server.metric("herald_connections{transport=\"pusher\"}").await, 1);
}

#[tokio::test]
async fn a_refused_http_session_opens_then_tells_its_error_and_close_code() {
    let server = spawn(pusher_config()).await;
    let answer = xhr(server.client, "no-such-key/1/abcdefgh", "xhr", b"").await.text();
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines[0], "o");
    assert_eq!(frames_of(lines[1])[0]["data"]["code"], 4001);
    assert_eq!(lines[2], "c[4001,\"no app has this key\"]");
}

/// Reads `stream` into `seen` until it holds `needle`.
async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, needle: &str) {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(common::PATIENCE, async {
        while !String::from_utf8_lossy(seen).contains(needle) {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stream ended");
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn xhr_streaming_writes_the_prelude_then_lines_as_they_come() {
    use tokio::io::AsyncWriteExt;
    let server = spawn(pusher_config()).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head =
        "POST /pusher/app/app-key/7/streamxy/xhr_streaming?protocol=7 HTTP/1.0\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, "connection_established").await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(body.starts_with(&format!("{}\no\na[", "h".repeat(2048))), "prelude, open, then frames: {body:.60}");
    let subscribe = send_body(json!({ "event": "pusher:subscribe", "data": { "channel": "clock" } }));
    assert_eq!(xhr(server.client, "app-key/7/streamxy", "xhr_send", &subscribe).await.status, 204);
    read_until(&mut stream, &mut seen, "subscription_succeeded").await;
    server.trigger(&["clock"], "tick", "42").await;
    read_until(&mut stream, &mut seen, "tick").await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    let last = text.trim_end().lines().last().unwrap();
    assert_eq!(frames_of(last), [json!({ "event": "tick", "channel": "clock", "data": "42" })]);
}

#[tokio::test]
async fn an_http_session_whose_client_stopped_receiving_ends() {
    let server = spawn(pusher_config()).await;
    let (client, session) = (server.client, "app-key/9/gonegone");
    assert_eq!(xhr(client, session, "xhr", b"").await.text(), "o\n");
    server.until_metric("herald_connections{transport=\"pusher\"}", 1).await;
    // No receive request for longer than DISCONNECT_DELAY: the session ends, as a closed socket.
    tokio::time::sleep(herald::pusher::fallback::DISCONNECT_DELAY + Duration::from_millis(500)).await;
    server.until_metric("herald_connections{transport=\"pusher\"}", 0).await;
    let ping = send_body(json!({ "event": "pusher:ping", "data": {} }));
    assert_eq!(xhr(client, session, "xhr_send", &ping).await.status, 404);
}

#[tokio::test]
async fn an_api_body_over_the_apps_request_limit_is_413() {
    let mut config = pusher_config();
    config.pusher.apps[0].limits.max_event_bytes = 10;
    config.pusher.apps[0].limits.max_batch_events = 1;
    let server = spawn(config).await;
    // The limit is max_batch_events × max_event_bytes × 2 + 64 KiB: 65556 bytes here.
    let body = json!({ "name": "e", "channel": "a", "data": "x".repeat(66_000) });
    let r = server.pusher_api("POST", "/events", &body).await;
    assert_eq!((r.status, r.error_code()), (413, "payload_too_large".to_string()));
    assert_eq!(server.metric("herald_refusals_total{reason=\"max_body_bytes\"}").await, 1);
}

#[tokio::test]
async fn an_app_without_client_events_refuses_them_and_the_connection_stays() {
    let mut config = pusher_config();
    config.pusher.apps[0].client_events = false;
    let server = spawn(config).await;
    let (mut a, mut b) = (server.pusher(KEY).await, server.pusher(KEY).await);
    a.subscribe("private-room").await;
    b.subscribe("private-room").await;
    a.send(json!({ "event": "client-x", "channel": "private-room", "data": {} })).await;
    assert!(a.recv().await["data"]["message"].as_str().unwrap().contains("not enabled"));
    a.assert_quiet().await;
    b.assert_quiet().await;
}

#[tokio::test]
async fn a_pusher_connection_has_at_most_max_subscriptions_per_connection() {
    let mut config = pusher_config();
    config.max_subscriptions_per_connection = 1;
    let server = spawn(config).await;
    let mut client = server.pusher(KEY).await;
    client.subscribe("a").await;
    let answer = client.subscribe_with("b", None, None).await;
    assert_eq!(
        (answer["event"].as_str(), answer["data"]["type"].as_str()),
        (Some("pusher:subscription_error"), Some("LimitReached"))
    );
    assert_eq!(server.metric("herald_refusals_total{reason=\"max_subscriptions_per_connection\"}").await, 1);
}

#[tokio::test]
async fn an_apps_webhooks_tell_occupancy_members_cache_misses_and_client_events_in_pushers_format() {
    use common::receiver::{Answers, Receiver};
    let receiver = Receiver::start(Answers::First(vec![])).await;
    let mut config = quick_presence();
    config.pusher.apps[0].webhooks =
        vec![herald::config::PusherWebhookSettings { url: receiver.url(), events: vec![] }];
    let server = spawn(config).await;
    let (mut a, mut b) = (server.pusher(KEY).await, server.pusher(KEY).await);
    join(&mut a, "presence-room", "ann", json!(null)).await;
    join(&mut b, "presence-room", "bob", json!(null)).await;
    a.send(json!({ "event": "client-wave", "channel": "presence-room", "data": { "hi": 1 } })).await;
    assert_eq!(b.recv().await["event"], "client-wave");
    b.subscribe("cache-empty").await;
    let names = |events: &[Value]| {
        events.iter().map(|e| e["name"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()
    };
    let events = receiver
        .until("the app's events", |e| ["client_event", "cache_miss"].iter().all(|n| names(e).iter().any(|m| m == n)))
        .await;
    let client = events.iter().find(|e| e["name"] == "client_event").unwrap();
    assert_eq!(
        (&client["channel"], &client["event"], &client["data"], &client["user_id"], &client["socket_id"]),
        (&json!("presence-room"), &json!("client-wave"), &json!(r#"{"hi":1}"#), &json!("ann"), &json!(a.socket_id)),
        "{client}"
    );
    assert!(names(&events).contains(&"channel_occupied".to_string()), "{events:?}");
    let added: Vec<&Value> = events.iter().filter(|e| e["name"] == "member_added").map(|e| &e["user_id"]).collect();
    assert_eq!(added, [&json!("ann"), &json!("bob")], "named without the app's namespace, once each");
    let request = &receiver.received()[0];
    assert_eq!(request.header("X-Pusher-Key"), Some(KEY));
    let signed = signature::sign(SECRET, std::str::from_utf8(&request.body).unwrap());
    assert_eq!(request.header("X-Pusher-Signature"), Some(signed.as_str()));
}

#[tokio::test]
async fn an_apps_webhook_with_an_unknown_event_or_a_bad_url_stops_the_start_naming_its_key() {
    for (url, events, key) in [
        (
            "http://127.0.0.1:9/hook",
            vec!["client_event".to_string(), "nope".into()],
            "pusher.apps[0].webhooks[0].events",
        ),
        ("ftp://example/hook", vec![], "pusher.apps[0].webhooks"),
    ] {
        let mut config = pusher_config();
        config.pusher.apps[0].webhooks = vec![herald::config::PusherWebhookSettings { url: url.into(), events }];
        let refused = herald::Server::bind(config).await.err().expect("refused").to_string();
        assert!(refused.starts_with(key), "{refused}");
    }
}

//! Presence on Herald's own protocol, one server: a WebSocket or SSE stream whose token names a user is a member of
//! the presence channels it subscribes to; `presence` frames and `presence=true` streams read the members and then
//! their joins and leaves; a page reload is neither; the limits; and the backend's endpoints of presence and
//! occupancy with their access rules.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tokens::{self, BACKEND_KEY, ORDERS_KEY};
use common::{spawn, TestServer, Ws, PATIENCE};
use herald::config::{Config, NamespaceSettings};
use serde_json::{json, Value};

/// `room:*` is a private presence namespace of at most three members; `lobby:*` a public one.
fn config() -> Config {
    let mut config = tokens::secured();
    config.presence_grace = Duration::ZERO;
    let presence = NamespaceSettings { presence: true, presence_max_members: 3, ..NamespaceSettings::default() };
    config.namespaces.insert("room".into(), presence.clone());
    config.namespaces.insert("lobby".into(), NamespaceSettings { public: Some(true), ..presence });
    config
}

/// A token of `sub` for `room:*`, presenting `{"name": sub}`.
fn token(sub: &str) -> String {
    tokens::hs256(&json!({ "sub": sub, "exp": tokens::now() + 3600, "channels": ["room:*"], "info": { "name": sub } }))
}

/// A WebSocket of the user `sub`, subscribed to `channel`.
async fn member(server: &TestServer, sub: &str, channel: &str) -> Ws {
    let mut ws = server.ws_with(&format!("/v1/ws?token={}", token(sub)), &[]).await.unwrap();
    let answer = ws.call(json!({ "op": "subscribe", "channel": channel, "id": "s" })).await;
    assert_eq!(answer["op"], "subscribed", "{answer}");
    ws
}

/// The user ids of a `presence` answer or a `herald.presence` event.
fn ids(list: &Value) -> Vec<&str> {
    list["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap()).collect()
}

/// Reads the members of `channel` and follows their changes.
async fn watch(ws: &mut Ws, channel: &str) -> Value {
    let answer = ws.call(json!({ "op": "presence", "channel": channel, "id": "p" })).await;
    assert_eq!((answer["op"].as_str(), answer["id"].as_str()), (Some("presence"), Some("p")), "{answer}");
    answer
}

#[tokio::test]
async fn a_websocket_with_a_user_is_a_member_and_others_see_its_join_and_leave() {
    let server = spawn(config()).await;
    let _ada = member(&server, "ada", "room:1").await;
    let mut bob = member(&server, "bob", "room:1").await;
    let list = watch(&mut bob, "room:1").await;
    assert_eq!(ids(&list), ["ada", "bob"]);
    assert_eq!(list["count"], 2);
    assert_eq!(list["members"][0]["user_info"], json!({ "name": "ada" }));
    let carol = member(&server, "carol", "room:1").await;
    let joined = bob.recv().await;
    assert_eq!(
        joined,
        json!({ "op": "join", "channel": "room:1", "member": { "user_id": "carol", "user_info": { "name": "carol" } } })
    );
    drop(carol);
    let left = bob.recv().await;
    assert_eq!((left["op"].as_str(), left["member"]["user_id"].as_str()), (Some("leave"), Some("carol")));
    bob.assert_quiet().await;
}

#[tokio::test]
async fn a_second_tab_of_a_user_is_no_second_join_and_its_leave_no_leave() {
    let server = spawn(config()).await;
    let mut watcher = member(&server, "bob", "room:1").await;
    watch(&mut watcher, "room:1").await;
    let tab1 = member(&server, "ada", "room:1").await;
    assert_eq!(watcher.recv().await["op"], "join");
    let tab2 = member(&server, "ada", "room:1").await;
    drop(tab1);
    watcher.assert_quiet().await;
    drop(tab2);
    let left = watcher.recv().await;
    assert_eq!((left["op"].as_str(), left["member"]["user_id"].as_str()), (Some("leave"), Some("ada")));
}

#[tokio::test]
async fn a_reload_within_the_grace_is_neither_a_leave_nor_a_join() {
    let grace = Duration::from_millis(800);
    let server = spawn(Config { presence_grace: grace, ..config() }).await;
    let mut watcher = member(&server, "bob", "room:1").await;
    watch(&mut watcher, "room:1").await;
    let page = member(&server, "ada", "room:1").await;
    assert_eq!(watcher.recv().await["op"], "join");
    drop(page);
    let _reloaded = member(&server, "ada", "room:1").await;
    // Past the grace, the first page's leave has run, and found the user still there.
    tokio::time::sleep(grace * 2).await;
    watcher.assert_quiet().await;
    let list = watch(&mut watcher, "room:1").await;
    assert_eq!(ids(&list), ["ada", "bob"]);
}

#[tokio::test]
async fn a_subscriber_without_a_user_is_no_member_but_reads_the_members() {
    let server = spawn(config()).await;
    let mut anonymous = server.ws().await;
    assert_eq!(anonymous.call(json!({ "op": "subscribe", "channel": "lobby:1" })).await["op"], "subscribed");
    assert_eq!(ids(&watch(&mut anonymous, "lobby:1").await), Vec::<&str>::new());
    let _ada = member(&server, "ada", "lobby:1").await;
    let joined = anonymous.recv().await;
    assert_eq!((joined["op"].as_str(), joined["member"]["user_id"].as_str()), (Some("join"), Some("ada")));
}

#[tokio::test]
async fn presence_needs_a_subscribed_channel_of_a_presence_namespace() {
    let server = spawn(config()).await;
    let mut ws = member(&server, "ada", "room:1").await;
    let error = ws.call(json!({ "op": "presence", "channel": "room:2", "id": 1 })).await;
    assert_eq!(
        (error["op"].as_str(), error["code"].as_str(), error["id"].as_i64()),
        (Some("error"), Some("not_subscribed"), Some(1))
    );
    assert_eq!(ws.call(json!({ "op": "subscribe", "channel": "news:1" })).await["op"], "subscribed");
    let error = ws.call(json!({ "op": "presence", "channel": "news:1", "id": 2 })).await;
    assert_eq!(error["code"], "presence_disabled");
}

#[tokio::test]
async fn a_full_channel_refuses_the_subscription_of_a_new_user_and_not_of_a_member() {
    let server = spawn(config()).await;
    let _members = [
        member(&server, "a", "room:1").await,
        member(&server, "b", "room:1").await,
        member(&server, "c", "room:1").await,
    ];
    let mut fourth = server.ws_with(&format!("/v1/ws?token={}", token("d")), &[]).await.unwrap();
    let refused = fourth.call(json!({ "op": "subscribe", "channel": "room:1", "id": 4 })).await;
    assert_eq!((refused["code"].as_str(), refused["id"].as_i64()), (Some("presence_full"), Some(4)), "{refused}");
    let not = fourth.call(json!({ "op": "unsubscribe", "channel": "room:1" })).await;
    assert_eq!(not["code"], "not_subscribed", "the refused subscription was not kept");
    let _second_tab_of_a = member(&server, "a", "room:1").await;
}

#[tokio::test]
async fn an_info_over_the_limit_or_a_bad_user_id_is_refused() {
    let server = spawn(Config { max_presence_info_bytes: 32, ..config() }).await;
    let long = tokens::hs256(
        &json!({ "sub": "ada", "exp": tokens::now() + 60, "channels": ["room:*"], "info": { "bio": "x".repeat(40) } }),
    );
    let mut ws = server.ws_with(&format!("/v1/ws?token={long}"), &[]).await.unwrap();
    let refused = ws.call(json!({ "op": "subscribe", "channel": "room:1" })).await;
    assert_eq!(refused["code"], "invalid_user_info", "{refused}");
    let bad_id = tokens::hs256(&json!({ "sub": "a\nb", "exp": tokens::now() + 60, "channels": ["room:*"] }));
    let mut ws = server.ws_with(&format!("/v1/ws?token={bad_id}"), &[]).await.unwrap();
    assert_eq!(ws.call(json!({ "op": "subscribe", "channel": "room:1" })).await["code"], "invalid_user_id");
}

#[tokio::test]
async fn an_sse_stream_with_presence_opens_with_the_members_and_carries_joins_and_leaves() {
    let server = spawn(config()).await;
    let _bob = member(&server, "bob", "room:1").await;
    let mut sse = server.sse(&format!("channel=room:1&presence=true&token={}", token("ada")), &[]).await;
    assert_eq!(sse.status, 200);
    let preamble = sse.next().await.unwrap();
    assert!(preamble.id.is_some() && preamble.data.is_none(), "{preamble:?}");
    let list = sse.next().await.unwrap();
    assert_eq!((list.event.as_deref(), list.id.as_deref()), (Some("herald.presence"), None));
    assert_eq!(ids(&list.json()), ["ada", "bob"], "the stream's own user is a member");
    let carol = member(&server, "carol", "room:1").await;
    let joined = sse.next().await.unwrap();
    assert_eq!(joined.event.as_deref(), Some("herald.join"));
    assert_eq!(
        joined.json(),
        json!({ "channel": "room:1", "member": { "user_id": "carol", "user_info": { "name": "carol" } } })
    );
    drop(carol);
    let left = sse.next().await.unwrap();
    assert_eq!(
        (left.event.as_deref(), left.json()["member"]["user_id"].as_str()),
        (Some("herald.leave"), Some("carol"))
    );
    // And the stream's user leaves with the stream.
    let mut bob = member(&server, "bob", "room:1").await;
    watch(&mut bob, "room:1").await;
    drop(sse);
    let left = bob.recv().await;
    assert_eq!((left["op"].as_str(), left["member"]["user_id"].as_str()), (Some("leave"), Some("ada")));
}

fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}

#[tokio::test]
async fn the_presence_endpoint_answers_a_backend_and_a_page_and_refuses_others() {
    let server = spawn(config()).await;
    let _ada = member(&server, "ada", "room:1").await;
    let path = "/v1/channels/room:1/presence";
    let backend = server.get_with(path, &[("Authorization", &bearer(BACKEND_KEY))]).await;
    assert_eq!(backend.status, 200, "{}", backend.text());
    assert_eq!(
        backend.json(),
        json!({ "channel": "room:1", "members": [{ "user_id": "ada", "user_info": { "name": "ada" } }], "count": 1 })
    );
    let page = server.get(&format!("{path}?token={}", token("bob"))).await;
    assert_eq!((page.status, page.json()["count"].as_u64()), (200, Some(1)));
    assert_eq!(
        server.get_with(path, &[("Authorization", &bearer(ORDERS_KEY))]).await.error_code(),
        "channel_forbidden"
    );
    let anonymous = server.get(path).await;
    assert_eq!((anonymous.status, anonymous.error_code().as_str()), (401, "token_required"));
    let public = server.get("/v1/channels/lobby:1/presence").await;
    assert_eq!((public.status, public.json()["count"].as_u64()), (200, Some(0)));
    let disabled = server.get_with("/v1/channels/news:1/presence", &[("Authorization", &bearer(BACKEND_KEY))]).await;
    assert_eq!((disabled.status, disabled.error_code().as_str()), (400, "presence_disabled"));
}

/// The channel's occupancy as the backend reads it, once it has `subscribers` (counts are reported by a task).
async fn occupancy(server: &TestServer, channel: &str, subscribers: u64) -> Value {
    let path = format!("/v1/channels/{channel}");
    tokio::time::timeout(PATIENCE, async {
        loop {
            let answer = server.get_with(&path, &[("Authorization", &bearer(BACKEND_KEY))]).await.json();
            if answer["subscribers"] == subscribers {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{channel} never had {subscribers} subscribers"))
}

#[tokio::test]
async fn the_backend_reads_occupancy_and_lists_occupied_channels_by_prefix() {
    let server = spawn(config()).await;
    let _ada = member(&server, "ada", "room:1").await;
    let _bob = member(&server, "bob", "room:1").await;
    let mut anonymous = server.ws().await;
    anonymous.call(json!({ "op": "subscribe", "channel": "news:1" })).await;
    let _orders = server.sse("channel=news:2", &[]).await;
    assert_eq!(
        occupancy(&server, "room:1", 2).await,
        json!({ "channel": "room:1", "occupied": true, "subscribers": 2, "members": 2 })
    );
    occupancy(&server, "news:2", 1).await;
    assert_eq!(occupancy(&server, "room:9", 0).await["occupied"], false);
    let auth = bearer(BACKEND_KEY);
    let list = |query: &'static str| {
        let auth = auth.clone();
        let server = &server;
        async move { server.get_with(&format!("/v1/channels{query}"), &[("Authorization", &auth)]).await }
    };
    let names = |answer: Value| -> Vec<String> {
        answer["channels"].as_array().unwrap().iter().map(|c| c["channel"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(list("?prefix=news:").await.json()), ["news:1", "news:2"]);
    assert_eq!(names(list("").await.json()), ["news:1", "news:2", "room:1"]);
    assert_eq!(
        list("?prefix=room:").await.json(),
        json!({ "channels": [{ "channel": "room:1", "subscribers": 2, "members": 2 }] })
    );
    assert_eq!(names(list("?limit=1").await.json()), ["news:1"], "the limit is honoured");
    for bad in ["?limit=0", "?limit=1001", "?prefix=a%20b"] {
        let answer = list(bad).await;
        assert_eq!((answer.status, answer.error_code().as_str()), (400, "invalid_parameter"), "{bad}");
    }
    let limited = server.get_with("/v1/channels", &[("Authorization", &bearer(ORDERS_KEY))]).await;
    assert_eq!(names(limited.json()), Vec::<String>::new(), "a key lists only the channels it reaches");
    assert_eq!(server.get("/v1/channels").await.error_code(), "key_required");
    assert_eq!(server.get("/v1/channels/room:1").await.error_code(), "key_required");
}

#[tokio::test]
async fn a_new_token_for_another_user_moves_the_membership_to_it() {
    let server = spawn(config()).await;
    let mut watcher = member(&server, "bob", "room:1").await;
    watch(&mut watcher, "room:1").await;
    let mut page = member(&server, "ada", "room:1").await;
    assert_eq!(watcher.recv().await["op"], "join");
    let renewed = page.call(json!({ "op": "auth", "token": token("ada"), "id": "same" })).await;
    assert_eq!(renewed["op"], "authenticated");
    watcher.assert_quiet().await;
    let renamed = page.call(json!({ "op": "auth", "token": token("carol"), "id": "other" })).await;
    assert_eq!(renamed["op"], "authenticated");
    let mut changes = [watcher.recv().await, watcher.recv().await]
        .map(|f| format!("{} {}", f["op"].as_str().unwrap(), f["member"]["user_id"].as_str().unwrap()));
    changes.sort();
    assert_eq!(changes, ["join carol", "leave ada"]);
}

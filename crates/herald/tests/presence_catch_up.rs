//! Presence after a node's Redis Pub/Sub link dropped: the joins and leaves announced while it was not listening
//! reach its followers once it is back, once each, as ordinary changes — on Herald's own protocol and on the
//! Pusher protocol's presence channels alike.
//!
//! Two servers (nodes A and B) share a Redis of the test's own. Only node A's Pub/Sub connection is cut, and kept
//! from coming back (Redis takes no new client) while a user joins and another leaves through node B; then Redis
//! takes clients again. These tests need `HERALD_TEST_REDIS_URL` (only as the sign that Redis is installed).
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use std::time::Duration;

use common::node::{test_redis_url, unique_prefix, OwnRedis};
use common::pusher::{auth, pusher_config, PusherWs, KEY};
use common::{spawn, tokens, TestServer, Ws, PATIENCE};
use herald::config::{Config, EngineKind, NamespaceSettings};
use herald_proto::ChannelName;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

/// Node configuration: the test's Redis, `room:*` a public presence namespace, HS256 tokens, the Pusher app `1`,
/// no grace before a leave.
fn config(redis: &OwnRedis, prefix: &str) -> Config {
    let mut config = pusher_config();
    config.engine = EngineKind::Redis;
    config.redis_url = redis.url();
    config.redis_prefix = prefix.to_string();
    config.jwt.secret = Some(tokens::SECRET.into());
    config.presence_grace = Duration::ZERO;
    let room = NamespaceSettings { presence: true, public: Some(true), ..NamespaceSettings::default() };
    config.namespaces.insert("room".into(), room);
    config
}

/// A WebSocket of `sub` (none: anonymous) subscribed to `room:1`.
async fn tab(node: &TestServer, sub: Option<&str>) -> Ws {
    let path = match sub {
        Some(sub) => format!("/v1/ws?token={}", tokens::hs256(&json!({ "sub": sub, "exp": tokens::now() + 600 }))),
        None => "/v1/ws".to_string(),
    };
    let mut ws = node.ws_with(&path, &[]).await.unwrap();
    assert_eq!(ws.call(json!({ "op": "subscribe", "channel": "room:1" })).await["op"], "subscribed");
    ws
}

/// A tab of `sub`, a member of `room:1` (its token's `sub` makes it one when it subscribes).
async fn member(node: &TestServer, sub: &str) -> Ws {
    tab(node, Some(sub)).await
}

/// A Pusher client of `user` subscribed to `presence-room`.
async fn pusher_member(node: &TestServer, user: &str) -> PusherWs {
    let mut client = node.pusher(KEY).await;
    let data = json!({ "user_id": user, "user_info": { "name": user } }).to_string();
    let auth = auth(&client.socket_id, "presence-room", Some(&data));
    let answer = client.subscribe_with("presence-room", Some(&auth), Some(&data)).await;
    assert_eq!(answer["event"], "pusher_internal:subscription_succeeded", "{answer}");
    client
}

fn change(frame: &Value) -> (String, String) {
    (frame["op"].as_str().unwrap().to_string(), frame["member"]["user_id"].as_str().unwrap().to_string())
}

fn pusher_change(frame: &Value) -> (String, String) {
    let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
    (frame["event"].as_str().unwrap().to_string(), data["user_id"].as_str().unwrap().to_string())
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

async fn admin(redis: &OwnRedis) -> MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// The ids of the Pub/Sub connections Redis has, once there are `n` (a node's counts once it subscribed).
async fn pubsub_clients(admin: &mut MultiplexedConnection, n: usize) -> Vec<u64> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let list: String =
                redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(admin).await.unwrap();
            let ids: Vec<u64> =
                list.lines().filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok()).collect();
            if ids.len() == n {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never {n} Pub/Sub connections"))
}

/// Waits until `node`'s `/healthz` answers `status` (503 while its Pub/Sub link is down).
async fn until_health(node: &TestServer, status: u16) {
    tokio::time::timeout(PATIENCE * 2, async {
        while node.get("/healthz").await.status != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/healthz never answered {status}"));
}

/// Waits until `channel`'s members, as the cluster has them, are `users`.
async fn until_members(node: &TestServer, channel: &str, users: &[&str]) {
    let channel = ChannelName::new(channel).unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let members = node.hub.members(&channel).await.unwrap();
            if members.members.iter().map(|m| m.user_id.as_str()).eq(users.iter().copied()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{channel} never had the members {users:?}"));
}

#[tokio::test]
async fn joins_and_leaves_announced_while_a_node_s_pub_sub_was_down_reach_its_followers_once_after() {
    if test_redis_url().is_none() {
        return;
    }
    let redis = OwnRedis::start(false).await;
    let prefix = unique_prefix("presence-catch-up");
    let mut admin = admin(&redis).await;
    let a = spawn(config(&redis, &prefix)).await;
    // Node A's Pub/Sub connection, before node B has one.
    let a_pubsub = pubsub_clients(&mut admin, 1).await;
    let b = spawn(config(&redis, &prefix)).await;
    pubsub_clients(&mut admin, 2).await;

    // On node A: a Herald tab that follows room:1's presence, and a Pusher member of presence-room.
    let mut watching = tab(&a, None).await;
    let list = watching.call(json!({ "op": "presence", "channel": "room:1" })).await;
    assert_eq!(list["count"], 0, "{list}");
    let mut pia = pusher_member(&a, "pia").await;
    // Ann joins both through node B while node A listens.
    let ann = member(&b, "ann").await;
    let ann_pusher = pusher_member(&b, "ann").await;
    assert_eq!(change(&watching.recv().await), pair("join", "ann"));
    assert_eq!(pusher_change(&pia.recv().await), pair("pusher_internal:member_added", "ann"));

    // Node A's Pub/Sub connection goes, and Redis takes no new client until told.
    let connected: String = redis::cmd("INFO").arg("clients").query_async(&mut admin).await.unwrap();
    let connected: u64 =
        connected.lines().find_map(|l| l.strip_prefix("connected_clients:")?.trim().parse().ok()).unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("maxclients").arg(connected - 1).query_async(&mut admin).await.unwrap();
    let killed: u64 =
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(a_pubsub[0]).query_async(&mut admin).await.unwrap();
    assert_eq!(killed, 1);
    until_health(&a, 503).await;

    // Meanwhile, through node B: bob joins, ann leaves, on both protocols.
    let _bob = member(&b, "bob").await;
    let _bob_pusher = pusher_member(&b, "bob").await;
    drop((ann, ann_pusher));
    until_members(&b, "room:1", &["bob"]).await;
    until_members(&b, "1:presence-room", &["bob", "pia"]).await;

    // Node A is back: its followers learn exactly what they missed, once, and nothing else.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxclients").arg(10_000).query_async(&mut admin).await.unwrap();
    until_health(&a, 200).await;
    let told = [change(&watching.recv().await), change(&watching.recv().await)];
    assert_eq!(told, [pair("leave", "ann"), pair("join", "bob")]);
    let told = [pusher_change(&pia.recv().await), pusher_change(&pia.recv().await)];
    assert_eq!(told, [pair("pusher_internal:member_removed", "ann"), pair("pusher_internal:member_added", "bob")]);
    watching.assert_quiet().await;
    pia.assert_quiet().await;

    // And from then on, changes are live again, each once.
    let cy = member(&b, "cy").await;
    assert_eq!(change(&watching.recv().await), pair("join", "cy"));
    drop(cy);
    assert_eq!(change(&watching.recv().await), pair("leave", "cy"));
    watching.assert_quiet().await;
    let list = watching.call(json!({ "op": "presence", "channel": "room:1" })).await;
    assert_eq!(list["members"], json!([{ "user_id": "bob", "user_info": null }]));
}

//! Presence across Herald nodes on Redis, as separate processes: one user with a tab on each of two nodes is one
//! member (one join, one leave, neither when one tab goes), and a node killed with SIGKILL under a presence channel
//! loses its members within the documented time (docs/SCALING.md: between `presence_node_ttl_secs` and 4/3 of it),
//! each with exactly one leave, while a user also connected elsewhere stays.
//!
//! Webhooks go to one real receiver: each transition is sent once by the cluster, not once per node, and a channel
//! vacated on one node while a subscriber remains on the other is not vacated.
//!
//! These tests need `HERALD_TEST_REDIS_URL` (`.ci/run` sets it); each uses its own key prefix.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use std::time::Duration;

use common::node::{test_redis_url, unique_prefix, Node};
use common::receiver::{Answers, Receiver};
use common::{tokens, Ws};
use serde_json::{json, Value};

/// Seconds a node may stay silent before it is dead, in these tests.
const NODE_TTL: u64 = 2;

/// `n` nodes on one Redis prefix, with `room:*` a public presence namespace, HS256 tokens, and a webhook to
/// `receiver`.
async fn nodes(n: usize, redis: &str, prefix: &str, receiver: &Receiver) -> (Vec<Node>, tempdir::Dir) {
    let dir = tempdir::Dir::new(prefix);
    let file = dir.path().join("herald.toml");
    let config = format!(
        "presence_grace_ms = 300\npresence_node_ttl_secs = {NODE_TTL}\n[jwt]\nsecret = \"{}\"\n\
         [namespaces.room]\npresence = true\npublic = true\n\
         [[webhooks]]\nurl = \"{}\"\nsecret = \"whsec-0123456789abcdef\"\n",
        tokens::SECRET,
        receiver.url()
    );
    std::fs::write(&file, config).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let args = ["--engine", "redis", "--redis-url", redis, "--config", file.to_str().unwrap()];
        out.push(Node::start(&args, &[("HERALD_REDIS_PREFIX", prefix)]).await);
    }
    (out, dir)
}

/// A WebSocket on `node` of the user `sub` (none: anonymous), subscribed to `room:1`.
async fn tab(node: &Node, sub: Option<&str>) -> Ws {
    let path = match sub {
        Some(sub) => format!("/v1/ws?token={}", tokens::hs256(&json!({ "sub": sub, "exp": tokens::now() + 600 }))),
        None => "/v1/ws".to_string(),
    };
    let mut ws = node.client.ws_with(&path, &[]).await.unwrap();
    let answer = ws.call(json!({ "op": "subscribe", "channel": "room:1" })).await;
    assert_eq!(answer["op"], "subscribed", "{answer}");
    ws
}

/// An anonymous tab that follows `room:1`'s presence; returns it with the user ids it was told.
async fn watcher(node: &Node) -> (Ws, Vec<String>) {
    let mut ws = tab(node, None).await;
    let list = ws.call(json!({ "op": "presence", "channel": "room:1" })).await;
    let ids = list["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap().to_string()).collect();
    (ws, ids)
}

fn change(frame: &Value) -> (String, String) {
    (frame["op"].as_str().unwrap().to_string(), frame["member"]["user_id"].as_str().unwrap().to_string())
}

fn pair(op: &str, user: &str) -> (String, String) {
    (op.to_string(), user.to_string())
}

/// What the receiver got: each event's `name user_id` (by id, once), and whether any event came twice.
fn told(receiver: &Receiver) -> (Vec<String>, bool) {
    let all: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.status == Some(200))
        .flat_map(|r| r.events())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    let events = receiver
        .delivered()
        .iter()
        .map(|e| format!("{} {}", e["name"].as_str().unwrap(), e["user_id"].as_str().unwrap_or("")).trim().to_string())
        .collect();
    (events, unique.len() != all.len())
}

fn count(events: &[String], event: &str) -> usize {
    events.iter().filter(|e| *e == event).count()
}

#[tokio::test]
async fn one_user_with_a_tab_on_each_of_two_nodes_is_one_member() {
    let Some(redis) = test_redis_url() else { return };
    let receiver = Receiver::start(Answers::First(vec![])).await;
    let (nodes, _dir) = nodes(2, &redis, &unique_prefix("presence-tabs"), &receiver).await;
    let (mut watching, members) = watcher(&nodes[1]).await;
    assert!(members.is_empty());
    let tab_a = tab(&nodes[0], Some("ada")).await;
    assert_eq!(change(&watching.recv().await), pair("join", "ada"), "a join made on the other node");
    let tab_b = tab(&nodes[1], Some("ada")).await;
    drop(tab_a);
    // Past the grace, the first tab's leave has run on node A and found the user still on node B.
    tokio::time::sleep(Duration::from_millis(900)).await;
    watching.assert_quiet().await;
    let list = watching.call(json!({ "op": "presence", "channel": "room:1" })).await;
    assert_eq!(list["count"], 1);
    drop(tab_b);
    assert_eq!(change(&watching.recv().await), pair("leave", "ada"));
    watching.assert_quiet().await;
    receiver.until("ada's removal", |e| e.iter().any(|e| e["name"] == "member_removed")).await;
    let (events, repeated) = told(&receiver);
    assert_eq!(
        (count(&events, "channel_occupied"), count(&events, "member_added ada"), count(&events, "member_removed ada")),
        (1, 1, 1),
        "once by the cluster, not once per node: {events:?}"
    );
    assert_eq!(count(&events, "channel_vacated"), 0, "node A's tab left, the watcher on node B remains: {events:?}");
    assert!(!repeated, "no event was sent twice");
}

#[tokio::test]
async fn a_killed_node_s_members_leave_within_the_node_ttl_once_each_unless_connected_elsewhere() {
    let Some(redis) = test_redis_url() else { return };
    let receiver = Receiver::start(Answers::First(vec![])).await;
    let (mut nodes, _dir) = nodes(2, &redis, &unique_prefix("presence-kill"), &receiver).await;
    let (mut watching, _) = watcher(&nodes[1]).await;
    let _ada = tab(&nodes[0], Some("ada")).await;
    let _bob = tab(&nodes[0], Some("bob")).await;
    let _bob_elsewhere = tab(&nodes[1], Some("bob")).await;
    let mut joins = vec![change(&watching.recv().await), change(&watching.recv().await)];
    joins.sort();
    assert_eq!(joins, [pair("join", "ada"), pair("join", "bob")]);
    let killed = nodes.remove(0);
    let started = tokio::time::Instant::now();
    killed.crash().await;
    // The documented bound, 4/3 of the ttl after the last renewal, with room for a slow machine.
    let bound = Duration::from_millis(NODE_TTL * 4000 / 3) + Duration::from_secs(3);
    let left = tokio::time::timeout(bound, watching.recv()).await.expect("ada left within the documented time");
    assert_eq!(change(&left), pair("leave", "ada"));
    assert!(started.elapsed() >= Duration::from_millis(NODE_TTL * 1000 / 3), "not before its liveness could lapse");
    // Another round of reaping later, nothing more: one leave for ada, none for bob (still on node B).
    tokio::time::sleep(Duration::from_secs(NODE_TTL)).await;
    watching.assert_quiet().await;
    let list = watching.call(json!({ "op": "presence", "channel": "room:1" })).await;
    assert_eq!(list["members"], json!([{ "user_id": "bob", "user_info": null }]));
    // The webhooks say the same, whichever node delivers them (the killed one may have been delivering).
    receiver.until("ada's removal", |e| e.iter().any(|e| e["name"] == "member_removed")).await;
    let (events, _) = told(&receiver);
    assert_eq!(count(&events, "member_removed ada"), 1, "exactly one member_removed for ada: {events:?}");
    assert_eq!(count(&events, "member_removed bob"), 0, "bob is still on node B: {events:?}");
    assert_eq!(count(&events, "channel_vacated"), 0, "{events:?}");
}

/// A directory of the test's own, removed at the end.
mod tempdir {
    use std::path::{Path, PathBuf};

    pub(crate) struct Dir(PathBuf);

    impl Dir {
        pub(crate) fn new(name: &str) -> Dir {
            let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            let path = std::env::temp_dir().join(format!("herald-test-{safe}"));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

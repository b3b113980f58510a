//! One contract of presence and occupancy, every engine: members per user, joins and leaves once each and in
//! order after the list they follow, the grace before a leave, the most members, subscriber counts and the
//! occupied channels, and the transitions webhooks report, observed once. Then, on Redis only, what several
//! nodes share: one user on two nodes is one member, a channel is vacated when the last node's subscribers left,
//! and a node that stops saying it lives loses its members, each exactly once. The Redis cases run on a Redis
//! Cluster too (its own, started by the test binary), where the writes beyond a channel's slot happen around the
//! scripts (`engine/redis/presence/cluster.rs`).
//!
//! Each case is written once, as a function of [`Nodes`], and instantiated per engine by [`contract!`] as a test
//! of its own. Several nodes are several hubs on one Redis key prefix, in this process. The Redis tests need
//! `HERALD_TEST_REDIS_URL` and say `skipped` without it.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald::config::{Config, EngineKind};
use herald::hub::{member, Hub, Item, PresenceChange, PresenceError, Start, Subscription, Transition};
use herald::metrics::Transport;
use herald_proto::{ChannelName, EventName};

/// Which engine a case runs on.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Memory,
    Redis,
    /// A Redis Cluster of the test binary's own (three shards, a replica each): the channels' presence keys
    /// spread over the shards, the deployment's keys on one of them.
    RedisCluster,
}

thread_local! {
    /// The cluster a case's hubs run on, held until the case's thread ends.
    static CLUSTER: std::cell::RefCell<Option<Arc<common::cluster::OwnCluster>>> = const { std::cell::RefCell::new(None) };
}

/// Builds the hubs ("nodes") of one case; `None` when the engine cannot run here.
#[derive(Clone, Copy)]
struct Nodes {
    engine: Engine,
    case: &'static str,
}

impl Nodes {
    /// `n` hubs sharing one store (memory: only one can), with `tweak` applied to their configuration.
    async fn start(self, n: usize, tweak: impl Fn(&mut Config)) -> Option<Vec<Arc<Hub>>> {
        let mut config = Config { presence_grace: Duration::ZERO, ..Config::default() };
        if self.engine != Engine::Memory {
            config.engine = EngineKind::Redis;
            config.redis_url = match self.engine {
                Engine::RedisCluster => CLUSTER
                    .with(|held| held.borrow_mut().get_or_insert_with(common::cluster::OwnCluster::shared).clone())
                    .url(),
                _ => common::node::test_redis_url()?,
            };
            config.redis_prefix = common::node::unique_prefix(self.case);
        }
        tweak(&mut config);
        let config = Arc::new(config);
        let mut hubs = Vec::new();
        for _ in 0..n {
            let config = config.clone();
            let hub = Hub::new(config.clone(), |deliver, metrics| herald::engine::start(config, deliver, metrics));
            hubs.push(hub.await.expect("the engine starts"));
        }
        Some(hubs)
    }

    async fn one(self, tweak: impl Fn(&mut Config)) -> Option<Arc<Hub>> {
        Some(self.start(1, tweak).await?.remove(0))
    }
}

/// Instantiates every case once per engine; the cases of several nodes on Redis only.
macro_rules! contract {
    (every engine: $($case:ident),* ; redis only: $($redis_case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Nodes { engine: super::Engine::Memory, case: stringify!($case) }).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Nodes { engine: super::Engine::Redis, case: stringify!($case) }).await;
            })*
            $(#[tokio::test]
            async fn $redis_case() {
                super::$redis_case(super::Nodes { engine: super::Engine::Redis, case: stringify!($redis_case) }).await;
            })*
        }
        mod redis_cluster {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Nodes { engine: super::Engine::RedisCluster, case: stringify!($case) }).await;
            })*
            $(#[tokio::test]
            async fn $redis_case() {
                let nodes = super::Nodes { engine: super::Engine::RedisCluster, case: stringify!($redis_case) };
                super::$redis_case(nodes).await;
            })*
        }
    };
}

contract!(
    every engine:
    a_join_makes_the_user_a_member_with_its_info,
    a_user_with_two_connections_is_one_member_until_both_left,
    followers_get_joins_and_leaves_once_in_order_after_the_list,
    a_follower_that_read_the_list_after_its_own_join_is_not_told_it_again,
    a_full_channel_refuses_a_new_user_but_not_one_already_in,
    a_reload_within_the_grace_is_neither_a_leave_nor_a_join,
    a_member_leaves_once_the_grace_has_passed,
    a_subscription_that_ends_leaves_and_stops_following,
    occupancy_adds_up_subscribers_and_members_and_lists_occupied_channels_by_prefix,
    every_transition_is_observed_once;
    redis only:
    one_user_on_two_nodes_is_one_member_and_leaves_once,
    a_channel_is_vacated_only_when_the_last_node_s_subscribers_left,
    a_silent_node_s_members_leave_once_each_unless_connected_elsewhere,
);

fn ch(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

/// A subscription to `channel` (live, no history).
async fn subscribed(hub: &Arc<Hub>, channel: &str) -> Subscription {
    let mut subscription = hub.subscription(Transport::WebSocket);
    subscription.subscribe(&ch(channel), Start::Now, 0).await.unwrap();
    subscription
}

/// A subscription to `channel` whose user `user` joined its presence.
async fn joined(hub: &Arc<Hub>, channel: &str, user: &str) -> Subscription {
    let mut subscription = subscribed(hub, channel).await;
    let info = format!(r#"{{"name": "{user}"}}"#);
    subscription.join(&ch(channel), &member(user, Some(&info), 1024).unwrap()).await.unwrap();
    subscription
}

/// A subscription to `channel` that follows its presence, with the user ids of the list it read.
async fn following(hub: &Arc<Hub>, channel: &str) -> (Subscription, Vec<String>) {
    let mut subscription = subscribed(hub, channel).await;
    let members = subscription.members(&ch(channel)).await.unwrap();
    (subscription, members.members.into_iter().map(|m| m.user_id).collect())
}

/// The next changes of presence of `subscription`, until a message published after them (a marker on the same
/// channel, so every change announced before it is queued before it): nothing more is on the way.
async fn changes(hub: &Arc<Hub>, subscription: &mut Subscription, channel: &str) -> Vec<(PresenceChange, String)> {
    let marker = hub.publish(ch(channel), EventName::default_event(), Bytes::from_static(b"0")).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let live = tokio::time::timeout(common::PATIENCE, subscription.recv()).await.expect("the marker in time");
        for item in subscription.follow(live, 100).await.into_result().unwrap() {
            match item {
                Item::Presence(event) => seen.push((event.change, event.member.user_id.clone())),
                Item::Message(m) if m.message.position == marker.message.position => return seen,
                Item::Message(_) => {}
                Item::Reset { channel, .. } => panic!("a reset of {channel}"),
            }
        }
    }
}

/// The member count of `channel`, waited for until it is `n` (a leave after the grace, a dead node's removal).
async fn until_members(hub: &Hub, channel: &str, n: usize) {
    tokio::time::timeout(common::PATIENCE, async {
        while hub.members(&ch(channel)).await.unwrap().count() != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{channel} never had {n} members"));
}

/// The subscriber count of `channel`, waited for until it is `n` (counts are reported by a task of the hub).
async fn until_subscribers(hub: &Hub, channel: &str, n: u64) {
    tokio::time::timeout(common::PATIENCE, async {
        while hub.occupancy(&ch(channel)).await.unwrap().subscribers != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{channel} never had {n} subscribers"));
}

/// Every transition `hubs` observe, in order.
fn transitions(hubs: &[Arc<Hub>]) -> Arc<Mutex<Vec<Transition>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    for hub in hubs {
        let sink = seen.clone();
        hub.on_transition(Arc::new(move |t: &Transition| sink.lock().unwrap().push(t.clone())));
    }
    seen
}

fn join(user: &str) -> (PresenceChange, String) {
    (PresenceChange::Join, user.to_string())
}

fn leave(user: &str) -> (PresenceChange, String) {
    (PresenceChange::Leave, user.to_string())
}

async fn a_join_makes_the_user_a_member_with_its_info(nodes: Nodes) {
    let Some(hub) = nodes.one(|_| {}).await else { return };
    let mut ada = subscribed(&hub, "room").await;
    let joined = ada.join(&ch("room"), &member("ada", Some(r#"{ "name": "Ada" }"#), 1024).unwrap()).await.unwrap();
    assert!(joined.new);
    assert_eq!(joined.members.count(), 1);
    assert_eq!(&joined.members.members[0].user_info[..], br#"{"name":"Ada"}"#, "minified");
    let members = hub.members(&ch("room")).await.unwrap();
    assert_eq!(members.members, joined.members.members);
    assert!(ada.is_member(&ch("room")));
    let again = ada.join(&ch("room"), &member("ada", None, 1024).unwrap()).await.unwrap_err();
    assert_eq!(again.code(), "already_joined");
    let mut other = hub.subscription(Transport::WebSocket);
    let not = other.join(&ch("room"), &member("bob", None, 1024).unwrap()).await.unwrap_err();
    assert!(matches!(not, PresenceError::NotSubscribed(_)), "{not:?}");
}

async fn a_user_with_two_connections_is_one_member_until_both_left(nodes: Nodes) {
    let Some(hub) = nodes.one(|_| {}).await else { return };
    let (mut watcher, _) = following(&hub, "room").await;
    let mut tab1 = joined(&hub, "room", "ada").await;
    let mut tab2 = subscribed(&hub, "room").await;
    let second = tab2.join(&ch("room"), &member("ada", None, 1024).unwrap()).await.unwrap();
    assert!(!second.new, "the user is a member already");
    assert_eq!(second.members.count(), 1);
    assert!(tab1.leave(&ch("room")));
    assert_eq!(changes(&hub, &mut watcher, "room").await, [join("ada")], "one join, no leave yet");
    assert!(tab2.unsubscribe(&ch("room")));
    until_members(&hub, "room", 0).await;
    assert_eq!(changes(&hub, &mut watcher, "room").await, [leave("ada")]);
}

async fn followers_get_joins_and_leaves_once_in_order_after_the_list(nodes: Nodes) {
    let Some(hub) = nodes.one(|_| {}).await else { return };
    let _first = joined(&hub, "room", "first").await;
    let (mut watcher, list) = following(&hub, "room").await;
    assert_eq!(list, ["first"]);
    let mut ada = joined(&hub, "room", "ada").await;
    let _bob = joined(&hub, "room", "bob").await;
    ada.leave(&ch("room"));
    until_members(&hub, "room", 2).await;
    assert_eq!(changes(&hub, &mut watcher, "room").await, [join("ada"), join("bob"), leave("ada")]);
}

async fn a_follower_that_read_the_list_after_its_own_join_is_not_told_it_again(nodes: Nodes) {
    let Some(hub) = nodes.one(|_| {}).await else { return };
    let mut ada = joined(&hub, "room", "ada").await;
    let members = ada.members(&ch("room")).await.unwrap();
    assert_eq!(members.count(), 1);
    assert_eq!(changes(&hub, &mut ada, "room").await, [], "its own join is in the list");
    // And the other way round: the list first, then the join, whose answer holds the join.
    let (mut bob, _) = following(&hub, "room").await;
    let joined = bob.join(&ch("room"), &member("bob", None, 1024).unwrap()).await.unwrap();
    assert_eq!(joined.members.count(), 2);
    assert_eq!(changes(&hub, &mut bob, "room").await, []);
}

async fn a_full_channel_refuses_a_new_user_but_not_one_already_in(nodes: Nodes) {
    let Some(hub) = nodes.one(|c| c.default_namespace.presence_max_members = 2).await else { return };
    let _ada = joined(&hub, "room", "ada").await;
    let _bob = joined(&hub, "room", "bob").await;
    let mut carol = subscribed(&hub, "room").await;
    let full = carol.join(&ch("room"), &member("carol", None, 1024).unwrap()).await.unwrap_err();
    assert_eq!(full.code(), "presence_full");
    assert!(!carol.is_member(&ch("room")));
    let mut ada_again = subscribed(&hub, "room").await;
    assert!(!ada_again.join(&ch("room"), &member("ada", None, 1024).unwrap()).await.unwrap().new);
    assert_eq!(hub.members(&ch("room")).await.unwrap().count(), 2);
}

async fn a_reload_within_the_grace_is_neither_a_leave_nor_a_join(nodes: Nodes) {
    let grace = Duration::from_millis(500);
    let Some(hub) = nodes.one(|c| c.presence_grace = grace).await else { return };
    let (mut watcher, _) = following(&hub, "room").await;
    let page = joined(&hub, "room", "ada").await;
    assert_eq!(changes(&hub, &mut watcher, "room").await, [join("ada")]);
    drop(page);
    let reloaded = subscribed(&hub, "room").await;
    let mut reloaded = reloaded;
    assert!(!reloaded.join(&ch("room"), &member("ada", None, 1024).unwrap()).await.unwrap().new);
    // Past the grace, the old page's leave has run: it left nothing to say.
    tokio::time::sleep(grace * 3).await;
    assert_eq!(changes(&hub, &mut watcher, "room").await, []);
    assert_eq!(hub.members(&ch("room")).await.unwrap().count(), 1);
}

async fn a_member_leaves_once_the_grace_has_passed(nodes: Nodes) {
    let grace = Duration::from_millis(300);
    let Some(hub) = nodes.one(|c| c.presence_grace = grace).await else { return };
    let (mut watcher, _) = following(&hub, "room").await;
    let mut page = joined(&hub, "room", "ada").await;
    page.leave(&ch("room"));
    assert_eq!(hub.members(&ch("room")).await.unwrap().count(), 1, "still a member within the grace");
    until_members(&hub, "room", 0).await;
    assert_eq!(changes(&hub, &mut watcher, "room").await, [join("ada"), leave("ada")]);
}

async fn a_subscription_that_ends_leaves_and_stops_following(nodes: Nodes) {
    let Some(hub) = nodes.one(|_| {}).await else { return };
    let (mut watcher, _) = following(&hub, "room").await;
    let (mut gone, _) = following(&hub, "room").await;
    gone.join(&ch("room"), &member("ada", None, 1024).unwrap()).await.unwrap();
    drop(gone);
    until_members(&hub, "room", 0).await;
    assert_eq!(changes(&hub, &mut watcher, "room").await, [join("ada"), leave("ada")]);
    let (mut unsubscribed, _) = following(&hub, "room").await;
    unsubscribed.unsubscribe(&ch("room"));
    unsubscribed.subscribe(&ch("room"), Start::Now, 0).await.unwrap();
    let _bob = joined(&hub, "room", "bob").await;
    assert_eq!(changes(&hub, &mut unsubscribed, "room").await, [], "no presence followed since");
}

async fn occupancy_adds_up_subscribers_and_members_and_lists_occupied_channels_by_prefix(nodes: Nodes) {
    let Some(hub) = nodes.one(|_| {}).await else { return };
    let _a = joined(&hub, "chat:a", "ada").await;
    let _b = subscribed(&hub, "chat:a").await;
    let c = subscribed(&hub, "chat:b").await;
    let _d = subscribed(&hub, "orders:1").await;
    until_subscribers(&hub, "chat:a", 2).await;
    until_subscribers(&hub, "chat:b", 1).await;
    until_subscribers(&hub, "orders:1", 1).await;
    let a = hub.occupancy(&ch("chat:a")).await.unwrap();
    assert_eq!((a.subscribers, a.members, a.occupied()), (2, 1, true));
    let listed = |prefix: &'static str, limit: usize| {
        let hub = hub.clone();
        async move {
            let found = hub.occupied(prefix, limit).await.unwrap();
            found.into_iter().map(|(c, o)| (c.as_str().to_string(), o.subscribers)).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("chat:", 10).await, [("chat:a".to_string(), 2), ("chat:b".to_string(), 1)]);
    assert_eq!(listed("chat:", 1).await, [("chat:a".to_string(), 2)]);
    assert_eq!(listed("", 10).await.len(), 3);
    drop(c);
    until_subscribers(&hub, "chat:b", 0).await;
    assert_eq!(listed("chat:", 10).await, [("chat:a".to_string(), 2)], "vacated channels are not listed");
    assert!(!hub.occupancy(&ch("nobody")).await.unwrap().occupied());
}

async fn every_transition_is_observed_once(nodes: Nodes) {
    let Some(hub) = nodes.one(|_| {}).await else { return };
    let seen = transitions(std::slice::from_ref(&hub));
    let ada = joined(&hub, "room", "ada").await;
    let also_ada = joined(&hub, "room", "ada").await;
    until_subscribers(&hub, "room", 2).await;
    drop((ada, also_ada));
    tokio::time::timeout(common::PATIENCE, async {
        while seen.lock().unwrap().len() < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("four transitions: {:?}", seen.lock().unwrap()));
    let room = ch("room");
    let seen = seen.lock().unwrap().clone();
    let added = seen.iter().filter(|t| matches!(t, Transition::MemberAdded(c, m) if *c == room && m.user_id == "ada"));
    let removed =
        seen.iter().filter(|t| matches!(t, Transition::MemberRemoved(c, m) if *c == room && m.user_id == "ada"));
    assert_eq!((added.count(), removed.count()), (1, 1), "{seen:?}");
    assert_eq!(seen.iter().filter(|t| **t == Transition::Occupied(room.clone())).count(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|t| **t == Transition::Vacated(room.clone())).count(), 1, "{seen:?}");
    let at = |t: &Transition| seen.iter().position(|s| s == t).unwrap();
    assert!(at(&Transition::Occupied(room.clone())) < at(&Transition::Vacated(room.clone())));
}

async fn one_user_on_two_nodes_is_one_member_and_leaves_once(nodes: Nodes) {
    let Some(hubs) = nodes.start(2, |_| {}).await else { return };
    let seen = transitions(&hubs);
    let (mut watcher, _) = following(&hubs[1], "room").await;
    let tab_a = joined(&hubs[0], "room", "ada").await;
    let mut tab_b = subscribed(&hubs[1], "room").await;
    let joined_b = tab_b.join(&ch("room"), &member("ada", None, 1024).unwrap()).await.unwrap();
    assert!(!joined_b.new, "a member already, through the other node");
    assert_eq!(hubs[1].members(&ch("room")).await.unwrap().count(), 1);
    drop(tab_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hubs[0].members(&ch("room")).await.unwrap().count(), 1, "still there through node B");
    drop(tab_b);
    until_members(&hubs[0], "room", 0).await;
    assert_eq!(changes(&hubs[1], &mut watcher, "room").await, [join("ada"), leave("ada")]);
    let seen = seen.lock().unwrap().clone();
    let members: Vec<_> =
        seen.iter().filter(|t| matches!(t, Transition::MemberAdded(..) | Transition::MemberRemoved(..))).collect();
    assert_eq!(members.len(), 2, "added and removed once each, by one node: {seen:?}");
}

async fn a_channel_is_vacated_only_when_the_last_node_s_subscribers_left(nodes: Nodes) {
    let Some(hubs) = nodes.start(2, |_| {}).await else { return };
    let seen = transitions(&hubs);
    let on_a = subscribed(&hubs[0], "room").await;
    let on_b = subscribed(&hubs[1], "room").await;
    until_subscribers(&hubs[0], "room", 2).await;
    drop(on_a);
    until_subscribers(&hubs[0], "room", 1).await;
    let vacated = |seen: &[Transition]| seen.iter().filter(|t| matches!(t, Transition::Vacated(_))).count();
    assert_eq!(vacated(&seen.lock().unwrap()), 0, "a subscriber remains on node B");
    drop(on_b);
    until_subscribers(&hubs[0], "room", 0).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(vacated(&seen), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|t| matches!(t, Transition::Occupied(_))).count(), 1, "{seen:?}");
}

async fn a_silent_node_s_members_leave_once_each_unless_connected_elsewhere(nodes: Nodes) {
    let ttl = Duration::from_secs(1);
    let Some(hubs) = nodes.start(2, |c| c.presence_node_ttl = ttl).await else { return };
    let seen = transitions(&hubs[1..]);
    let (mut watcher, _) = following(&hubs[1], "room").await;
    let _ada = joined(&hubs[0], "room", "ada").await;
    let _bob_a = joined(&hubs[0], "room", "bob").await;
    let _bob_b = joined(&hubs[1], "room", "bob").await;
    let _carol = joined(&hubs[0], "other", "carol").await;
    // Node A stops renewing its liveness without a word to its connections, as a killed process does.
    hubs[0].retire().await;
    until_members(&hubs[1], "room", 1).await;
    until_members(&hubs[1], "other", 0).await;
    assert_eq!(changes(&hubs[1], &mut watcher, "room").await, [join("ada"), join("bob"), leave("ada")]);
    let seen = seen.lock().unwrap().clone();
    let removed: Vec<String> = seen
        .iter()
        .filter_map(|t| match t {
            Transition::MemberRemoved(c, m) => Some(format!("{c}/{}", m.user_id)),
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), 2, "ada and carol, once each, by node B: {seen:?}");
    assert!(removed.contains(&"room/ada".to_string()) && removed.contains(&"other/carol".to_string()));
}

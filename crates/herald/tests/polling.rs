//! Polling for every message: `/v1/channels/{channel}/messages` and `/v1/poll`, short and long.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use common::{config, spawn, start, TestServer};
use herald_proto::{ChannelName, Cursor};
use serde_json::{json, Value};

fn offsets(answer: &Value) -> Vec<u64> {
    answer["messages"].as_array().unwrap().iter().map(|m| m["offset"].as_u64().unwrap()).collect()
}

async fn publish_n(server: &TestServer, channel: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(server.publish(channel, "tick", json!({ "i": i })).await);
    }
    out
}

#[tokio::test]
async fn without_since_the_history_comes_from_the_oldest() {
    let server = start().await;
    publish_n(&server, "a", 3).await;
    let answer = server.get("/v1/channels/a/messages").await.json();
    assert_eq!(offsets(&answer), [1, 2, 3]);
    assert_eq!(answer["reset"], false);
    assert_eq!(answer["messages"][2]["data"], json!({ "i": 3 }));
    assert_eq!(answer["cursor"], answer["messages"][2]["cursor"], "the cursor points after the last message");
}

#[tokio::test]
async fn since_a_cursor_returns_only_what_came_after_it() {
    let server = start().await;
    let published = publish_n(&server, "a", 5).await;
    let since = published[1]["cursor"].as_str().unwrap();
    let answer = server.get(&format!("/v1/channels/a/messages?since={since}")).await.json();
    assert_eq!(offsets(&answer), [3, 4, 5]);
    let again = server.get(&format!("/v1/channels/a/messages?since={}", answer["cursor"].as_str().unwrap())).await;
    let again = again.json();
    assert_eq!(offsets(&again), Vec::<u64>::new());
    assert_eq!(again["cursor"], answer["cursor"], "nothing new: the cursor is unchanged");
}

#[tokio::test]
async fn limit_cuts_the_answer_and_the_cursor_continues_from_there() {
    let server = start().await;
    publish_n(&server, "a", 5).await;
    let first = server.get("/v1/channels/a/messages?limit=2").await.json();
    assert_eq!(offsets(&first), [1, 2]);
    let rest = server.get(&format!("/v1/channels/a/messages?since={}", first["cursor"].as_str().unwrap())).await;
    assert_eq!(offsets(&rest.json()), [3, 4, 5]);
}

#[tokio::test]
async fn limit_defaults_to_100_and_is_clamped_to_1000() {
    let mut config = config();
    config.default_namespace.history_size = 1500;
    let server = spawn(config).await;
    server.publish_burst("a", 1200).await;
    assert_eq!(offsets(&server.get("/v1/channels/a/messages").await.json()).len(), 100);
    assert_eq!(offsets(&server.get("/v1/channels/a/messages?limit=5000").await.json()).len(), 1000);
    assert_eq!(offsets(&server.get("/v1/channels/a/messages?limit=0").await.json()).len(), 1);
}

#[tokio::test]
async fn since_latest_skips_the_history() {
    let server = start().await;
    publish_n(&server, "a", 3).await;
    let answer = server.get("/v1/channels/a/messages?since=latest").await.json();
    assert_eq!(offsets(&answer), Vec::<u64>::new());
    server.publish("a", "tick", json!(4)).await;
    let next = server.get(&format!("/v1/channels/a/messages?since={}", answer["cursor"].as_str().unwrap())).await;
    assert_eq!(offsets(&next.json()), [4]);
}

#[tokio::test]
async fn last_n_starts_with_the_newest_messages() {
    let server = start().await;
    publish_n(&server, "a", 5).await;
    assert_eq!(offsets(&server.get("/v1/channels/a/messages?last=2").await.json()), [4, 5]);
}

#[tokio::test]
async fn a_cursor_older_than_the_history_is_a_reset_with_what_remains() {
    let mut config = config();
    config.default_namespace.history_size = 2;
    let server = spawn(config).await;
    let published = publish_n(&server, "a", 5).await;
    let since = published[0]["cursor"].as_str().unwrap();
    let answer = server.get(&format!("/v1/channels/a/messages?since={since}")).await.json();
    assert_eq!(answer["reset"], true);
    assert_eq!(offsets(&answer), [4, 5]);
    // The cursor right before the retained history is still whole: no reset.
    let since = published[2]["cursor"].as_str().unwrap();
    let answer = server.get(&format!("/v1/channels/a/messages?since={since}")).await.json();
    assert_eq!((answer["reset"].clone(), offsets(&answer)), (json!(false), vec![4, 5]));
}

#[tokio::test]
async fn a_cursor_from_another_server_life_is_a_reset() {
    let old = start().await;
    let published = old.publish("a", "tick", json!(1)).await;
    old.stop().await;
    let server = start().await;
    server.publish("a", "tick", json!("new life")).await;
    let answer = server.get(&format!("/v1/channels/a/messages?since={}", published["cursor"].as_str().unwrap())).await;
    let answer = answer.json();
    assert_eq!(answer["reset"], true);
    assert_eq!(answer["messages"][0]["data"], "new life");
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_code() {
    let server = start().await;
    for (path, code) in [
        ("/v1/channels/a/messages?since=%21%21", "invalid_cursor"),
        ("/v1/channels/a/messages?since=AQEB", "invalid_cursor"),
        ("/v1/channels/a/messages?limit=lots", "invalid_parameter"),
        ("/v1/channels/a/messages?wait=-1", "invalid_parameter"),
        ("/v1/channels/a/messages?last=x", "invalid_parameter"),
        ("/v1/poll", "invalid_parameter"),
        ("/v1/poll?channel=a%20b", "invalid_channel"),
    ] {
        let r = server.get(path).await;
        assert_eq!((r.status, r.error_code()), (400, code.to_string()), "{path}");
    }
}

#[tokio::test]
async fn a_long_poll_is_held_until_a_message_arrives() {
    let server = start().await;
    let client = server.client;
    let held = tokio::spawn(async move { client.get("/v1/channels/a/messages?since=latest&wait=25").await.json() });
    server.until_metric("herald_connections{transport=\"long_poll\"}", 1).await;
    server.publish("a", "tick", json!("news")).await;
    let answer = held.await.unwrap();
    assert_eq!(offsets(&answer), [1]);
    assert_eq!(answer["messages"][0]["data"], "news");
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_that_times_out_answers_nothing_with_the_same_cursor() {
    let server = start().await;
    let published = server.publish("a", "tick", json!(1)).await;
    let since = published["cursor"].as_str().unwrap();
    let answer = server.get(&format!("/v1/channels/a/messages?since={since}&wait=30")).await.json();
    assert_eq!(offsets(&answer), Vec::<u64>::new());
    assert_eq!(answer["cursor"], since);
}

#[tokio::test(start_paused = true)]
async fn wait_is_clamped_to_the_configured_maximum() {
    let mut config = config();
    config.max_wait = std::time::Duration::from_secs(5);
    let server = spawn(config).await;
    let before = tokio::time::Instant::now();
    server.get("/v1/channels/a/messages?since=latest&wait=3600").await;
    let held = before.elapsed();
    assert!(held >= std::time::Duration::from_secs(5) && held < std::time::Duration::from_secs(6), "{held:?}");
}

#[tokio::test]
async fn one_poll_serves_several_channels_with_one_cursor() {
    let server = start().await;
    server.publish("a", "tick", json!("a1")).await;
    server.publish("b", "tick", json!("b1")).await;
    server.publish("a", "tick", json!("a2")).await;
    let answer = server.get("/v1/poll?channel=a&channel=b").await.json();
    let seen: Vec<(String, u64)> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["channel"].as_str().unwrap().to_string(), m["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, [("a".into(), 1), ("a".into(), 2), ("b".into(), 1)], "grouped by channel in request order");
    assert_eq!(answer["reset_channels"], json!([]));
    let cursor = Cursor::decode(answer["cursor"].as_str().unwrap()).unwrap();
    assert_eq!(cursor.get(&ChannelName::new("a").unwrap()).unwrap().offset, 2);
    assert_eq!(cursor.get(&ChannelName::new("b").unwrap()).unwrap().offset, 1);

    server.publish("b", "tick", json!("b2")).await;
    let next = server.get(&format!("/v1/poll?channel=a&channel=b&since={}", answer["cursor"].as_str().unwrap())).await;
    let next = next.json();
    assert_eq!(next["messages"].as_array().unwrap().len(), 1);
    assert_eq!(next["messages"][0]["data"], "b2");
}

#[tokio::test]
async fn on_a_multi_channel_poll_limit_counts_across_channels() {
    let server = start().await;
    publish_n(&server, "a", 3).await;
    publish_n(&server, "b", 3).await;
    let first = server.get("/v1/poll?channel=a&channel=b&limit=4").await.json();
    assert_eq!(first["messages"].as_array().unwrap().len(), 4);
    let rest = server.get(&format!("/v1/poll?channel=a&channel=b&since={}", first["cursor"].as_str().unwrap())).await;
    let rest = rest.json();
    assert_eq!(offsets(&rest), [2, 3], "b's last two, nothing twice");
    assert_eq!(rest["messages"][0]["channel"], "b");
}

#[tokio::test]
async fn separate_cursors_can_be_merged_by_repeating_since() {
    let server = start().await;
    let a = server.publish("a", "tick", json!("a1")).await;
    let b = server.publish("b", "tick", json!("b1")).await;
    server.publish("a", "tick", json!("a2")).await;
    server.publish("b", "tick", json!("b2")).await;
    let path = format!(
        "/v1/poll?channel=a&channel=b&since={}&since={}",
        a["cursor"].as_str().unwrap(),
        b["cursor"].as_str().unwrap()
    );
    let answer = server.get(&path).await.json();
    let data: Vec<&str> = answer["messages"].as_array().unwrap().iter().map(|m| m["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["a2", "b2"]);
}

#[tokio::test]
async fn a_multi_channel_long_poll_wakes_for_any_of_its_channels() {
    let server = start().await;
    let client = server.client;
    let held =
        tokio::spawn(async move { client.get("/v1/poll?channel=a&channel=b&since=latest&wait=25").await.json() });
    server.until_metric("herald_connections{transport=\"long_poll\"}", 1).await;
    server.publish("b", "tick", json!("b news")).await;
    let answer = held.await.unwrap();
    assert_eq!(answer["messages"][0]["data"], "b news");
    let cursor = Cursor::decode(answer["cursor"].as_str().unwrap()).unwrap();
    assert!(cursor.get(&ChannelName::new("a").unwrap()).is_some(), "the cursor still names a");
}

#[tokio::test]
async fn reset_channels_name_the_channels_that_lost_messages() {
    let mut config = config();
    config.default_namespace.history_size = 1;
    let server = spawn(config).await;
    let a = publish_n(&server, "a", 3).await;
    let b = publish_n(&server, "b", 1).await;
    let path = format!(
        "/v1/poll?channel=a&channel=b&since={}&since={}",
        a[0]["cursor"].as_str().unwrap(),
        b[0]["cursor"].as_str().unwrap()
    );
    let answer = server.get(&path).await.json();
    assert_eq!(answer["reset"], true);
    assert_eq!(answer["reset_channels"], json!(["a"]));
}

#[tokio::test]
async fn too_many_channels_in_one_request_is_400() {
    let mut config = config();
    config.max_channels_per_request = 2;
    let server = spawn(config).await;
    let r = server.get("/v1/poll?channel=a&channel=b&channel=c").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "too_many_channels"));
    assert_eq!(
        server.get("/v1/poll?channel=a&channel=b&channel=a").await.status,
        200,
        "a repeated channel counts once"
    );
}

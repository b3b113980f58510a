//! The disk engine as an operator meets it: real `herald serve` processes on a real data dir, stopped cleanly,
//! killed with SIGKILL mid-storm, started on a damaged or truncated file, on a full disk, and twice on one dir.
//! The engine's rules themselves run in the shared contract (`engine_contract.rs`, `disk::…`).
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::node::{herald, Node};
use common::{Client, PATIENCE};
use serde_json::{json, Value};

/// A disk node on `dir` with extra environment.
async fn disk_node(dir: &Path, env: &[(&str, &str)]) -> Node {
    Node::start(&["--engine", "disk", "--data-dir", dir.to_str().unwrap()], env).await
}

/// Stops `node` as systemd does (SIGTERM) and waits for it to exit cleanly.
async fn terminate(mut node: Node) {
    let pid = node.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(PATIENCE * 3, node.child.wait()).await.expect("stops in time").unwrap();
    assert!(status.success(), "{status}");
}

fn data_of(messages: &[Value]) -> Vec<i64> {
    messages.iter().map(|m| m["data"]["i"].as_i64().unwrap()).collect()
}

async fn publish_i(client: &Client, channel: &str, range: std::ops::RangeInclusive<i64>) -> Vec<Value> {
    let mut out = Vec::new();
    for i in range {
        out.push(client.publish(channel, "status", json!({ "i": i })).await);
    }
    out
}

/// A long poll's answer from `cursor` (`None`: from the oldest).
async fn messages_since(client: &Client, channel: &str, cursor: Option<&str>) -> Value {
    let path = match cursor {
        Some(cursor) => format!("/v1/channels/{channel}/messages?since={cursor}&limit=1000"),
        None => format!("/v1/channels/{channel}/messages?limit=1000"),
    };
    let answer = client.get(&path).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

/// Every retained message of `channel`, read page by page from the oldest.
async fn all_messages(client: &Client, channel: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut answer = messages_since(client, channel, None).await;
    loop {
        let page = answer["messages"].as_array().unwrap().clone();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
        answer = messages_since(client, channel, Some(answer["cursor"].as_str().unwrap())).await;
    }
}

/// Every file under `dir`, with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files(&entry.path()));
        } else {
            out.push((entry.path(), entry.metadata().unwrap().len()));
        }
    }
    out
}

/// The largest file of the store in `data_dir` (with a few messages: the journal).
fn largest_store_file(data_dir: &Path) -> PathBuf {
    files(&data_dir.join(herald::engine::disk::STORE)).into_iter().max_by_key(|(_, size)| *size).unwrap().0
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    Dir(common::scratch_dir(name))
}

#[tokio::test]
async fn a_clean_restart_keeps_every_epoch_so_websocket_sse_and_long_poll_clients_resume_without_reset_or_gap() {
    let dir = dir("disk-restart");
    let node = disk_node(&dir.0, &[]).await;
    publish_i(&node.client, "orders", 1..=3).await;
    // Each transport's client is connected and has seen message 3 when the server stops.
    let mut ws = node.client.ws().await;
    let subscribed = ws.call(json!({ "op": "subscribe", "channel": "orders", "last": 1 })).await;
    assert_eq!(subscribed["reset"], false);
    let ws_seen = ws.recv().await;
    assert_eq!(ws_seen["data"]["i"], 3);
    let mut sse = node.client.sse("channel=orders&envelope=true&last=1", &[]).await;
    let sse_seen = sse.next_data().await;
    assert_eq!(sse_seen.json()["data"]["i"], 3);
    let polled = messages_since(&node.client, "orders", None).await;
    assert_eq!(data_of(polled["messages"].as_array().unwrap()), [1, 2, 3]);
    let poll_cursor = polled["cursor"].as_str().unwrap().to_string();
    let ws_cursor = ws_seen["cursor"].as_str().unwrap().to_string();
    let sse_id = sse_seen.id.clone().unwrap();

    terminate(node).await;
    let node = disk_node(&dir.0, &[]).await;
    publish_i(&node.client, "orders", 4..=5).await;

    let mut ws = node.client.ws().await;
    let subscribed = ws.call(json!({ "op": "subscribe", "channel": "orders", "since": ws_cursor })).await;
    assert_eq!(subscribed["reset"], false, "{subscribed}");
    assert_eq!(data_of(&[ws.recv().await, ws.recv().await]), [4, 5]);
    let mut sse = node.client.sse("channel=orders&envelope=true", &[("Last-Event-ID", &sse_id)]).await;
    let first = sse.next().await.unwrap();
    assert!(first.data.is_none() && first.event.is_none(), "no reset: {first:?}");
    let resumed = [sse.next_data().await.json(), sse.next_data().await.json()];
    assert_eq!(data_of(&resumed), [4, 5]);
    let polled = messages_since(&node.client, "orders", Some(&poll_cursor)).await;
    assert_eq!((polled["reset"].clone(), data_of(polled["messages"].as_array().unwrap())), (json!(false), vec![4, 5]));
    terminate(node).await;
}

#[tokio::test]
async fn every_acknowledged_message_survives_kill_9_during_a_publish_storm_with_fsync_always() {
    kill_9_during_a_publish_storm("disk-storm", &[("HERALD_FSYNC", "always")]).await;
}

/// With `interval` a `201` means the message is in the kernel's cache (the journal written, not fsynced): a crash
/// of the process loses none of them, only a crash of the machine can lose the last interval. An hour between
/// fsyncs here, so nothing of the storm is fsynced; 8 publishers, so both ways in are taken (a publisher's own
/// commit when the writer is idle, the queue when it is busy).
#[tokio::test]
async fn every_acknowledged_message_survives_kill_9_during_a_publish_storm_with_fsync_interval() {
    let env = [("HERALD_FSYNC", "interval"), ("HERALD_FSYNC_INTERVAL_MS", "3600000")];
    kill_9_during_a_publish_storm("disk-storm-interval", &env).await;
}

async fn kill_9_during_a_publish_storm(name: &str, env: &[(&str, &str)]) {
    let dir = dir(name);
    // History long enough to keep every message of the test.
    let config = dir.0.join("herald.toml");
    std::fs::write(&config, "[default_namespace]\nhistory_size = 100000\n").unwrap();
    let data = dir.0.join("data");
    let (data, config) = (data.to_str().unwrap().to_string(), config.to_str().unwrap().to_string());
    let start = || async {
        let args = ["--engine", "disk", "--data-dir", data.as_str(), "--config", config.as_str()];
        Node::start(&args, env).await
    };
    // Bounded: three crashes, each after 100 acknowledged publishes of 8 concurrent publishers.
    for round in 0..3 {
        let node = start().await;
        let before = messages_since(&node.client, "storm", None).await;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, i64)>::new()));
        let mut publishers = Vec::new();
        for p in 0..8i64 {
            let (client, acked) = (node.client, acked.clone());
            publishers.push(tokio::spawn(async move {
                for k in 0.. {
                    let i = round * 1_000_000 + p * 10_000 + k;
                    let body = serde_json::to_vec(&json!({ "event": "e", "data": { "i": i } })).unwrap();
                    let answer = client
                        .try_request(
                            "POST",
                            "/v1/channels/storm/messages",
                            &[("Content-Type", "application/json")],
                            &body,
                        )
                        .await;
                    match answer {
                        Some(r) if r.status == 201 => {
                            acked.lock().unwrap().push((r.json()["offset"].as_u64().unwrap(), i))
                        }
                        _ => return,
                    }
                }
            }));
        }
        tokio::time::timeout(PATIENCE * 3, async {
            while acked.lock().unwrap().len() < 100 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("publishes are acknowledged");
        node.crash().await;
        for publisher in publishers {
            publisher.await.unwrap();
        }
        let node = start().await;
        let after = all_messages(&node.client, "storm").await;
        let stored: std::collections::HashMap<u64, i64> =
            after.iter().map(|m| (m["offset"].as_u64().unwrap(), m["data"]["i"].as_i64().unwrap())).collect();
        for (offset, i) in acked.lock().unwrap().iter() {
            assert_eq!(stored.get(offset), Some(i), "round {round}: acknowledged message {i} at offset {offset}");
        }
        // A client that had read everything before the round resumes across the crash without a reset.
        if let Some(cursor) = before["cursor"].as_str() {
            let resumed = messages_since(&node.client, "storm", Some(cursor)).await;
            assert_eq!(resumed["reset"], false, "round {round}");
        }
        terminate(node).await;
    }
}

#[tokio::test]
async fn after_a_crash_with_fsync_interval_a_client_behind_what_survived_resumes_and_one_past_it_resets() {
    let dir = dir("disk-interval");
    // An hour between flushes: only the clean stop makes anything durable.
    let env = [("HERALD_FSYNC", "interval"), ("HERALD_FSYNC_INTERVAL_MS", "3600000")];
    let node = disk_node(&dir.0, &env).await;
    let kept = publish_i(&node.client, "orders", 1..=3).await;
    terminate(node).await;
    let node = disk_node(&dir.0, &env).await;
    let flushed = files(&dir.0);
    let lost = publish_i(&node.client, "orders", 4..=6).await;
    node.crash().await;
    // A SIGKILL leaves what the process wrote in the kernel's cache; a machine that loses power does not. Cut every
    // file back to what was on disk at the last fsync, as that would.
    for (file, size) in files(&dir.0) {
        match flushed.iter().find(|(f, _)| *f == file) {
            Some((_, flushed)) => {
                std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(*flushed).unwrap()
            }
            None => std::fs::remove_file(&file).unwrap(),
        }
        let _ = size;
    }

    let node = disk_node(&dir.0, &env).await;
    let behind = messages_since(&node.client, "orders", Some(kept[1]["cursor"].as_str().unwrap())).await;
    assert_eq!((behind["reset"].clone(), data_of(behind["messages"].as_array().unwrap())), (json!(false), vec![3]));
    let at_the_end = messages_since(&node.client, "orders", Some(kept[2]["cursor"].as_str().unwrap())).await;
    assert_eq!(at_the_end["reset"], false);
    let past = messages_since(&node.client, "orders", Some(lost[1]["cursor"].as_str().unwrap())).await;
    assert_eq!((past["reset"].clone(), data_of(past["messages"].as_array().unwrap())), (json!(true), vec![1, 2, 3]));
    // New messages continue the offsets under a new epoch: the lost cursor never matches a different message.
    let next = node.client.publish("orders", "status", json!({ "i": 7 })).await;
    assert_eq!(next["offset"], 4);
    let past = messages_since(&node.client, "orders", Some(lost[1]["cursor"].as_str().unwrap())).await;
    assert_eq!(past["reset"], true);
    terminate(node).await;
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_refuses_to_start_and_says_why() {
    let dir = dir("disk-lock");
    let first = disk_node(&dir.0, &[]).await;
    let second = herald()
        .args(["serve", "--listen", "127.0.0.1:0", "--engine", "disk", "--data-dir", dir.0.to_str().unwrap()])
        .output();
    let second = tokio::time::timeout(PATIENCE, second).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(stderr.contains("in use by another Herald process"), "{stderr}");
    // The first one still serves.
    first.client.publish("a", "e", json!({ "i": 1 })).await;
    terminate(first).await;
}

/// Publishes 40 messages with `always`, stops cleanly, damages the file with `damage`, starts again: the server
/// starts, and every message it answers is one that was published at that offset.
async fn start_on_a_damaged_file(name: &str, damage: impl Fn(&Path)) {
    let dir = dir(name);
    let node = disk_node(&dir.0, &[("HERALD_FSYNC", "always")]).await;
    let big = "x".repeat(2000);
    for i in 1..=40 {
        node.client.publish("orders", "status", json!({ "i": i, "pad": big })).await;
    }
    terminate(node).await;
    damage(&largest_store_file(&dir.0));
    let node = disk_node(&dir.0, &[]).await;
    let answer = node.client.get("/v1/channels/orders/messages?limit=1000").await;
    if answer.status == 200 {
        for m in answer.json()["messages"].as_array().unwrap() {
            assert_eq!(m["data"]["i"].as_u64(), m["offset"].as_u64(), "a message answered at another offset");
            assert_eq!(m["data"]["pad"], big, "a message answered with other bytes");
        }
    } else {
        assert_eq!((answer.status, answer.json()["error"]["code"].clone()), (503, json!("engine_unavailable")));
    }
    // Publishing still works, and is read back.
    node.client.publish("fresh", "e", json!({ "i": 1 })).await;
    let fresh = messages_since(&node.client, "fresh", None).await;
    assert_eq!(data_of(fresh["messages"].as_array().unwrap()), [1]);
    terminate(node).await;
}

#[tokio::test]
async fn a_damaged_data_file_never_stops_the_start_nor_yields_a_wrong_message() {
    start_on_a_damaged_file("disk-damaged", |file| {
        let mut bytes = std::fs::read(file).unwrap();
        let middle = bytes.len() / 2;
        let end = (middle + 8192).min(bytes.len());
        for (k, b) in bytes[middle..end].iter_mut().enumerate() {
            *b = (k * 31 % 251) as u8;
        }
        std::fs::write(file, bytes).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_truncated_data_file_never_stops_the_start_nor_yields_a_wrong_message() {
    start_on_a_damaged_file("disk-truncated", |file| {
        let len = std::fs::metadata(file).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len / 3).unwrap();
    })
    .await;
}

/// Unmounts a tmpfs of the test's own when dropped.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// Mounts a tmpfs of `size` on `dir`: root only (CI runs as root); `None` elsewhere, the caller then says so and
/// passes.
fn small_disk<'a>(dir: &'a Path, size: &str) -> Option<Unmount<'a>> {
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    mounted.then_some(Unmount(dir))
}

/// Publishes 30 KB messages numbered from `from` to channel `big` until one is refused: the offsets and numbers of
/// those stored, and the refusal.
async fn publish_until_refused(client: &Client, from: usize) -> (Vec<(u64, i64)>, common::Response) {
    let big = "y".repeat(30_000);
    let mut stored = Vec::new();
    loop {
        let i = (from + stored.len()) as i64;
        let body = serde_json::to_vec(&json!({ "event": "e", "data": { "i": i, "pad": big } })).unwrap();
        let answer =
            client.request("POST", "/v1/channels/big/messages", &[("Content-Type", "application/json")], &body).await;
        if answer.status != 201 {
            return (stored, answer);
        }
        stored.push((answer.json()["offset"].as_u64().unwrap(), i));
        assert!(stored.len() < 1000, "the small disk never filled");
    }
}

/// The offsets and numbers of channel `big`'s retained messages.
async fn big_messages(client: &Client) -> Vec<(u64, i64)> {
    let messages = all_messages(client, "big").await;
    messages.iter().map(|m| (m["offset"].as_u64().unwrap(), m["data"]["i"].as_i64().unwrap())).collect()
}

#[tokio::test]
async fn a_full_disk_answers_507_and_loses_nothing_already_stored() {
    let dir = dir("disk-full");
    let Some(_unmount) = small_disk(&dir.0, "3m") else {
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    };
    let node = disk_node(&dir.0, &[("HERALD_FSYNC", "always")]).await;
    let (stored, refused) = publish_until_refused(&node.client, 1).await;
    assert_eq!((refused.status, refused.error_code()), (507, "storage_full".to_string()), "{}", refused.text());
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("full"));
    assert!(!stored.is_empty());
    let retained = &stored[stored.len().saturating_sub(100)..]; // history_size
    assert_eq!(big_messages(&node.client).await, retained, "every acknowledged message is still there");
    node.crash().await;
}

/// With `interval` the journal is what fills the disk: a publish it cannot take is refused whole (what the disk
/// took of it is cut off), so once there is room again the next publishes take the refused one's offset, and a
/// restart replays none of the refused one.
#[tokio::test]
async fn with_fsync_interval_a_full_disk_answers_507_loses_nothing_and_publishing_goes_on_once_there_is_room() {
    let dir = dir("disk-full-interval");
    let Some(_unmount) = small_disk(&dir.0, "8m") else {
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    };
    // Room the test gives back once the disk is full, enough for a restart to replay the journal into the store.
    let room = dir.0.join("room");
    std::fs::write(&room, vec![0u8; 5 * 1024 * 1024]).unwrap();
    let env = [("HERALD_FSYNC", "interval"), ("HERALD_FSYNC_INTERVAL_MS", "3600000")];
    let node = disk_node(&dir.0, &env).await;
    let (mut stored, refused) = publish_until_refused(&node.client, 1).await;
    assert_eq!((refused.status, refused.error_code()), (507, "storage_full".to_string()), "{}", refused.text());
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("full"), "{}", refused.text());
    assert!(!stored.is_empty());
    let retained = |stored: &[(u64, i64)]| stored[stored.len().saturating_sub(100)..].to_vec(); // history_size
    assert_eq!(big_messages(&node.client).await, retained(&stored), "every acknowledged message is still there");

    std::fs::remove_file(&room).unwrap();
    // Numbered past the refused one, which must never be read back.
    let refused_i = (stored.len() + 1) as i64;
    for i in refused_i + 1..=refused_i + 3 {
        let answer = node.client.publish("big", "e", json!({ "i": i })).await;
        assert_eq!(answer["offset"].as_u64().unwrap(), stored.last().unwrap().0 + 1, "the refused offset, given again");
        stored.push((answer["offset"].as_u64().unwrap(), i));
    }
    assert_eq!(big_messages(&node.client).await, retained(&stored));
    node.crash().await;

    let node = disk_node(&dir.0, &env).await;
    let after = big_messages(&node.client).await;
    assert!(after.iter().all(|&(_, i)| i != refused_i), "nothing of the refused publish: {after:?}");
    assert_eq!(after, retained(&stored), "every acknowledged message, at the offset it was answered with");
    node.crash().await;
}

#[tokio::test]
async fn the_history_budget_bounds_memory_only_and_older_messages_are_read_from_disk() {
    let dir = dir("disk-budget");
    let config = herald::config::Config {
        engine: herald::config::EngineKind::Disk,
        data_dir: Some(dir.0.clone()),
        max_history_bytes: 4000,
        ..herald::config::Config::default()
    };
    let config = std::sync::Arc::new(config);
    let hub = herald::hub::Hub::new(config.clone(), |deliver, metrics| herald::engine::start(config, deliver, metrics))
        .await
        .unwrap();
    let channel = herald_proto::ChannelName::new("orders").unwrap();
    for i in 1..=60 {
        let data = bytes::Bytes::from(format!("{{\"i\":{i}}}"));
        hub.publish(channel.clone(), herald_proto::EventName::default_event(), data).await.unwrap();
    }
    let stats = hub.stats();
    assert_eq!(stats.messages, 60, "the store keeps the whole history_size");
    assert!(stats.bytes <= 4000, "memory stays within max_history_bytes: {stats:?}");
    let read = hub.read(&channel, herald::hub::Start::Oldest, 1000).await.unwrap();
    let offsets: Vec<u64> = read.messages.iter().map(|m| m.message.position.offset).collect();
    assert_eq!((offsets, read.reset), ((1..=60).collect::<Vec<_>>(), false));
    assert_eq!(&read.messages[0].message.data[..], b"{\"i\":1}");
    hub.close().await;
}

/// Bytes of the files of Herald's own journal in `data_dir`.
fn journal_bytes(data_dir: &Path) -> u64 {
    files(&data_dir.join("journal")).iter().map(|(_, size)| size).sum()
}

#[tokio::test]
async fn with_fsync_interval_the_journal_starts_again_past_32_mib_and_a_kill_9_after_it_loses_nothing() {
    let dir = dir("rotation");
    let config = dir.0.join("herald.toml");
    std::fs::write(&config, "[default_namespace]\nhistory_size = 100000\n").unwrap();
    let data = dir.0.join("data");
    let args = ["--engine", "disk", "--data-dir", data.to_str().unwrap(), "--config", config.to_str().unwrap()];
    // The periodic fsync, where the journal starts again once it is 32 MiB long, every 50 ms.
    let env = [("HERALD_FSYNC", "interval"), ("HERALD_FSYNC_INTERVAL_MS", "50")];
    let node = Node::start(&args, &env).await;
    // 600 messages of 60,000 bytes of data: about 36 MB, past the journal's 32 MiB.
    let pad = "x".repeat(60_000);
    let mut acked = Vec::new();
    for i in 0..600i64 {
        let answer = node.client.publish("big", "e", json!({ "i": i, "pad": pad })).await;
        acked.push((answer["offset"].as_u64().unwrap(), i));
    }
    let published = 600 * 60_000;
    tokio::time::timeout(PATIENCE * 3, async {
        while journal_bytes(&data) >= published / 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the journal starts again, its messages in the fsynced store");
    // Some after the new start, then a crash.
    for i in 600..650i64 {
        let answer = node.client.publish("big", "e", json!({ "i": i, "pad": "" })).await;
        acked.push((answer["offset"].as_u64().unwrap(), i));
    }
    node.crash().await;
    let node = Node::start(&args, &env).await;
    assert_eq!(big_messages(&node.client).await, acked, "every acknowledged message once, at its offset");
    terminate(node).await;
}

/// `herald_channels` from the node's metrics.
async fn channels_held(client: &Client) -> u64 {
    let text = client.get("/metrics").await.text();
    let line = text.lines().find(|l| l.starts_with("herald_channels ")).expect("herald_channels is exported");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_channel_forgotten_and_published_again_under_a_new_epoch_is_replayed_after_kill_9_as_the_new_one() {
    let dir = dir("disk-forgotten");
    let config = dir.0.join("short.toml");
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(&config, "[default_namespace]\nhistory_ttl_secs = 1\n").unwrap();
    // An hour between flushes: after the forget, the new epoch's messages are in the journal only when killed.
    let env = [("HERALD_FSYNC", "interval"), ("HERALD_FSYNC_INTERVAL_MS", "3600000")];
    let args = ["--engine", "disk", "--data-dir", dir.0.to_str().unwrap(), "--config", config.to_str().unwrap()];
    let node = Node::start(&args, &env).await;
    let old = publish_i(&node.client, "orders", 1..=3).await;
    // The sweeper (every second) expires the three, then forgets the idle, empty channel.
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    while channels_held(&node.client).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the channel is forgotten in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new = publish_i(&node.client, "orders", 4..=6).await;
    assert_eq!(new[0]["offset"], 1, "a forgotten channel starts again: {}", new[0]);
    node.crash().await;

    // Started again with a long history, so that what it reads back cannot have expired meanwhile, and an old
    // message brought back by the replay would show.
    std::fs::write(&config, "[default_namespace]\nhistory_ttl_secs = 3600\n").unwrap();
    let node = Node::start(&args, &env).await;
    // The new epoch's messages, each at its offset, and nothing of the old one (forgotten before the kill).
    let kept = all_messages(&node.client, "orders").await;
    let offsets: Vec<_> = kept.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!((data_of(&kept), offsets), (vec![4, 5, 6], vec![1, 2, 3]));
    // A client of the new epoch resumes without a reset; one of the old epoch gets one.
    let resumed = messages_since(&node.client, "orders", Some(new[0]["cursor"].as_str().unwrap())).await;
    assert_eq!(
        (resumed["reset"].clone(), data_of(resumed["messages"].as_array().unwrap())),
        (json!(false), vec![5, 6])
    );
    let stale = messages_since(&node.client, "orders", Some(old[2]["cursor"].as_str().unwrap())).await;
    assert_eq!(stale["reset"], true);
    terminate(node).await;
}

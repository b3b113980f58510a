//! The admin page and its API: off without `admin_keys`, a page that holds no data, an API that answers `401`
//! without a valid key (each refusal counted), and with one a snapshot of the node and a stream of them.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, spawn, start, TestServer};
use herald::config::AdminKey;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "admin-key-0123456789";

async fn with_admin() -> TestServer {
    let mut config = config();
    config.admin_keys = vec![AdminKey(KEY.into())];
    config.namespaces.insert("orders".into(), config.default_namespace.clone());
    spawn(config).await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn without_admin_keys_the_page_and_the_api_do_not_exist() {
    let server = start().await;
    for path in ["/admin", "/admin/assets/admin.js", "/admin/api/snapshot", "/admin/api/events"] {
        let r = server.get_with(path, &[("Authorization", "Bearer anything-at-all-123")]).await;
        assert_eq!((r.status, r.error_code()), (404, "not_found".into()), "{path}");
    }
}

#[tokio::test]
async fn the_page_is_served_without_a_key_and_holds_no_data() {
    let server = with_admin().await;
    let page = server.get("/admin").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert!(page.text().contains("Admin key"), "{}", page.text());
    let script = server.get("/admin/assets/admin.js").await;
    assert_eq!((script.status, script.header("Content-Type")), (200, Some("text/javascript; charset=utf-8")));
    assert!(!script.text().contains("http://") && !script.text().contains("https://"), "nothing from elsewhere");
}

#[tokio::test]
async fn the_api_answers_401_without_a_valid_key_and_counts_each_refusal() {
    let server = with_admin().await;
    let missing = server.get("/admin/api/snapshot").await;
    assert_eq!((missing.status, missing.error_code()), (401, "admin_key_required".into()));
    let wrong = bearer("not-the-admin-key-0000");
    let wrong = server.get_with("/admin/api/events", &[("Authorization", &wrong)]).await;
    assert_eq!((wrong.status, wrong.error_code()), (401, "invalid_admin_key".into()));
    let publisher_scheme = server.get_with("/admin/api/snapshot", &[("Authorization", KEY)]).await;
    assert_eq!(publisher_scheme.status, 401, "the key travels as a bearer credential");
    assert_eq!(server.metric(r#"herald_refusals_total{reason="invalid_admin_key"}"#).await, 3);
}

#[tokio::test]
async fn a_snapshot_shows_connections_busiest_channels_namespaces_refusals_and_history() {
    let server = with_admin().await;
    let mut ws = server.ws().await;
    ws.call(serde_json::json!({ "op": "subscribe", "channel": "orders:1" })).await;
    server.publish_n("orders:1", 3).await;
    server.publish_n("news", 1).await;
    server.get("/admin/api/snapshot").await; // one refusal
    let r = server.get_with("/admin/api/snapshot", &[("Authorization", &bearer(KEY))]).await;
    assert_eq!(r.status, 200);
    let s = r.json();
    assert!(s["node"].as_str().unwrap().ends_with(&format!(":{}", server.addr.port())), "{s}");
    assert_eq!(s["connections"]["ws"], 1);
    assert_eq!((s["engine"]["name"].as_str(), s["engine"]["healthy"].as_bool()), (Some("memory"), Some(true)));
    assert_eq!(s["published"], 4);
    assert_eq!(s["busiest"][0]["channel"], "orders:1", "{s}");
    assert!(s["busiest"][0]["rate"].as_f64().unwrap() > 0.0, "{s}");
    let orders = s["namespaces"].as_array().unwrap().iter().find(|n| n["namespace"] == "orders").unwrap().clone();
    assert_eq!((orders["subscriptions"].as_u64(), orders["published"].as_u64()), (Some(1), Some(3)), "{s}");
    assert_eq!(s["refusals"]["admin_key_required"], Value::Null, "labels are the metric's reasons");
    assert_eq!(s["refusals"]["invalid_admin_key"], 1);
    assert_eq!(s["history"]["messages"], 4);
    assert!(s["history"]["bytes"].as_u64().unwrap() > 0 && s["history"]["max_bytes"].as_u64().unwrap() > 0);
}

/// Reads the admin event stream (HTTP/1.0, so the body is the bare stream) until `n` snapshots came.
async fn snapshots(server: &TestServer, n: usize) -> Vec<Value> {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /admin/api/events HTTP/1.0\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut chunk = [0; 8192];
    tokio::time::timeout(common::PATIENCE, async {
        while text.matches("event: snapshot\n").count() < n {
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the stream ended: {text}");
            text.push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    })
    .await
    .expect("snapshots in time");
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-type: text/event-stream"), "{text}");
    text.split("event: snapshot\n")
        .skip(1)
        .filter_map(|block| block.strip_prefix("data: ")?.split("\n\n").next())
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn the_event_stream_sends_a_snapshot_at_once_then_every_second() {
    let server = with_admin().await;
    let first = snapshots(&server, 1).await;
    assert_eq!(first[0]["connections"]["sse"], 0, "the admin stream is not a subscriber");
    server.publish_n("orders:1", 2).await;
    let both = snapshots(&server, 2).await;
    assert_eq!(both[1]["published"], 2);
    assert!(both[1]["time_ms"].as_u64() >= both[0]["time_ms"].as_u64());
}

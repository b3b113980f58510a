//! Operations: `/healthz`, `/metrics`, CORS, graceful shutdown, switching transports off, and the JSON answers
//! to unknown routes and wrong methods.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, spawn, start};
use herald::config::TransportKind;
use serde_json::json;

/// The series API.md documents, each with its Prometheus type.
const DOCUMENTED: [(&str, &str); 17] = [
    ("herald_connections", "gauge"),
    ("herald_messages_published_total", "counter"),
    ("herald_messages_delivered_total", "counter"),
    ("herald_slow_consumer_disconnects_total", "counter"),
    ("herald_history_reads_total", "counter"),
    ("herald_catch_up_reads_total", "counter"),
    ("herald_channels", "gauge"),
    ("herald_history_messages", "gauge"),
    ("herald_history_bytes", "gauge"),
    ("herald_refusals_total", "counter"),
    ("herald_publish_seconds", "histogram"),
    ("herald_fanout_seconds", "histogram"),
    ("herald_delivery_lag_seconds", "histogram"),
    ("herald_engine_seconds", "histogram"),
    ("herald_history_read_messages", "histogram"),
    ("herald_namespace_messages_published_total", "counter"),
    ("herald_namespace_messages_queued_total", "counter"),
];

/// The series labelled by transport.
const PER_TRANSPORT: [&str; 3] =
    ["herald_connections", "herald_messages_delivered_total", "herald_slow_consumer_disconnects_total"];

const ORIGIN: (&str, &str) = ("Origin", "https://shop.example");

#[tokio::test]
async fn healthz_answers_ok_and_names_the_engine() {
    let server = start().await;
    let r = server.get("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({ "status": "ok", "engine": "memory" }));
}

#[tokio::test]
async fn metrics_export_every_documented_series() {
    let server = start().await;
    let r = server.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").is_some_and(|t| t.starts_with("text/plain")), "{:?}", r.headers);
    let text = r.text();
    for (name, kind) in DOCUMENTED {
        assert!(text.lines().any(|l| l == format!("# TYPE {name} {kind}")), "no {kind} {name} in\n{text}");
    }
    for name in PER_TRANSPORT {
        for transport in ["ws", "sse", "long_poll", "poll"] {
            let series = format!("{name}{{transport=\"{transport}\"}}");
            assert_eq!(server.metric(&series).await, 0, "{series}");
        }
    }
}

#[tokio::test]
async fn histograms_time_publishing_fan_out_delivery_the_engine_and_history_reads() {
    let server = start().await;
    let mut ws = server.ws().await;
    ws.call(json!({ "op": "subscribe", "channel": "a" })).await;
    let mut sse = server.sse("channel=a", &[]).await;
    server.publish_n("a", 2).await;
    for _ in 0..2 {
        ws.recv().await;
        sse.next_data().await;
    }
    // The second message is written once the SSE stream is asked for its next chunk.
    server.publish_n("b", 1).await;
    assert_eq!(server.metric("herald_publish_seconds_count").await, 3);
    assert_eq!(server.metric(r#"herald_publish_seconds_bucket{le="+Inf"}"#).await, 3);
    assert_eq!(server.metric("herald_fanout_seconds_count").await, 2, "timed when someone subscribes");
    assert_eq!(server.metric(r#"herald_engine_seconds_count{op="publish"}"#).await, 3);
    assert_eq!(server.metric(r#"herald_engine_seconds_count{op="read"}"#).await, 2, "each subscription's start");
    assert_eq!(server.metric("herald_history_read_messages_count").await, 2);
    // The first live message of each connection is always timed, then one in LAG_SAMPLE.
    server.until_metric(r#"herald_delivery_lag_seconds_count{transport="ws"}"#, 1).await;
    server.until_metric(r#"herald_delivery_lag_seconds_count{transport="sse"}"#, 1).await;
    assert_eq!(server.metric(r#"herald_delivery_lag_seconds_count{transport="poll"}"#).await, 0);
}

#[tokio::test]
async fn per_namespace_series_have_one_value_per_configured_namespace_and_one_for_the_rest() {
    let mut config = config();
    config.namespaces.insert("chat".into(), config.default_namespace.clone());
    let server = spawn(config).await;
    let mut ws = server.ws().await;
    ws.call(json!({ "op": "subscribe", "channel": "chat:lobby" })).await;
    server.publish_n("chat:lobby", 2).await;
    for channel in ["orders:1", "news", "x:1", "y:2"] {
        server.publish_n(channel, 1).await;
    }
    let published = |ns: &str| format!("herald_namespace_messages_published_total{{namespace=\"{ns}\"}}");
    assert_eq!(server.metric(&published("chat")).await, 2);
    assert_eq!(server.metric(&published("(default)")).await, 4, "unconfigured namespaces share one value");
    let queued = r#"herald_namespace_messages_queued_total{namespace="chat"}"#;
    assert_eq!(server.metric(queued).await, 2);
    assert_eq!(server.metric(r#"herald_namespace_subscriptions{namespace="chat"}"#).await, 1);
    let text = server.get("/metrics").await.text();
    let series = text.lines().filter(|l| l.starts_with("herald_namespace_messages_published_total{")).count();
    assert_eq!(series, 2, "never a series per channel:\n{text}");
    drop(ws);
    server.until_metric(r#"herald_namespace_subscriptions{namespace="chat"}"#, 0).await;
}

#[tokio::test]
async fn metrics_count_published_messages_and_history() {
    let server = start().await;
    server.publish_n("a", 2).await;
    server.publish_n("b", 1).await;
    assert_eq!(server.metric("herald_messages_published_total").await, 3);
    assert_eq!(server.metric("herald_channels").await, 2);
    assert_eq!(server.metric("herald_history_messages").await, 3);
    assert!(server.metric("herald_history_bytes").await > 0);
}

#[tokio::test]
async fn metrics_count_history_reads() {
    let server = start().await;
    server.publish_n("a", 2).await;
    assert_eq!(server.get("/v1/channels/a/messages").await.status, 200);
    assert_eq!(server.get("/v1/poll?channel=a&channel=b").await.status, 200);
    assert_eq!(server.metric("herald_history_reads_total").await, 3, "one read per channel a request names");
    for by in ["subscriber", "node"] {
        let series = format!("herald_catch_up_reads_total{{by=\"{by}\"}}");
        assert_eq!(server.metric(&series).await, 0, "no live feed had a gap");
    }
}

#[tokio::test]
async fn metrics_count_delivered_messages_by_transport() {
    let server = start().await;
    let mut ws = server.ws().await;
    ws.call(json!({ "op": "subscribe", "channel": "a" })).await;
    let mut sse = server.sse("channel=a", &[]).await;
    server.publish_n("a", 2).await;
    for _ in 0..2 {
        ws.recv().await;
        sse.next_data().await;
    }
    server.get("/v1/channels/a/messages").await;
    server.get("/v1/poll?channel=a&limit=1").await;
    server.get("/v1/channels/a/latest").await;

    assert_eq!(server.metric(r#"herald_messages_delivered_total{transport="ws"}"#).await, 2);
    assert_eq!(server.metric(r#"herald_messages_delivered_total{transport="sse"}"#).await, 2);
    assert_eq!(server.metric(r#"herald_messages_delivered_total{transport="poll"}"#).await, 2 + 1 + 1);
}

#[tokio::test]
async fn metrics_count_a_held_long_poll_and_its_delivery() {
    let server = start().await;
    let client = server.client;
    let poll = tokio::spawn(async move { client.get("/v1/poll?channel=a&wait=30").await });
    server.until_metric(r#"herald_connections{transport="long_poll"}"#, 1).await;
    server.publish_n("a", 1).await;
    assert_eq!(poll.await.unwrap().json()["messages"].as_array().unwrap().len(), 1);
    assert_eq!(server.metric(r#"herald_messages_delivered_total{transport="long_poll"}"#).await, 1);
    assert_eq!(server.metric(r#"herald_connections{transport="long_poll"}"#).await, 0);
}

#[tokio::test]
async fn metrics_count_open_connections_by_transport() {
    let server = start().await;
    let ws = server.ws().await;
    let sse = server.sse("channel=a", &[]).await;
    server.until_metric(r#"herald_connections{transport="ws"}"#, 1).await;
    assert_eq!(server.metric(r#"herald_connections{transport="sse"}"#).await, 1);
    drop((ws, sse));
    server.until_metric(r#"herald_connections{transport="ws"}"#, 0).await;
    server.until_metric(r#"herald_connections{transport="sse"}"#, 0).await;
}

#[tokio::test]
async fn a_preflight_is_answered_204_with_what_may_be_sent() {
    let server = start().await;
    let headers =
        [ORIGIN, ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "content-type")];
    let r = server.request("OPTIONS", "/v1/channels/a/messages", &headers, b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let methods = r.header("Access-Control-Allow-Methods").unwrap_or_default();
    assert!(methods.contains("GET") && methods.contains("POST"), "{methods}");
    let allowed = r.header("Access-Control-Allow-Headers").unwrap_or_default().to_ascii_lowercase();
    for header in ["content-type", "if-none-match", "last-event-id"] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
}

#[tokio::test]
async fn any_origin_may_read_an_answer_and_its_herald_headers_by_default() {
    let server = start().await;
    server.publish("a", "tick", json!(1)).await;
    let r = server.get_with("/v1/channels/a/latest", &[ORIGIN]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let exposed = r.header("Access-Control-Expose-Headers").unwrap_or_default().to_ascii_lowercase();
    for header in ["etag", "x-herald-event", "x-herald-offset"] {
        assert!(exposed.contains(header), "{header} not in {exposed}");
    }
}

#[tokio::test]
async fn an_error_carries_the_cors_headers_so_a_page_can_read_it() {
    let server = start().await;
    let r = server.get_with("/v1/channels/a%20b/latest", &[ORIGIN]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
}

#[tokio::test]
async fn with_cors_origins_set_only_a_listed_origin_is_allowed() {
    let mut config = config();
    config.cors_origins = vec!["https://shop.example".into()];
    let server = spawn(config).await;

    let listed = server.get_with("/healthz", &[ORIGIN]).await;
    assert_eq!(listed.header("Access-Control-Allow-Origin"), Some("https://shop.example"));
    assert!(listed.header("Vary").is_some_and(|v| v.contains("Origin")), "{:?}", listed.headers);

    let foreign = server.get_with("/healthz", &[("Origin", "https://evil.example")]).await;
    assert_eq!(foreign.header("Access-Control-Allow-Origin"), None);
    let preflight = [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")];
    let foreign = server.request("OPTIONS", "/v1/channels/a/messages", &preflight, b"").await;
    assert_eq!(foreign.header("Access-Control-Allow-Origin"), None);
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_ends_streams_answers_held_polls_and_drains() {
    let server = start().await;
    let mut ws = server.ws().await;
    ws.call(json!({ "op": "subscribe", "channel": "a" })).await;
    let mut sse = server.sse("channel=a", &[]).await;
    sse.next().await.unwrap();
    let client = server.client;
    let poll = tokio::spawn(async move { client.get("/v1/poll?channel=a&wait=30").await });
    server.until_metric(r#"herald_connections{transport="long_poll"}"#, 1).await;

    assert!(server.stop().await, "everything finished within the grace");
    assert_eq!(ws.close_code().await, Some(1001));
    assert_eq!(sse.next().await, None, "the stream ended");
    // Answered at once, not after its 30 s wait.
    let poll = tokio::time::timeout(Duration::from_secs(5), poll).await.expect("answered at once").unwrap();
    assert_eq!((poll.status, poll.json()["messages"].clone()), (200, json!([])));
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_a_request_that_outlives_the_grace() {
    let mut config = config();
    config.shutdown_grace = Duration::from_secs(1);
    let server = spawn(config).await;
    // A publisher that announced a body and never sends all of it: its request cannot finish.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head =
        "POST /v1/channels/a/messages HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes()).await.unwrap();
    // A full round trip after it: the stalled connection was accepted and its handler is waiting for the body.
    assert_eq!(server.get("/healthz").await.status, 200);

    assert!(!server.stop().await, "a request was still in flight when the grace ended");
}

#[tokio::test]
async fn a_disabled_transport_answers_404_transport_disabled() {
    let mut config = config();
    config.transports = vec![TransportKind::Poll];
    let server = spawn(config).await;

    let sse = server.get("/v1/sse?channel=a").await;
    assert_eq!((sse.status, sse.error_code()), (404, "transport_disabled".into()));
    let upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let ws = server.get_with("/v1/ws", &upgrade).await;
    assert_eq!((ws.status, ws.error_code()), (404, "transport_disabled".into()));
    let plain = server.get("/v1/ws").await;
    assert_eq!((plain.status, plain.error_code()), (404, "transport_disabled".into()));
    assert_eq!(server.get("/v1/channels/a/messages").await.status, 200, "polling still works");
}

#[tokio::test]
async fn with_polling_disabled_publishing_still_works() {
    let mut config = config();
    config.transports = vec![TransportKind::WebSocket];
    let server = spawn(config).await;
    server.publish("a", "tick", json!(1)).await;
    for path in ["/v1/channels/a/messages", "/v1/channels/a/latest", "/v1/poll?channel=a"] {
        let r = server.get(path).await;
        assert_eq!((r.status, r.error_code()), (404, "transport_disabled".into()), "{path}");
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_not_found_in_json() {
    let server = start().await;
    let r = server.get("/v2/nothing").await;
    assert_eq!((r.status, r.error_code()), (404, "not_found".into()));
}

#[tokio::test]
async fn a_wrong_method_is_405_method_not_allowed_in_json_with_an_allow_header() {
    let server = start().await;
    let r = server.request("DELETE", "/v1/channels/a/messages", &[], b"").await;
    assert_eq!((r.status, r.error_code()), (405, "method_not_allowed".into()));
    let allow = r.header("Allow").unwrap_or_else(|| panic!("no Allow header: {:?}", r.headers));
    let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods.sort_unstable();
    assert!(methods == ["GET", "HEAD", "POST"] || methods == ["GET", "POST"], "{allow}");
}

/// Whether the server closed `stream`: its next read ends (after anything it had still to send).
async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(common::PATIENCE, tokio::io::AsyncReadExt::read_to_end(stream, &mut rest))
        .await
        .is_ok_and(|read| read.is_err() || rest.is_empty())
}

/// Sends a whole `GET /healthz` on a kept-alive connection and reads its answer.
async fn healthz_on(stream: &mut tokio::net::TcpStream) {
    let request = b"GET /healthz HTTP/1.1\r\nHost: herald.test\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(stream, request).await.unwrap();
    healthz_answer(stream).await;
}

/// Reads the answer of a `GET /healthz`.
async fn healthz_answer(stream: &mut tokio::net::TcpStream) {
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("\"ok\"") {
        let mut chunk = [0; 1024];
        let n = tokio::io::AsyncReadExt::read(stream, &mut chunk).await.unwrap();
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
}

/// A server that gives a request head 5 s.
async fn five_second_head_server() -> common::TestServer {
    let mut config = config();
    config.request_head_timeout = Duration::from_secs(5);
    spawn(config).await
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_whole_request_head_within_request_head_timeout_is_closed() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let server = five_second_head_server().await;
    let connect = || TcpStream::connect(server.addr);
    let (mut silent, mut slow, mut partial, mut kept_alive) =
        (connect().await.unwrap(), connect().await.unwrap(), connect().await.unwrap(), connect().await.unwrap());
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald.test\r\n").await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    healthz_on(&mut kept_alive).await;

    // Within the timeout, each is still served: the first bytes, the rest of a head, the next request.
    tokio::time::sleep(Duration::from_secs(4)).await;
    healthz_on(&mut silent).await;
    slow.write_all(b"Host: herald.test\r\n\r\n").await.unwrap();
    healthz_answer(&mut slow).await;
    healthz_on(&mut kept_alive).await;

    // Past it: nothing at all, half a head, and idle after an answer are all closed.
    let mut silent_too = connect().await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(closed(&mut silent_too).await, "a connection that sent nothing");
    assert!(closed(&mut partial).await, "a head never finished");
    assert!(closed(&mut kept_alive).await, "an idle kept-alive connection");
    drop((silent, slow));
}

#[tokio::test(start_paused = true)]
async fn the_first_request_head_has_request_head_timeout_from_the_connection_start_not_from_its_first_byte() {
    use tokio::io::AsyncWriteExt;
    let server = five_second_head_server().await;
    let mut trickle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // One byte late in the first timeout, then the rest within a timeout of that byte but past the first.
    trickle.write_all(b"G").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = trickle.write_all(b"ET /healthz HTTP/1.1\r\nHost: herald.test\r\n\r\n").await;
    assert!(closed(&mut trickle).await, "closed at 5 s, not served at 6 s");
}

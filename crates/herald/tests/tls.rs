//! HTTPS in the binary: HTTP/1.1 and HTTP/2 chosen by ALPN on one TLS listener, SSE streams as streams of one
//! HTTP/2 connection with the same limits and metrics, a certificate replaced on disk served to the next
//! connection, HSTS, the plain-HTTP redirect, and handshakes that fail or never finish.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tls::{connect, get, http1, http2, read_until, served_certificate, text, TestCa};
use common::PATIENCE;
use herald::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server on 127.0.0.1:0 with the CA's certificate `name`.
async fn https(ca: &TestCa, name: &str, tweak: impl FnOnce(&mut Config)) -> common::TestServer {
    let (cert_file, key_file, _) = ca.issue(name);
    let mut config = Config { tls_cert_file: Some(cert_file), tls_key_file: Some(key_file), ..common::config() };
    tweak(&mut config);
    common::spawn(config).await
}

/// Waits until `/metrics`, read over `h2`, has the line `line`.
async fn until_metric(
    h2: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    line: &str,
) {
    tokio::time::timeout(PATIENCE, async {
        while !text(h2.send_request(get("/metrics")).await.unwrap()).await.lines().any(|l| l == line) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/metrics never said {line}"));
}

#[tokio::test]
async fn alpn_chooses_http2_or_http1_on_the_same_listener_and_hsts_is_sent() {
    let ca = TestCa::new("alpn");
    let server = https(&ca, "alpn", |c| c.hsts_max_age_secs = 31_536_000).await;

    let mut h2 = http2(connect(server.addr, "localhost", ca.client_config(&[b"h2", b"http/1.1"])).await).await;
    let answer = h2.send_request(get("/healthz")).await.unwrap();
    assert_eq!((answer.status().as_u16(), answer.version()), (200, hyper::Version::HTTP_2));
    assert_eq!(answer.headers()["strict-transport-security"], "max-age=31536000");

    let stream = connect(server.addr, "localhost", ca.client_config(&[b"http/1.1"])).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = http1(stream).await;
    let answer = h1.send_request(get("/healthz")).await.unwrap();
    assert_eq!((answer.status().as_u16(), answer.version()), (200, hyper::Version::HTTP_11));
    assert_eq!(answer.headers()["strict-transport-security"], "max-age=31536000");

    // Both connections are open, and counted by protocol.
    let metrics = text(h2.send_request(get("/metrics")).await.unwrap()).await;
    assert!(metrics.contains("herald_http_connections{protocol=\"h2\",tls=\"true\"} 1"), "{metrics}");
    assert!(metrics.contains("herald_http_connections{protocol=\"http/1.1\",tls=\"true\"} 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn without_http2_only_http1_is_offered() {
    let ca = TestCa::new("no-h2");
    let server = https(&ca, "no-h2", |c| c.http2 = false).await;
    let stream = connect(server.addr, "localhost", ca.client_config(&[b"h2", b"http/1.1"])).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = http1(stream).await.send_request(get("/healthz")).await.unwrap();
    assert!(answer.headers().get("strict-transport-security").is_none(), "no HSTS unless configured");
    server.stop().await;
}

#[tokio::test]
async fn sse_streams_are_streams_of_one_http2_connection_and_each_gets_every_message() {
    let ca = TestCa::new("h2-sse");
    let server = https(&ca, "h2-sse", |_| {}).await;
    let mut h2 = http2(connect(server.addr, "localhost", ca.client_config(&[b"h2"])).await).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let answer = h2.send_request(get("/v1/sse?channel=news")).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "text/event-stream");
        bodies.push(answer.into_body());
    }
    until_metric(&mut h2, "herald_connections{transport=\"sse\"} 3").await;
    server.publish_burst("news", 2).await;
    for body in &mut bodies {
        let seen = read_until(body, "data: {\"n\":2}").await;
        assert!(seen.contains("data: {\"n\":1}\n"), "{seen}");
    }
    let metrics = text(h2.send_request(get("/metrics")).await.unwrap()).await;
    assert!(metrics.contains("herald_http_connections{protocol=\"h2\",tls=\"true\"} 1"), "{metrics}");
    assert!(metrics.contains("herald_messages_delivered_total{transport=\"sse\"} 6"), "{metrics}");
    drop(bodies);
    until_metric(&mut h2, "herald_connections{transport=\"sse\"} 0").await;
    server.stop().await;
}

#[tokio::test]
async fn the_per_address_limit_counts_streams_not_connections() {
    let ca = TestCa::new("h2-limit");
    let server = https(&ca, "h2-limit", |c| c.max_connections_per_ip = 2).await;
    let mut h2 = http2(connect(server.addr, "localhost", ca.client_config(&[b"h2"])).await).await;
    let first = h2.send_request(get("/v1/sse?channel=a")).await.unwrap();
    let second = h2.send_request(get("/v1/sse?channel=a")).await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = h2.send_request(get("/v1/sse?channel=a")).await.unwrap();
    assert_eq!(third.status(), 429);
    assert!(text(third).await.contains("too_many_connections"));
    let metrics = text(h2.send_request(get("/metrics")).await.unwrap()).await;
    assert!(metrics.contains("herald_refusals_total{reason=\"max_connections_per_ip\"} 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn the_stream_limit_is_announced_to_http2_clients() {
    let ca = TestCa::new("h2-streams");
    let server = https(&ca, "h2-streams", |c| c.http2_max_streams = 7).await;
    let stream = connect(server.addr, "localhost", ca.client_config(&[b"h2"])).await;
    let (mut client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    // The server's SETTINGS arrive with the first exchange.
    let (answer, _) = client.send_request(get("/healthz").map(|_| ()), true).unwrap();
    answer.await.unwrap();
    assert_eq!(client.current_max_send_streams(), 7);
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_the_next_connection() {
    let ca = TestCa::new("reload");
    let (cert_file, key_file, first) = ca.issue("first");
    let config =
        Config { tls_cert_file: Some(cert_file.clone()), tls_key_file: Some(key_file.clone()), ..common::config() };
    let server = common::spawn(config).await;
    let before = connect(server.addr, "localhost", ca.client_config(&[b"http/1.1"])).await;
    assert_eq!(served_certificate(&before), first);

    let (new_cert, new_key, second) = ca.issue("second");
    common::tls::write_whole(&key_file, &std::fs::read(new_key).unwrap());
    common::tls::write_whole(&cert_file, &std::fs::read(new_cert).unwrap());
    let after = connect(server.addr, "localhost", ca.client_config(&[b"http/1.1"])).await;
    assert_eq!(served_certificate(&after), second, "the new certificate, without a restart");
    // The connection made before goes on with its own.
    let answer = http1(before).await.send_request(get("/healthz")).await.unwrap();
    assert_eq!(answer.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn certificate_files_that_do_not_load_stop_the_start() {
    let ca = TestCa::new("bad-files");
    let (cert_file, _, _) = ca.issue("bad");
    let config = Config { tls_cert_file: Some(cert_file.clone()), tls_key_file: Some(cert_file), ..common::config() };
    let refused = herald::Server::bind(config).await.err().expect("refused").to_string();
    assert!(refused.contains("bad.pem") && refused.contains("key"), "{refused}");
    let config = Config {
        tls_cert_file: Some(ca.dir.join("missing.pem")),
        tls_key_file: Some(ca.dir.join("missing.key")),
        ..common::config()
    };
    let refused = herald::Server::bind(config).await.err().expect("refused").to_string();
    assert!(refused.starts_with("tls_cert_file: cannot read"), "{refused}");
}

#[tokio::test]
async fn plain_http_on_the_redirect_listener_is_sent_to_https() {
    let ca = TestCa::new("redirect");
    let server = https(&ca, "redirect", |c| c.redirect_listen = Some(([127, 0, 0, 1], 0).into())).await;
    let redirect = server.redirect.expect("a redirect listener");
    let mut socket = tokio::net::TcpStream::connect(redirect).await.unwrap();
    socket.write_all(b"GET /v1/sse?channel=a HTTP/1.1\r\nHost: example.test:80\r\n\r\n").await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(PATIENCE, socket.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 308 "), "{answer}");
    let location = format!("location: https://example.test:{}/v1/sse?channel=a\r\n", server.addr.port());
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_failed_handshake_is_counted_and_a_silent_one_is_dropped() {
    let ca = TestCa::new("handshakes");
    let server = https(&ca, "handshakes", |c| c.request_head_timeout = Duration::from_secs(1)).await;
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut rest)).await.expect("closed");
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let closed = tokio::time::timeout(PATIENCE, silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a client that never says hello is not kept");
    let mut h1 = http1(connect(server.addr, "localhost", ca.client_config(&[b"http/1.1"])).await).await;
    let metrics = text(h1.send_request(get("/metrics")).await.unwrap()).await;
    assert!(metrics.contains("herald_tls_handshake_failures_total 2"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn an_http2_connection_without_streams_is_closed_after_the_head_timeout() {
    let ca = TestCa::new("h2-idle");
    let server = https(&ca, "h2-idle", |c| c.request_head_timeout = Duration::from_secs(1)).await;
    let stream = connect(server.addr, "localhost", ca.client_config(&[b"h2"])).await;
    let (mut client, connection) = h2::client::handshake(stream).await.unwrap();
    let closed = tokio::spawn(connection);
    let (answer, _) = client.send_request(get("/healthz").map(|_| ()), true).unwrap();
    assert_eq!(answer.await.unwrap().status(), 200);
    let ended = tokio::time::timeout(PATIENCE, closed).await;
    assert!(ended.is_ok(), "the idle connection was closed");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_http2_event_streams() {
    let ca = TestCa::new("h2-shutdown");
    let server = https(&ca, "h2-shutdown", |_| {}).await;
    let mut h2 = http2(connect(server.addr, "localhost", ca.client_config(&[b"h2"])).await).await;
    let mut body = h2.send_request(get("/v1/sse?channel=a")).await.unwrap().into_body();
    read_until(&mut body, "retry:").await;
    assert!(server.stop().await, "drained in time");
}

#[tokio::test]
async fn the_rust_client_speaks_https_sharing_http2_connections_and_websocket_over_http1() {
    use herald_client::{Event, SubscribeOptions, Transport};
    let ca = TestCa::new("client");
    let server = https(&ca, "client", |_| {}).await;
    let roots = std::fs::read(ca.root_file()).unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let client = herald_client::Client::new(&url).unwrap().with_tls_roots(&roots, true).unwrap().with_http2_sharing(10);
    let mut subscriptions = Vec::new();
    for transport in [Transport::Sse, Transport::Sse, Transport::WebSocket] {
        subscriptions.push(client.subscribe(SubscribeOptions::new(["news"], transport)).await.unwrap());
    }
    let mut h2 = http2(connect(server.addr, "localhost", ca.client_config(&[b"h2"])).await).await;
    until_metric(&mut h2, "herald_connections{transport=\"sse\"} 2").await;
    until_metric(&mut h2, "herald_connections{transport=\"ws\"} 1").await;
    // The two SSE streams share one HTTP/2 connection (the test's own is the other). The WebSocket was an
    // HTTP/1.1 upgrade: once upgraded it counts as a WebSocket, no longer as an HTTP connection.
    until_metric(&mut h2, "herald_http_connections{protocol=\"h2\",tls=\"true\"} 2").await;
    client.publish("news", None, &serde_json::json!({"n": 1})).await.unwrap();
    for subscription in &mut subscriptions {
        let event = tokio::time::timeout(PATIENCE, subscription.next()).await.unwrap().unwrap().unwrap();
        let Event::Message(envelope) = event else { panic!("a message, not {event:?}") };
        assert_eq!(envelope.offset, 1);
    }
    server.stop().await;
}

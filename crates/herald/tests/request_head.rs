//! Request heads over the limits (docs/API.md, *Limits*): a URL over 65,534 bytes is `414`, a head over
//! 417,792 bytes or with more than 100 headers is `431`, a malformed one is `400`, each with a JSON error body
//! like every other error; a head within the limits is served.

#![allow(clippy::unwrap_used)]

mod common;

use common::{start, TestServer, PATIENCE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_URL: usize = 65_534;
const MAX_HEAD: usize = 8192 + 4096 * 100;

/// Sends `head` as it is and reads the answer: its status and JSON body. The server may answer and close before
/// it has read everything, so the answer is read while the head is written, and a failed write is no failure.
async fn send(server: &TestServer, head: String) -> (u16, Value) {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        writer
    });
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, reader.read(&mut chunk)).await.expect("an answer in time") {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    drop(writing.await);
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("an HTTP answer: {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {body:?}")))
}

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: herald.test\r\nConnection: close\r\n{headers}\r\n")
}

/// `/v1/poll?channel=a&x=…`, padded to `len` bytes.
fn path_of(len: usize) -> String {
    let path = "/v1/poll?channel=a&x=";
    format!("{path}{}", "y".repeat(len - path.len()))
}

#[tokio::test]
async fn a_url_over_65534_bytes_is_414_in_json() {
    let server = start().await;
    let (status, body) = send(&server, get(&path_of(MAX_URL + 1), "")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (414, Some("url_too_long")), "{body}");
}

#[tokio::test]
async fn a_url_of_65534_bytes_is_served() {
    let server = start().await;
    let (status, body) = send(&server, get(&path_of(MAX_URL), "")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_request_head_over_417792_bytes_is_431_in_json() {
    let server = start().await;
    let header = format!("X-Padding: {}\r\n", "p".repeat(MAX_HEAD));
    let (status, body) = send(&server, get("/healthz", &header)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (431, Some("headers_too_large")), "{body}");
}

#[tokio::test]
async fn more_than_100_headers_is_431_in_json() {
    let server = start().await;
    let headers: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, body) = send(&server, get("/healthz", &headers)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (431, Some("headers_too_large")), "{body}");
}

#[tokio::test]
async fn a_malformed_request_head_is_400_in_json() {
    let server = start().await;
    let (status, body) = send(&server, "GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n".into()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
}

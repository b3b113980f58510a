//! The one test harness: a real Herald bound on 127.0.0.1:0, and raw clients that speak HTTP/1.0, SSE and
//! WebSocket over real sockets, so every byte the server writes can be asserted.
//!
//! HTTP/1.0 is used on purpose: the server then delimits a body by closing the connection instead of chunked
//! encoding, so an SSE stream can be read as it is written, with no decoding in the test.

// A harness panics on anything unexpected: that is how a test fails.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod cluster;
pub mod node;
pub mod pusher;
pub mod receiver;
pub mod tls;
pub mod tokens;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald::config::Config;
use herald::hub::Hub;
use herald::shutdown::Shutdown;
use herald::Server;
use herald_proto::{ChannelName, Cursor, EventName, Position};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

thread_local! {
    /// Whether this test's SSE streams go through hyper's path instead of the direct writer.
    static SSE_VIA_HYPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sends this test's SSE requests with a head longer than the server's direct path takes (4 KiB), so hyper serves
/// them. A `#[tokio::test]` runs on one thread, its spawned tasks included, so this holds for the whole test.
pub fn sse_via_hyper() {
    SSE_VIA_HYPER.set(true);
}

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A new, empty directory for one test's files (a disk engine's data dir), under the system's temporary
/// directory; the test removes it.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("herald-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Defaults, listening on a free port.
pub fn config() -> Config {
    Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Config::default() }
}

/// A running server; derefs to a [`Client`] of it.
pub struct TestServer {
    pub client: Client,
    pub hub: Arc<Hub>,
    pub shutdown: Shutdown,
    /// The plain-HTTP redirect listener's address, when one is configured.
    pub redirect: Option<SocketAddr>,
    handle: JoinHandle<std::io::Result<bool>>,
}

pub async fn spawn(config: Config) -> TestServer {
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let hub = server.hub().clone();
    let shutdown = server.shutdown().clone();
    let redirect = server.redirect_addr().map(|addr| addr.expect("redirect addr"));
    let handle = tokio::spawn(server.run());
    TestServer { client: Client { addr, local: None }, hub, shutdown, redirect, handle }
}

pub async fn start() -> TestServer {
    spawn(config()).await
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An answer's status, its headers, and where its body starts.
type Head = (u16, Vec<(String, String)>, usize);

fn split_head(raw: &[u8]) -> Option<Head> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))).collect();
    Some((status, headers, end + 4))
}

fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.0\r\nHost: herald.test\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

impl std::ops::Deref for TestServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Raw clients of one server; `Copy`, so a spawned task can take one.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub addr: SocketAddr,
    /// The address connections leave from (another one of `127.0.0.0/8` plays another client).
    pub local: Option<IpAddr>,
}

impl Client {
    /// The same client, connecting from `ip` (e.g. `127.0.0.2`): another address, for the server's limits.
    pub fn coming_from(self, ip: &str) -> Client {
        Client { local: Some(ip.parse().unwrap()), ..self }
    }

    async fn connect(&self) -> TcpStream {
        let stream = match self.local {
            None => TcpStream::connect(self.addr).await.expect("connect"),
            Some(ip) => {
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(ip, 0)).expect("bind the local address");
                socket.connect(self.addr).await.expect("connect")
            }
        };
        // Without it, a small write after another (a pong, then a request) waits for the server's delayed ACK,
        // real milliseconds in which a paused clock jumps to its next timer.
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// A WebSocket handshake on `path` (e.g. `/v1/ws?token=…`) with extra headers; a refused handshake gives the
    /// server's HTTP answer.
    pub async fn ws_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, Response> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}{path}", self.addr).into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let stream = self.connect().await;
        match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await {
            Ok((socket, _)) => Ok(Ws { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => Err(Response {
                status: answer.status().as_u16(),
                headers: answer
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect(),
                body: answer.body().clone().unwrap_or_default(),
            }),
            Err(other) => panic!("websocket handshake: {other}"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One request; reads the whole answer.
    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut stream = self.connect().await;
        stream.write_all(&request_bytes(method, path, headers, body)).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(PATIENCE * 6, stream.read_to_end(&mut raw)).await.expect("answer in time").expect("read");
        let (status, headers, at) = split_head(&raw).expect("an HTTP answer");
        Response { status, headers, body: raw[at..].to_vec() }
    }

    /// One request to a server that may die meanwhile: `None` when the connection fails or the answer is cut.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Response> {
        let mut stream = TcpStream::connect(self.addr).await.ok()?;
        stream.write_all(&request_bytes(method, path, headers, body)).await.ok()?;
        let mut raw = Vec::new();
        tokio::time::timeout(PATIENCE * 6, stream.read_to_end(&mut raw)).await.ok()?.ok()?;
        let (status, headers, at) = split_head(&raw)?;
        Some(Response { status, headers, body: raw[at..].to_vec() })
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"").await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers, b"").await
    }

    /// Publishes over HTTP; panics unless the answer is 201.
    pub async fn publish(&self, channel: &str, event: &str, data: Value) -> Value {
        let body = serde_json::to_vec(&serde_json::json!({ "event": event, "data": data })).unwrap();
        let path = format!("/v1/channels/{}/messages", channel.replace('/', "%2F"));
        let r = self.request("POST", &path, &[("Content-Type", "application/json")], &body).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    /// Publishes `n` messages `{"n": i}` (i from 1) over HTTP, event `tick`; returns the answers.
    pub async fn publish_n(&self, channel: &str, n: usize) -> Vec<Value> {
        let mut answers = Vec::with_capacity(n);
        for i in 1..=n {
            answers.push(self.publish(channel, "tick", serde_json::json!({ "n": i })).await);
        }
        answers
    }

    /// A metric's value, e.g. `herald_connections{transport="long_poll"}`.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = self.get("/metrics").await.text();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// Waits until a metric has `value` (e.g. a long poll is being held).
    pub async fn until_metric(&self, series: &str, value: u64) {
        tokio::time::timeout(PATIENCE, async {
            while self.metric(series).await != value {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{series} never reached {value}"));
    }

    pub async fn sse(&self, query: &str, headers: &[(&str, &str)]) -> Sse {
        let mut stream = self.connect().await;
        let padding = "p".repeat(5000);
        let mut headers = headers.to_vec();
        if SSE_VIA_HYPER.get() {
            headers.push(("X-Padding", &padding));
        }
        stream.write_all(&request_bytes("GET", &format!("/v1/sse?{query}"), &headers, b"")).await.expect("write");
        let mut sse = Sse { stream, buffer: Vec::new(), status: 0, headers: Vec::new() };
        loop {
            if let Some((status, headers, at)) = split_head(&sse.buffer) {
                sse.status = status;
                sse.headers = headers;
                sse.buffer.drain(..at);
                if sse.status == 200 {
                    // The direct writer closes the connection to end the body and says so; hyper's does not.
                    let direct = sse.header("Connection") == Some("close");
                    assert_eq!(direct, !SSE_VIA_HYPER.get(), "the stream was served by the writer the test asked for");
                }
                return sse;
            }
            assert!(sse.fill().await, "connection closed before the headers");
        }
    }

    pub async fn ws(&self) -> Ws {
        let stream = self.connect().await;
        let (socket, _) =
            tokio_tungstenite::client_async(format!("ws://{}/v1/ws", self.addr), MaybeTlsStream::Plain(stream))
                .await
                .expect("websocket handshake");
        Ws { socket }
    }
}

impl TestServer {
    /// Publishes `n` messages `{"n": i}` (i from 1) in-process, without yielding between them.
    pub async fn publish_burst(&self, channel: &str, n: usize) {
        for i in 1..=n {
            let data = Bytes::from(format!("{{\"n\":{i}}}"));
            self.hub.publish(ChannelName::new(channel).unwrap(), EventName::default_event(), data).await.unwrap();
        }
    }

    /// Triggers shutdown and waits for the server to stop; returns whether it drained in time.
    pub async fn stop(self) -> bool {
        self.shutdown.trigger();
        tokio::time::timeout(PATIENCE * 3, self.handle).await.expect("stops in time").expect("join").expect("serve")
    }
}

/// One SSE event as a browser would see it (comments kept apart).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comment: Option<String>,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("data")).expect("JSON data")
    }
}

pub struct Sse {
    stream: TcpStream,
    buffer: Vec<u8>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Sse {
    /// The socket, for tests that look at how the connection ends.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n =
            tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await.expect("stream stalled").unwrap_or(0);
        self.buffer.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next block (event, comment or preamble), or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 2);
                let mut event = Event::default();
                for line in block.split('\n') {
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    let slot = match field {
                        "" => &mut event.comment,
                        "id" => &mut event.id,
                        "event" => &mut event.event,
                        "retry" => &mut event.retry,
                        "data" => {
                            let data = event.data.get_or_insert_with(String::new);
                            if !data.is_empty() {
                                data.push('\n');
                            }
                            data.push_str(value);
                            continue;
                        }
                        other => panic!("unexpected field {other:?}"),
                    };
                    *slot = Some(value.to_string());
                }
                return Some(event);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The body read so far, after reading until `enough` says so about it (or the stream ended).
    pub async fn body_until(&mut self, enough: impl Fn(&[u8]) -> bool) -> &[u8] {
        while !enough(&self.buffer) && self.fill().await {}
        &self.buffer
    }

    /// The rest of the answer, up to its end (for an answer that is not a stream, such as an error).
    pub async fn rest(mut self) -> Vec<u8> {
        while self.fill().await {}
        self.buffer
    }

    /// The next event that carries data.
    pub async fn next_data(&mut self) -> Event {
        loop {
            let event = self.next().await.expect("stream ended");
            if event.data.is_some() {
                return event;
            }
        }
    }
}

pub struct Ws {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a WebSocket read gave.
#[derive(Debug)]
pub enum WsRead {
    Json(Value),
    Closed(Option<u16>),
}

impl Ws {
    pub async fn send(&mut self, frame: Value) {
        self.socket.send(WsMessage::Text(frame.to_string().into())).await.expect("send");
    }

    pub async fn send_raw(&mut self, message: WsMessage) {
        self.socket.send(message).await.expect("send");
    }

    pub async fn read(&mut self) -> WsRead {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.socket.next()).await.expect("no frame in time");
            match next {
                Some(Ok(WsMessage::Text(t))) => return WsRead::Json(serde_json::from_str(&t).expect("JSON frame")),
                Some(Ok(WsMessage::Close(frame))) => return WsRead::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return WsRead::Closed(None),
            }
        }
    }

    /// The next JSON frame; panics on close.
    pub async fn recv(&mut self) -> Value {
        match self.read().await {
            WsRead::Json(v) => v,
            WsRead::Closed(code) => panic!("closed with {code:?}"),
        }
    }

    /// Sends a request and returns the next frame.
    pub async fn call(&mut self, frame: Value) -> Value {
        self.send(frame).await;
        self.recv().await
    }

    /// Proves that no frame is pending: two ping round trips answer with nothing in between. (Two, because the
    /// server may read the socket before its queue: a message already queued goes out at the latest right after the
    /// first pong, so before the second.)
    pub async fn assert_quiet(&mut self) {
        for id in ["quiet-1", "quiet-2"] {
            let answer = self.call(serde_json::json!({ "op": "ping", "id": id })).await;
            assert_eq!(answer, serde_json::json!({ "op": "pong", "id": id }), "a frame came before the pong");
        }
    }

    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            if let WsRead::Closed(code) = self.read().await {
                return code;
            }
        }
    }
}

/// The position a cursor holds for `channel`; panics if the cursor is unreadable or does not name it.
pub fn position(cursor: &str, channel: &str) -> Position {
    let cursor = Cursor::decode(cursor).unwrap_or_else(|e| panic!("cursor {cursor:?}: {e}"));
    cursor.get(&ChannelName::new(channel).unwrap()).unwrap_or_else(|| panic!("the cursor does not name {channel}"))
}

pub fn close_code(code: CloseCode) -> u16 {
    code.into()
}

//! Scripted stand-ins for a Herald server, on real sockets bound to `127.0.0.1:0`: they check what the
//! client sends and replay exact bytes, including bytes Herald itself would never split the same way.

// Each test binary uses part of it; it is test code, where a failed unwrap is a failed test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_proto::{ChannelName, Cursor, Position};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The cursor of `offset` in `channel` (epoch 1).
pub fn cursor(channel: &str, offset: u64) -> String {
    Cursor::single(ChannelName::new(channel).unwrap(), Position::new(1, offset)).encode()
}

/// A cursor naming several channels at once.
pub fn cursor_of(positions: &[(&str, u64)]) -> String {
    let mut cursor = Cursor::new();
    for (channel, offset) in positions {
        cursor.set(ChannelName::new(channel).unwrap(), Position::new(1, *offset));
    }
    cursor.encode()
}

/// An envelope as Herald writes it.
pub fn envelope(channel: &str, offset: u64, data: &str) -> String {
    format!(
        r#"{{"channel":"{channel}","offset":{offset},"cursor":"{}","event":"message","data":{data},"time":"2026-11-28T02:31:48.123Z"}}"#,
        cursor(channel, offset)
    )
}

/// An HTTP answer's head and body, with a `content-length`.
pub fn answer(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// One connection's script: the chunks to write, each flushed and followed by a short pause so that the
/// client reads them separately.
pub type Chunks = Vec<Vec<u8>>;

/// Answers one connection per script, in order, and returns every request it read (head and body).
pub async fn http_server(scripts: Vec<Chunks>) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut requests = Vec::new();
        for chunks in scripts {
            let (mut socket, _) = listener.accept().await.unwrap();
            requests.push(read_request(&mut socket).await);
            for chunk in chunks {
                socket.write_all(&chunk).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = socket.shutdown().await;
        }
        requests
    });
    (url, task)
}

async fn read_request(socket: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if buf.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed before sending a whole request");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What a scripted WebSocket server does after reading the client's subscribe frames.
pub enum WsStep {
    /// Sends a text frame.
    Send(String),
    /// Closes with this code and reason.
    Close(u16, &'static str),
}

/// Accepts one WebSocket, reads `frames` text frames, plays `steps`, and returns the frames it read.
pub async fn ws_server(frames: usize, steps: Vec<WsStep>) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        let mut received = Vec::new();
        while received.len() < frames {
            if let Message::Text(text) = ws.next().await.unwrap().unwrap() {
                received.push(text.to_string());
            }
        }
        for step in steps {
            match step {
                WsStep::Send(text) => ws.send(Message::text(text)).await.unwrap(),
                WsStep::Close(code, reason) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    ws.send(Message::Close(Some(frame))).await.unwrap();
                }
            }
        }
        // Drain until the client goes, so that it reads everything sent.
        while let Some(Ok(_)) = ws.next().await {}
        received
    });
    (url, task)
}

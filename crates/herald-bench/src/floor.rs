//! `herald-bench floor`: the least a server can spend on a delivery on this machine, so that a server's CPU per
//! delivery can be read as "× floor" instead of only against another server.
//!
//! It speaks just enough of Herald's API for the load generator to follow it exactly as it follows Herald:
//! `GET /v1/ws` (one `subscribe` frame, answered `subscribed`), `GET /v1/sse?channel=…&envelope=true` and
//! `POST /v1/channels/{ch}/messages`. Each message is encoded once per transport (the same envelope bytes
//! Herald sends) and written to every subscriber of its channel from the publishing thread, with one blocking
//! `write(2)` per socket, in a loop: no queue, no task, no wake-up, no timer, no heartbeat, no history. Nothing
//! a real server needs is here, which is the point: what Herald spends above this is what its features and
//! its architecture cost.
//!
//! Plain threads and blocking sockets: a thread per connection reads its request head (and a WebSocket's one
//! `subscribe` frame) and ends; only the publishing connection's thread lives on. Loopback only.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use herald_proto::ws::{ClientFrame, ServerFrame};
use herald_proto::{ChannelName, Cursor, EventName, Message, Position};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Every channel starts in this epoch; offsets count from 1 as Herald's do.
const EPOCH: u64 = 1;
/// Request heads and WebSocket frames longer than this are refused: the load generator sends short ones.
const MAX_HEAD: usize = 8 * 1024;
/// Publish bodies longer than this are refused.
const MAX_BODY: usize = 1024 * 1024;
/// A connection's thread only reads a request head: a small stack keeps 10,000 openings cheap.
const STACK: usize = 128 * 1024;

/// How a subscriber is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ws,
    Sse,
}

/// One channel: the last offset published and the sockets that follow it.
#[derive(Default)]
struct Channel {
    offset: u64,
    sinks: Vec<(Kind, TcpStream)>,
}

#[derive(Default)]
struct Floor {
    channels: Mutex<HashMap<String, Channel>>,
}

/// Serves the floor on `listen` until the process is stopped.
pub(crate) fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(listen.ip().is_loopback(), "the floor serves loopback only, not {listen}");
    let listener = TcpListener::bind(listen)?;
    eprintln!("herald-bench floor: listening on {listen}");
    run(listener)
}

/// Serves connections accepted on `listener`, each on a thread of its own.
pub(crate) fn run(listener: TcpListener) -> anyhow::Result<()> {
    let floor = Arc::new(Floor::default());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                eprintln!("herald-bench floor: accept: {err}");
                continue;
            }
        };
        let floor = Arc::clone(&floor);
        std::thread::Builder::new().stack_size(STACK).spawn(move || {
            if let Err(err) = floor.connection(stream) {
                if err.kind() != io::ErrorKind::UnexpectedEof {
                    eprintln!("herald-bench floor: {err}");
                }
            }
        })?;
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A request's line and the headers the floor reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    content_length: usize,
    websocket_key: Option<String>,
}

/// Reads one request head; `Ok(None)` when the connection ended between requests.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut head = Head::default();
    let mut line = String::new();
    let mut total = 0;
    loop {
        line.clear();
        let n = reader.by_ref().take((MAX_HEAD - total) as u64 + 1).read_line(&mut line)?;
        total += n;
        if n == 0 {
            return if head.method.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        if total > MAX_HEAD {
            return Err(invalid("request head too long"));
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if head.method.is_empty() {
            let mut parts = text.split(' ');
            head.method = parts.next().unwrap_or_default().to_string();
            head.target = parts.next().ok_or_else(|| invalid("no request target"))?.to_string();
            continue;
        }
        if text.is_empty() {
            return Ok(Some(head));
        }
        let Some((name, value)) = text.split_once(':') else { return Err(invalid("a header without ':'")) };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().map_err(|_| invalid("bad content-length"))?;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.websocket_key = Some(value.to_string());
        }
    }
}

/// The value of the first `name=` parameter of a query string, percent-decoded.
fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let value = query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    percent_decode(value)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A server's unmasked, unfragmented WebSocket text frame.
fn ws_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Reads one client frame (masked, as clients must) and returns its payload; only text frames are expected.
fn read_client_frame(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut start = [0u8; 2];
    reader.read_exact(&mut start)?;
    if start[0] & 0x0f != 0x1 || start[1] & 0x80 == 0 {
        return Err(invalid("expected one masked text frame"));
    }
    let len = match start[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            reader.read_exact(&mut n)?;
            usize::from(u16::from_be_bytes(n))
        }
        127 => return Err(invalid("frame too long")),
        n => usize::from(n),
    };
    if len > MAX_HEAD {
        return Err(invalid("frame too long"));
    }
    let mut mask = [0u8; 4];
    reader.read_exact(&mut mask)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
    Ok(payload)
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
    stream.write_all([head.as_bytes(), body.as_bytes()].concat().as_slice())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Floor {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one connection: requests until it ends or becomes a subscriber's.
    fn connection(&self, stream: TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        while let Some(head) = read_head(&mut reader)? {
            let path = head.target.split('?').next().unwrap_or_default();
            match (head.method.as_str(), path) {
                ("GET", "/v1/ws") => return self.websocket(&head, reader, writer),
                ("GET", "/v1/sse") => return self.sse(&head, writer),
                ("POST", _) if path.starts_with("/v1/channels/") && path.ends_with("/messages") => {
                    let channel = &path["/v1/channels/".len()..path.len() - "/messages".len()];
                    let channel = percent_decode(channel).ok_or_else(|| invalid("bad channel"))?;
                    if head.content_length > MAX_BODY {
                        return respond(&mut writer, "413 Payload Too Large", r#"{"error":"payload_too_large"}"#);
                    }
                    let mut body = vec![0u8; head.content_length];
                    reader.read_exact(&mut body)?;
                    let answer = self.publish(&channel, &body)?;
                    respond(&mut writer, "201 Created", &answer)?;
                }
                _ => return respond(&mut writer, "404 Not Found", r#"{"error":"not_found"}"#),
            }
        }
        Ok(())
    }

    fn websocket(&self, head: &Head, mut reader: BufReader<TcpStream>, mut writer: TcpStream) -> io::Result<()> {
        let key = head.websocket_key.as_deref().ok_or_else(|| invalid("no sec-websocket-key"))?;
        let accept = derive_accept_key(key.as_bytes());
        writer.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )?;
        let payload = read_client_frame(&mut reader)?;
        let text = std::str::from_utf8(&payload).map_err(|_| invalid("a frame that is not UTF-8"))?;
        let Ok(ClientFrame::Subscribe { channel, id, .. }) = ClientFrame::parse(text) else {
            return Err(invalid(format!("expected a subscribe frame, got {text}")));
        };
        let mut channels = self.lock();
        let state = channels.entry(channel.as_str().to_string()).or_default();
        let cursor = Cursor::single(channel.clone(), Position::new(EPOCH, state.offset)).encode();
        let frame = ServerFrame::Subscribed { channel: &channel, cursor: &cursor, reset: false, id: id.as_ref() };
        writer.write_all(&ws_text_frame(frame.encode().as_bytes()))?;
        state.sinks.push((Kind::Ws, writer));
        Ok(())
    }

    fn sse(&self, head: &Head, mut writer: TcpStream) -> io::Result<()> {
        let channel = query_param(&head.target, "channel").ok_or_else(|| invalid("no channel"))?;
        let channel = ChannelName::new(&channel).map_err(|e| invalid(e.to_string()))?;
        let mut channels = self.lock();
        let state = channels.entry(channel.as_str().to_string()).or_default();
        let cursor = Cursor::single(channel, Position::new(EPOCH, state.offset)).encode();
        // A body delimited by the connection's end: no chunk framing to pay for per event.
        let mut opening = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n".to_vec();
        opening.extend_from_slice(&herald_proto::sse::preamble(1000, &cursor, None));
        writer.write_all(&opening)?;
        state.sinks.push((Kind::Sse, writer));
        Ok(())
    }

    /// Stores nothing: numbers the message, writes it to every follower of `channel`, and returns the answer.
    fn publish(&self, channel: &str, body: &[u8]) -> io::Result<String> {
        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            event: Option<&'a str>,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let body: Body<'_> = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
        let name = ChannelName::new(channel).map_err(|e| invalid(e.to_string()))?;
        let event = EventName::new(body.event.unwrap_or(herald_proto::channel::DEFAULT_EVENT))
            .map_err(|e| invalid(e.to_string()))?;
        let mut channels = self.lock();
        let state = channels.entry(channel.to_string()).or_default();
        state.offset += 1;
        let message = Message {
            channel: name,
            position: Position::new(EPOCH, state.offset),
            event,
            data: bytes::Bytes::copy_from_slice(body.data.get().as_bytes()),
            time_ms: now_ms(),
        };
        let ws = ws_text_frame(&ServerFrame::message(&message));
        let sse = herald_proto::sse::event(None, None, &message.envelope_json(""));
        // One blocking write per socket; a socket that fails is dropped.
        state.sinks.retain_mut(|(kind, socket)| {
            let bytes = match kind {
                Kind::Ws => &ws,
                Kind::Sse => &sse,
            };
            socket.write_all(bytes).is_ok()
        });
        Ok(serde_json::json!({
            "channel": message.channel.as_str(),
            "offset": message.position.offset,
            "cursor": message.cursor().encode(),
            "time": herald_proto::time::format_rfc3339_millis(message.time_ms),
        })
        .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_gives_its_line_length_and_websocket_key() {
        let text = "GET /v1/ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: abc\r\nContent-Length: 12\r\n\r\nrest";
        let head = read_head(&mut text.as_bytes()).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                method: "GET".into(),
                target: "/v1/ws".into(),
                content_length: 12,
                websocket_key: Some("abc".into())
            }
        );
        assert!(read_head(&mut &b""[..]).unwrap().is_none());
        assert!(read_head(&mut &b"GET / HTTP/1.1\r\nHost"[..]).is_err());
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(read_head(&mut long.as_bytes()).is_err());
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(query_param("/v1/sse?channel=chat%3Aa&envelope=true", "channel").as_deref(), Some("chat:a"));
        assert_eq!(query_param("/v1/sse?envelope=true", "channel"), None);
        assert_eq!(percent_decode("%zz"), None);
    }

    #[test]
    fn frames_round_trip_through_the_length_forms() {
        for len in [0, 125, 126, 300] {
            let payload = vec![b'a'; len];
            let frame = ws_text_frame(&payload);
            assert_eq!(frame[0], 0x81);
            assert_eq!(&frame[frame.len() - len..], payload.as_slice());
            // The same frame as a client sends it: masked.
            let mask = [1u8, 2, 3, 4];
            let mut client = vec![0x81];
            match len {
                n if n < 126 => client.push(0x80 | n as u8),
                n => {
                    client.push(0x80 | 126);
                    client.extend_from_slice(&(n as u16).to_be_bytes());
                }
            }
            client.extend_from_slice(&mask);
            client.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            assert_eq!(read_client_frame(&mut client.as_slice()).unwrap(), payload);
        }
        assert!(read_client_frame(&mut &[0x81u8, 0x05, b'h', b'e', b'l', b'l', b'o'][..]).is_err(), "unmasked");
    }

    /// The load generator follows the floor exactly as it follows Herald: over real sockets, a WebSocket and an
    /// SSE subscriber each get every message published, in order, with the cursor Herald would give.
    #[test]
    fn herald_clients_subscribe_and_receive_what_is_published() {
        use herald_client::{Client, Event, SubscribeOptions, Transport};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || run(listener));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let client = Client::new(&url).unwrap();
            let mut subs = Vec::new();
            for transport in [Transport::WebSocket, Transport::Sse] {
                subs.push(client.subscribe(SubscribeOptions::new(["floor:a"], transport)).await.unwrap());
            }
            let mut publisher = client.connect_http().await.unwrap();
            for n in 1..=3 {
                let published = publisher.publish("floor:a", Some("tick"), &serde_json::json!({ "n": n })).await;
                assert_eq!(published.unwrap().offset, n);
            }
            for sub in &mut subs {
                for n in 1..=3u64 {
                    let Some(Ok(Event::Message(envelope))) = sub.next().await else { panic!("no message {n}") };
                    assert_eq!((envelope.offset, envelope.event.as_str()), (n, "tick"));
                    assert_eq!(envelope.data.get(), format!(r#"{{"n":{n}}}"#));
                }
            }
        });
    }
}

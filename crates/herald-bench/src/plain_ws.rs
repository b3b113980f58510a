//! The cross-check subscriber (`--client plain`): a WebSocket client of a few dozen lines over a tokio
//! `TcpStream`, not `herald-client`, so that a fan-out figure does not depend on which server the generator is
//! kinder to. `herald-client` parses each of Herald's JSON envelopes and writes its `data` back out, while
//! Nchan's raw bodies cost it nothing; this client treats both servers' frames alike: it reads the frame
//! header, unmasks nothing (servers do not mask), and finds the bench payload in the frame by scanning for a
//! quoted stamp ([`find_stamp`]), whatever JSON surrounds it.
//!
//! Enough of RFC 6455 for a subscriber: the upgrade request, text and binary frames (continuations joined),
//! pings answered with pongs, a close ending the feed. Herald (and the floor) get one `subscribe` frame after
//! the upgrade, answered `subscribed` before the feed is open; Nchan subscribes by its URL alone.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::feed::show;
use crate::payload::decode;
use crate::spec::Target;

/// A frame longer than this ends the feed: the bench publishes payloads of a few hundred bytes.
const MAX_FRAME: usize = 1 << 20;
/// An upgrade answer longer than this is refused.
const MAX_HEAD: usize = 8 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One subscriber's WebSocket, after its subscription was confirmed.
pub(crate) struct PlainWebSocket {
    stream: TcpStream,
    buffer: BytesMut,
    /// A fragmented message being joined.
    partial: Option<BytesMut>,
}

/// A server frame, as read.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Bytes,
}

impl PlainWebSocket {
    /// Connects from `local_ip` to the server at `base` (`http://host:port`), upgrades, and subscribes to
    /// `channel`: `/v1/ws` and a `subscribe` frame for Herald and the floor, `/sub/<channel>` for Nchan.
    pub(crate) async fn subscribe(base: &str, local_ip: IpAddr, target: Target, channel: &str) -> Result<Self, String> {
        let authority = base.strip_prefix("http://").ok_or("the plain client speaks http:// only")?;
        let authority = authority.trim_end_matches('/');
        let server: SocketAddr = authority.parse().map_err(|_| format!("not an ip:port: {authority}"))?;
        let path = match target {
            Target::Herald | Target::Floor => "/v1/ws".to_string(),
            Target::Nchan => format!("/sub/{channel}"),
            other => return Err(format!("the plain client does not follow {}", other.name())),
        };
        let socket = if server.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(show)?;
        socket.bind(SocketAddr::new(local_ip, 0)).map_err(show)?;
        let stream = socket.connect(server).await.map_err(show)?;
        stream.set_nodelay(true).map_err(show)?;
        let mut socket = Self { stream, buffer: BytesMut::with_capacity(4096), partial: None };
        socket.upgrade(authority, &path).await?;
        if matches!(target, Target::Herald | Target::Floor) {
            let subscribe = format!(r#"{{"op":"subscribe","channel":"{channel}","id":1}}"#);
            socket.send(OP_TEXT, subscribe.as_bytes()).await?;
            let answer = socket.next_message().await.ok_or("closed before answering the subscribe frame")??;
            if !contains(&answer, br#""op":"subscribed""#) {
                return Err(format!("the subscribe frame was answered {}", String::from_utf8_lossy(&answer)));
            }
        }
        Ok(socket)
    }

    /// Sends the upgrade request and reads the answer's head; what follows it stays in the buffer.
    async fn upgrade(&mut self, authority: &str, path: &str) -> Result<(), String> {
        let key = websocket_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {authority}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
        );
        self.stream.write_all(request.as_bytes()).await.map_err(show)?;
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = self.buffer.split_to(end + 4);
                let status = &head[..find(&head, b"\r\n").unwrap_or(head.len())];
                if !status.starts_with(b"HTTP/1.1 101") {
                    return Err(format!("the upgrade was answered {}", String::from_utf8_lossy(status).trim()));
                }
                return Ok(());
            }
            if self.buffer.len() > MAX_HEAD {
                return Err("the upgrade answer's head is too long".into());
            }
            self.fill().await?;
        }
    }

    /// The next payload of a published message (the quoted stamp of [`find_stamp`]); frames without one (a
    /// server's own frames) are skipped. `None` when the server closed.
    pub(crate) async fn next(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            let message = match self.next_message().await? {
                Ok(message) => message,
                Err(err) => return Some(Err(err)),
            };
            if let Some(stamp) = find_stamp(&message) {
                return Some(Ok(message.slice(stamp)));
            }
        }
    }

    /// The next whole text or binary message, answering pings on the way.
    async fn next_message(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            let frame = match self.next_frame().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(err) => return Some(Err(err)),
            };
            match frame.opcode {
                OP_PING => {
                    if let Err(err) = self.send(OP_PONG, &frame.payload).await {
                        return Some(Err(err));
                    }
                }
                OP_PONG => {}
                OP_CLOSE => return None,
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    let whole = match (self.partial.take(), frame.fin) {
                        (None, true) => frame.payload,
                        (partial, fin) => {
                            let mut joined = partial.unwrap_or_default();
                            joined.extend_from_slice(&frame.payload);
                            if !fin {
                                self.partial = Some(joined);
                                continue;
                            }
                            joined.freeze()
                        }
                    };
                    return Some(Ok(whole));
                }
                other => return Some(Err(format!("unknown opcode {other:#x}"))),
            }
        }
    }

    /// Reads one frame; `None` at the end of the stream.
    async fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        loop {
            match parse_frame(&mut self.buffer)? {
                Some(frame) => return Ok(Some(frame)),
                None => {
                    if self.fill().await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Reads what the socket has into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> Result<usize, String> {
        self.buffer.reserve(4096);
        self.stream.read_buf(&mut self.buffer).await.map_err(show)
    }

    /// Sends one masked frame, as a client must.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let mask = mask_key();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.map_err(show)
    }
}

/// Takes one whole server frame off the front of `buffer`, if it holds one.
fn parse_frame(buffer: &mut BytesMut) -> Result<Option<Frame>, String> {
    if buffer.len() < 2 {
        return Ok(None);
    }
    let (first, second) = (buffer[0], buffer[1]);
    if second & 0x80 != 0 {
        return Err("a server frame is masked".into());
    }
    let (header, len) = match second & 0x7F {
        126 if buffer.len() >= 4 => (4, usize::from(u16::from_be_bytes([buffer[2], buffer[3]]))),
        127 if buffer.len() >= 10 => {
            let len = u64::from_be_bytes(buffer[2..10].try_into().expect("8 bytes"));
            (10, usize::try_from(len).unwrap_or(usize::MAX))
        }
        126 | 127 => return Ok(None),
        n => (2, usize::from(n)),
    };
    if len > MAX_FRAME {
        return Err(format!("a frame of {len} bytes, over the limit of {MAX_FRAME}"));
    }
    if buffer.len() < header + len {
        return Ok(None);
    }
    buffer.advance(header);
    let payload = buffer.split_to(len).freeze();
    Ok(Some(Frame { fin: first & 0x80 != 0, opcode: first & 0x0F, payload }))
}

/// Where the bench payload is in a message: the first quoted string that reads as a stamp (`payload.rs`),
/// quotes included. In Herald's envelope that is the `data` value; Nchan's body is the payload itself.
pub(crate) fn find_stamp(message: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut from = 0;
    while let Some(open) = memchr(b'"', &message[from..]).map(|i| from + i) {
        let close = open + 1 + memchr(b'"', &message[open + 1..])?;
        if message.get(open + 1).is_some_and(u8::is_ascii_digit) && decode(&message[open..=close]).is_some() {
            return Some(open..close + 1);
        }
        from = close + 1;
    }
    None
}

fn memchr(byte: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == byte)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// Sixteen bytes, base64: unpredictable enough for a handshake on loopback.
fn websocket_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let random = std::collections::hash_map::RandomState::new();
    let bits = u128::from(random.hash_one(1u8)) << 64 | u128::from(random.hash_one(2u8));
    // 16 bytes are 22 base64 digits and two `=` of padding.
    // The last digit holds the last 2 bits, followed by 4 zero bits.
    let sextet = |i: u32| match 122_i32 - 6 * i as i32 {
        shift if shift >= 0 => (bits >> shift) & 0x3F,
        shift => (bits << -shift) & 0x3F,
    };
    let mut key: String = (0..22).map(|i| ALPHABET[sextet(i) as usize] as char).collect();
    key.push_str("==");
    key
}

fn mask_key() -> [u8; 4] {
    let random = std::collections::hash_map::RandomState::new();
    (random.hash_one(0u8) as u32).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{encode, Stamp};

    const STAMP: Stamp = Stamp { step: 1, publisher: 2, seq: 3, sent_us: 1_764_297_108_123_456 };

    #[test]
    fn the_stamp_is_found_in_a_herald_envelope_and_in_a_raw_body_alike() {
        let payload = encode(STAMP, 100);
        let text = String::from_utf8(payload.clone()).unwrap();
        let envelope = format!(
            r#"{{"op":"message","channel":"bench-k-0","offset":3,"cursor":"Y2gxOjE6Mw","time":"2026-12-03T12:00:00Z","data":{text}}}"#
        );
        let found = find_stamp(envelope.as_bytes()).expect("a stamp in the envelope");
        assert_eq!(decode(&envelope.as_bytes()[found]), Some(STAMP));
        assert_eq!(find_stamp(&payload), Some(0..payload.len()));
    }

    #[test]
    fn a_message_without_a_stamp_has_none() {
        for message in [&br#"{"op":"subscribed","channel":"c","cursor":"x"}"#[..], b"", b"\"", b"\"12\""] {
            assert_eq!(find_stamp(message), None, "{message:?}");
        }
    }

    #[test]
    fn frames_are_read_whole_and_only_once_complete() {
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend(std::iter::repeat(b'a').take(256));
        let mut buffer = BytesMut::from(&[0x81, 0x03, b'a', b'b'][..]);
        assert!(parse_frame(&mut buffer).unwrap().is_none(), "a frame short of its payload waits");
        buffer.extend_from_slice(b"c");
        buffer.extend_from_slice(&long[..100]);
        let frame = parse_frame(&mut buffer).unwrap().expect("a whole frame");
        assert_eq!((frame.fin, frame.opcode, &frame.payload[..]), (true, OP_TEXT, &b"abc"[..]));
        assert!(parse_frame(&mut buffer).unwrap().is_none());
        buffer.extend_from_slice(&long[100..]);
        assert_eq!(parse_frame(&mut buffer).unwrap().expect("the long frame").payload.len(), 256);
        assert!(buffer.is_empty());
    }

    #[test]
    fn masked_or_oversized_server_frames_are_refused() {
        assert!(parse_frame(&mut BytesMut::from(&[0x81, 0x81, 0, 0, 0, 0, b'a'][..])).is_err());
        let mut huge = BytesMut::from(&[0x82, 127][..]);
        huge.extend_from_slice(&(MAX_FRAME as u64 + 1).to_be_bytes());
        assert!(parse_frame(&mut huge).is_err());
    }

    /// Over real sockets, against the floor (which sends Herald's envelopes): the subscription is confirmed,
    /// and every published payload comes back, in order, found inside its envelope.
    #[test]
    fn a_plain_subscriber_receives_every_payload_published() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || crate::floor::run(listener));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let loopback = IpAddr::from([127, 0, 0, 1]);
            let mut socket = PlainWebSocket::subscribe(&url, loopback, Target::Floor, "plain:a").await.unwrap();
            let client = herald_client::Client::new(&url).unwrap();
            let mut publisher = client.connect_http().await.unwrap();
            let stamps: Vec<Stamp> = (1..=3).map(|seq| Stamp { seq, ..STAMP }).collect();
            for stamp in &stamps {
                let payload = String::from_utf8(encode(*stamp, 100)).unwrap();
                let data = serde_json::value::RawValue::from_string(payload).unwrap();
                publisher.publish("plain:a", None, &data).await.unwrap();
            }
            for stamp in stamps {
                let next = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await;
                let payload = next.expect("a message within 10 s").expect("a message").unwrap();
                assert_eq!(decode(&payload), Some(stamp));
            }
        });
    }

    #[test]
    fn a_handshake_key_is_sixteen_bytes_of_base64() {
        let key = websocket_key();
        assert_eq!(key.len(), 24);
        assert!(key.ends_with("==") && key[..22].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
    }
}

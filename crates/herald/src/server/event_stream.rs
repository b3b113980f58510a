//! A response written straight to the socket, for requests taken off hyper's path by
//! [`super::connection`]: the head, then the body's chunks as they come, delimited by closing the connection
//! (`Connection: close` and no chunked encoding: an event stream has no end a client waits for, and every
//! HTTP/1 client reads such a body until the close).
//!
//! While the body is idle the socket is read too, so a subscriber that goes away ends its stream at once
//! instead of at the next heartbeat; bytes a client sends after its request are read and dropped. A write
//! blocked on a subscriber that stopped reading gives up, and the connection is reset, when the stream's
//! [`StopWriting`] signal fires (its queue overflowed) or on shutdown. A response
//! that is not an event stream (a refusal, an error) is written whole, with its length, and the connection
//! closed.
//!
//! The socket is shared ([`SseSocket`]): a one-channel stream may lend it to the hub's fan-out while it waits for
//! its next chunk (`direct_writes`), and gives every chunk only once it has taken it back.

use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode, Version};
use axum::Router;
use futures_util::{FutureExt, StreamExt};
use http_body_util::BodyExt;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::http::{SseSocket, StopWriting};
use crate::shutdown::Shutdown;

/// What is read, at most, per read of the idle socket (its bytes are dropped).
const PROBE_BYTES: usize = 64;

/// Answers `request` with `app` and writes the response to `stream`. The request comes boxed: every future it
/// passes through (this one, the connection's) would otherwise keep room for it, 240 bytes each, for the
/// stream's whole life.
pub(super) async fn serve(stream: TcpStream, mut request: Box<Request<Body>>, app: Router, shutdown: Shutdown) {
    let stream = Arc::new(stream);
    request.extensions_mut().insert(SseSocket(stream.clone()));
    // Boxed: the router's future is done with before the stream starts, and would otherwise size the task.
    let answer = Box::pin(answer(request, app)).await;
    // Only the stream's subscription may still hold the socket now.
    match answer {
        Answer::Stream { head, body, stop } => {
            let stop = Stop { shutdown, stream: stop };
            stream_body(stream, head, body, stop).await;
        }
        Answer::Whole(bytes) => write_and_close(stream, &bytes).await,
    }
}

/// Closes the writing side once nobody else holds the socket (the stream's subscription let go with its body),
/// so that its last bytes are followed by a FIN, not a reset.
async fn shut(stream: Arc<TcpStream>) {
    if let Ok(mut stream) = Arc::try_unwrap(stream) {
        let _ = stream.shutdown().await;
    }
}

/// What to write: an event stream's head and body, or a whole answer.
enum Answer {
    Stream { head: Vec<u8>, body: Body, stop: Option<CancellationToken> },
    Whole(Vec<u8>),
}

async fn answer(request: Box<Request<Body>>, app: Router) -> Answer {
    let version = request.version();
    let response = match hyper::service::Service::call(&TowerToHyperService::new(app), *request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    if parts.status == StatusCode::OK && is_event_stream(&parts.headers) {
        let head = encode_head(version, parts.status, &parts.headers, None, SystemTime::now());
        let stop = parts.extensions.get::<StopWriting>().map(|StopWriting(token)| token.clone());
        return Answer::Stream { head, body, stop };
    }
    let body = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
    let mut whole = encode_head(version, parts.status, &parts.headers, Some(body.len()), SystemTime::now());
    whole.extend_from_slice(&body);
    Answer::Whole(whole)
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

/// What interrupts a write: shutdown, or the stream's own signal.
struct Stop {
    shutdown: Shutdown,
    stream: Option<CancellationToken>,
}

impl Stop {
    async fn fired(&self) {
        match &self.stream {
            Some(token) => tokio::select! {
                () = self.shutdown.cancelled() => {}
                () = token.cancelled() => {}
            },
            None => self.shutdown.cancelled().await,
        }
    }
}

/// Writes the head and the body's chunks until the body ends, the client goes away or a write is stopped. A
/// connection abandoned in a stopped or failed write is reset rather than closed: its unsent bytes would
/// otherwise hold kernel memory until the stalled peer reads again or TCP gives up, minutes later.
async fn stream_body(stream: Arc<TcpStream>, mut head: Vec<u8>, body: Body, stop: Stop) {
    let mut body = body.into_data_stream();
    // The first chunk (the preamble and the replayed history) is ready at once: one write with the head.
    let mut ended = false;
    if let Some(first) = body.next().now_or_never() {
        match first {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            _ => ended = true,
        }
    }
    if !write(&stream, &head, &stop).await {
        let _ = stream.set_zero_linger();
        return;
    }
    if ended {
        drop(body);
        shut(stream).await;
        return;
    }
    drop(head);
    let mut probe = [0; PROBE_BYTES];
    loop {
        tokio::select! {
            chunk = body.next() => match chunk {
                Some(Ok(chunk)) => if !write(&stream, &chunk, &stop).await {
                    let _ = stream.set_zero_linger();
                    return;
                },
                // The stream ended (shutdown, a slow client, an expired token): close after its last word.
                _ => break,
            },
            read = read_some(&stream, &mut probe) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
    drop(body);
    shut(stream).await;
}

/// Reads what the client sent (and drops it), waiting for something. Polled rather than awaited through
/// `readable()`, whose future holds a waiter (about 100 bytes) in every idle stream's task.
fn read_some<'a>(stream: &'a TcpStream, into: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
    poll_fn(move |cx| loop {
        ready!(stream.poll_read_ready(cx))?;
        match stream.try_read(into) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            read => return Poll::Ready(read),
        }
    })
}

/// Writes all of `bytes`, waiting for room (polled, like [`read_some`]).
fn write_all<'a>(stream: &'a TcpStream, mut bytes: &'a [u8]) -> impl Future<Output = io::Result<()>> + 'a {
    poll_fn(move |cx| {
        while !bytes.is_empty() {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write(bytes) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => bytes = &bytes[n..],
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        Poll::Ready(Ok(()))
    })
}

/// Writes `bytes` unless `stop` fires while the write is stuck; returns whether they were written.
async fn write(stream: &TcpStream, bytes: &[u8], stop: &Stop) -> bool {
    tokio::select! {
        // The write first: a signal that fired before (e.g. while the history was read) does not keep a peer
        // that reads from getting the stream's first words.
        biased;
        written = write_all(stream, bytes) => written.is_ok(),
        () = stop.fired() => false,
    }
}

async fn write_and_close(stream: Arc<TcpStream>, bytes: &[u8]) {
    if write_all(&stream, bytes).await.is_ok() {
        shut(stream).await;
    }
}

/// The response head: the status line, the response's own headers, `Date`, the length when known, and
/// `Connection: close`. Framing headers of the response itself are replaced by these.
pub(crate) fn encode_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    content_length: Option<usize>,
    now: SystemTime,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(if version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION, header::DATE].contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(now)).as_bytes());
    if let Some(length) = content_length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn heads_keep_the_response_headers_and_replace_its_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let head = encode_head(Version::HTTP_11, StatusCode::OK, &headers, None, now);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ndate: Fri, 15 Jan 2027 08:00:00 GMT\r\n\
             connection: close\r\n\r\n"
        );
        let head = encode_head(Version::HTTP_10, StatusCode::UNAUTHORIZED, &HeaderMap::new(), Some(12), now);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.0 401 Unauthorized\r\ndate: Fri, 15 Jan 2027 08:00:00 GMT\r\ncontent-length: 12\r\n\
             connection: close\r\n\r\n"
        );
    }

    #[test]
    fn only_event_streams_are_streamed() {
        let mut headers = HeaderMap::new();
        assert!(!is_event_stream(&headers));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_event_stream(&headers));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
        assert!(is_event_stream(&headers));
    }
}

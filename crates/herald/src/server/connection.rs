//! One accepted plain-HTTP connection: an SSE stream is written straight to the socket, everything else is
//! served by hyper's HTTP/1 connection (keep-alive, bodies, WebSocket upgrades). TLS connections come here
//! after their handshake when they speak HTTP/1.1 ([`super::secure`]), and take hyper's path only.
//!
//! Why two paths: hyper keeps a whole HTTP/1 connection alive under a streamed response (an 8 KiB read
//! buffer, an 8 KiB head buffer, the connection state), about 16 KiB of every idle SSE subscriber for a
//! response that will never need them again; and while the body is idle hyper does not read the socket, so
//! it does not notice a subscriber that went away. A WebSocket leaves hyper on upgrade; an SSE stream, which
//! stays an HTTP response, leaves it here: when the connection's first request is `GET /v1/sse` and its head
//! arrived whole, the request is read off the socket, answered by the same router as every other request,
//! and its response written by [`super::event_stream`].
//!
//! Both paths give a client `request_head_timeout` to send a whole request head, counted from the connection's
//! start (one deadline, whichever path reads the head) or, on a kept-alive connection, from its previous
//! response; a connection that has not is closed without an answer. Waiting for its first bytes, a connection
//! holds no buffer. A head hyper cannot read (too long a URL, too large a head, too many headers) is answered
//! in JSON by [`super::head_errors`].

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Uri, Version};
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::head_errors::{JsonHeadErrors, MAX_HEADERS as MAX_HEAD_HEADERS, MAX_HEAD_BYTES};
use super::routes::SSE_PATH;
use crate::http::websocket::PlainTcp;
use crate::http::StopWriting;
use crate::metrics::{Metrics, Wire};
use crate::shutdown::Shutdown;

/// The bytes looked at before choosing a path. A request head longer than this goes to hyper.
const SNIFF_BYTES: usize = 4096;
/// Headers of a request taken off hyper's path, at most (more: hyper's path, which takes up to 100).
const MAX_HEADERS: usize = 64;
/// What every connection is served with.
#[derive(Clone)]
pub(super) struct Serving {
    pub(super) app: Router,
    pub(super) shutdown: Shutdown,
    /// The longest wait for a whole request head (`request_head_timeout`).
    pub(super) head_timeout: Duration,
    pub(super) metrics: Arc<Metrics>,
}

/// Serves one accepted plain-HTTP connection until it ends or shutdown has drained it.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, serving: Serving) {
    let Serving { app, shutdown, head_timeout, metrics } = serving;
    let _open = metrics.http_connection(Wire::Http1);
    let head_due = Instant::now() + head_timeout;
    let direct = tokio::select! {
        () = shutdown.cancelled() => return,
        // A client that sends nothing is not waited for longer than for a whole head.
        () = tokio::time::sleep_until(head_due) => return,
        // Boxed, like the two paths below, so that the task's future is as small as the path it takes.
        direct = Box::pin(take_event_stream_request(&stream)) => direct,
    };
    match direct {
        Some(mut request) => {
            request.extensions_mut().insert(ConnectInfo(peer));
            super::event_stream::serve(stream, request, app, shutdown).await;
        }
        // Boxed: hyper's connection state is larger than a whole idle event stream, and an unboxed branch would
        // size every connection's task by it.
        None => {
            let plain_tcp = Some(PlainTcp(plain_tcp));
            let http1 = Http1 { app, shutdown, head_due, head_timeout, hsts: None, plain_tcp };
            Box::pin(serve_http1(stream, peer, http1)).await
        }
    }
}

/// What a connection served by hyper's HTTP/1 needs.
pub(super) struct Http1 {
    pub(super) app: Router,
    pub(super) shutdown: Shutdown,
    /// When the first request's head must be whole (the connection's own deadline).
    pub(super) head_due: Instant,
    /// The longest wait for each later head, from the previous answer.
    pub(super) head_timeout: Duration,
    /// A `Strict-Transport-Security` header for every answer (HTTPS only).
    pub(super) hsts: Option<HeaderValue>,
    /// How a WebSocket handler takes the socket back out of hyper's upgrade (plain TCP only).
    pub(super) plain_tcp: Option<PlainTcp>,
}

/// hyper's HTTP/1 connection, with upgrades (WebSocket) and a graceful end on shutdown, over a plain or a TLS
/// socket. The first request's head must be whole by `head_due` (the connection's own deadline); later ones
/// within `head_timeout` of the previous answer (hyper's timer).
///
/// An event stream answered here (its head came in pieces, or it follows other requests, or the connection is
/// TLS) closes the connection when its [`StopWriting`] signal fires, and at once on shutdown, as the direct path
/// does: hyper stops asking the body for chunks while a write is blocked, and would otherwise wait on the peer
/// forever.
pub(super) async fn serve_http1<S>(stream: S, peer: SocketAddr, settings: Http1)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Http1 { app, shutdown, head_due, head_timeout, hsts, plain_tcp } = settings;
    let app = TowerToHyperService::new(app);
    let (stop_writing, mut stopped) = watch::channel(None);
    let first_head = CancellationToken::new();
    let service = {
        let first_head = first_head.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            first_head.cancel();
            // The peer's address feeds the per-address limits (`ClientIp`).
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(plain_tcp) = plain_tcp {
                request.extensions_mut().insert(plain_tcp);
            }
            let response = hyper::service::Service::call(&app, request.map(Body::new));
            let stop_writing = stop_writing.clone();
            let hsts = hsts.clone();
            async move {
                let mut response = response.await?;
                if let Some(hsts) = hsts {
                    response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, hsts);
                }
                Ok::<_, std::convert::Infallible>(watch_event_stream(response, stop_writing))
            }
        })
    };
    let connection = http1::Builder::new()
        // hyper's header timeout counts from the start of each head it waits for, the first one included.
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEAD_HEADERS)
        // hyper answers a head it cannot read by itself; this socket makes those answers JSON.
        .serve_connection(TokioIo::new(JsonHeadErrors::new(stream)), service)
        .with_upgrades();
    tokio::pin!(connection);
    // Dropping the connection closes the socket.
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stream_stopped(&mut stopped) => return,
        () = first_head_late(head_due, &first_head) => return,
        () = shutdown.cancelled() => {}
    }
    if stopped.borrow().is_some() {
        // A live event stream: it ends on shutdown, and its last chunks may never be taken by a stalled peer.
        return;
    }
    // Finish the request in flight (held polls answer at once on shutdown), then close. The server's drain
    // deadline bounds this wait.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// The socket of a plain connection served by [`serve_http1`], out of its upgrade, with what hyper read past the
/// request; the upgraded connection itself when it is not one.
fn plain_tcp(upgraded: Upgraded) -> Result<(TcpStream, Bytes), Upgraded> {
    let parts = upgraded.downcast::<TokioIo<JsonHeadErrors<TcpStream>>>()?;
    Ok((parts.io.into_inner().into_inner(), parts.read_buf))
}

/// Completes at `due` unless the first request's head was whole by then; never, once it was.
async fn first_head_late(due: Instant, first_head: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep_until(due) => {}
        () = first_head.cancelled() => pending().await,
    }
}

/// Hands an event stream's [`StopWriting`] signal to the connection for as long as its body lives. A signal that
/// already fired is not handed over: the body, which ends on it too, is then left to say its first words.
fn watch_event_stream(
    response: axum::response::Response,
    stop_writing: watch::Sender<Option<CancellationToken>>,
) -> axum::response::Response {
    let Some(StopWriting(token)) = response.extensions().get::<StopWriting>().cloned() else { return response };
    if token.is_cancelled() {
        return response;
    }
    stop_writing.send_replace(Some(token));
    // Cleared when the body is dropped (the stream ended and was written, or the connection went away).
    let live = StreamLive(stop_writing);
    response.map(|body| {
        Body::from_stream(futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
            let _ = &live;
            chunk
        }))
    })
}

/// Clears the connection's event stream signal when dropped.
struct StreamLive(watch::Sender<Option<CancellationToken>>);

impl Drop for StreamLive {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

/// Completes when the signal of the connection's current event stream fires; never, without one.
async fn stream_stopped(stopped: &mut watch::Receiver<Option<CancellationToken>>) {
    loop {
        let current = stopped.borrow_and_update().clone();
        let fired = async {
            match current {
                Some(token) => token.cancelled_owned().await,
                None => pending().await,
            }
        };
        tokio::select! {
            () = fired => return,
            changed = stopped.changed() => if changed.is_err() { pending::<()>().await },
        }
    }
}

/// Reads the connection's first request off the socket when it is a `GET /v1/sse` whose head arrived whole;
/// otherwise leaves every byte where it is, for hyper.
/// Boxed: see [`super::event_stream::serve`].
async fn take_event_stream_request(stream: &TcpStream) -> Option<Box<Request<Body>>> {
    // A connection waiting for its first bytes holds no buffer.
    stream.readable().await.ok()?;
    let mut buffer = vec![0; SNIFF_BYTES];
    let seen = stream.peek(&mut buffer).await.ok()?;
    let (request, head_len) = parse_event_stream_head(&buffer[..seen])?;
    // The head is already in the socket's buffer: this read does not wait.
    read_exact(stream, &mut buffer[..head_len]).await.ok()?;
    Some(Box::new(request))
}

async fn read_exact(stream: &TcpStream, buffer: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buffer.len() {
        stream.readable().await?;
        match stream.try_read(&mut buffer[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The request and its head's length, when `bytes` start with a whole `GET /v1/sse…` head without a body.
/// Anything else, complete or not, valid or not, is `None`: hyper answers it as it answers every request.
pub(crate) fn parse_event_stream_head(bytes: &[u8]) -> Option<(Request<Body>, usize)> {
    let prefix = format!("GET {SSE_PATH}");
    if !bytes.starts_with(prefix.as_bytes()) {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = head.parse(bytes).ok()? else { return None };
    let uri: Uri = head.path?.parse().ok()?;
    if uri.path() != SSE_PATH {
        return None;
    }
    let version = match head.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder().method(Method::GET).uri(uri).version(version);
    for header in head.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        // A request with a body is not an event stream request: hyper reads and answers it.
        if name == axum::http::header::CONTENT_LENGTH && header.value != b"0"
            || name == axum::http::header::TRANSFER_ENCODING
        {
            return None;
        }
        request = request.header(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    Some((request.body(Body::empty()).ok()?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &str) -> Option<(Request<Body>, usize)> {
        parse_event_stream_head(bytes.as_bytes())
    }

    #[test]
    fn a_whole_sse_head_is_taken_with_its_length_headers_and_version() {
        let head = "GET /v1/sse?channel=a&since=latest HTTP/1.1\r\nHost: x\r\nLast-Event-ID: abc\r\n\r\n";
        let (request, len) = parse(&format!("{head}GET /next")).expect("taken");
        assert_eq!(len, head.len());
        assert_eq!(request.uri().query(), Some("channel=a&since=latest"));
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["last-event-id"], "abc");
        let (request, _) = parse("GET /v1/sse HTTP/1.0\r\n\r\n").expect("taken");
        assert_eq!(request.version(), Version::HTTP_10);
    }

    #[test]
    fn everything_else_is_left_to_hyper() {
        for bytes in [
            "GET /v1/sse?channel=a HTTP/1.1\r\nHost: x\r\n",          // not whole yet
            "GET /v1/ssex HTTP/1.1\r\n\r\n",                          // another path
            "GET /v1/ws HTTP/1.1\r\n\r\n",                            // another path
            "POST /v1/sse HTTP/1.1\r\n\r\n",                          // another method
            "GET /v1/sse HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", // a body
            "GET /v1/sse HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", // a body
            "GET /v1/sse HTTP/1.1\r\nBad Header: x\r\n\r\n",          // invalid
            "GET /v1/sse HTTP/2.0\r\n\r\n",                           // not HTTP/1
            "",
        ] {
            assert!(parse(bytes).is_none(), "{bytes:?}");
        }
        let many = format!("GET /v1/sse HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert!(parse(&many).is_none());
    }
}

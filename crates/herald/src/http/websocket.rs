//! The WebSocket upgrade, for Herald's `/v1/ws` and Pusher's `/app/{key}`, and the socket it gives: Herald's
//! framing over the upgraded connection (`ws_socket.rs`), reading through one buffer per worker thread.
//!
//! Why not axum's `WebSocketUpgrade`: it gives each connection a read buffer of its own for its whole life (1 KiB
//! here, tungstenite's default 128), and its task keeps room for the socket it builds. An idle connection reads
//! nothing, so here tungstenite's buffer starts empty and grows only to the largest client frame; each read from
//! the socket goes into the thread's buffer ([`SharedRead`]), and what a read brings beyond what tungstenite asked
//! for is kept aside only until it is taken. The socket is built in the connection's own (boxed) future, not in
//! the upgrade's task (docs/BENCHMARKS.md, *Memory per idle connection*).
//!
//! With `direct_writes`, a plain-TCP connection is taken out of hyper's upgrade ([`PlainTcp`]) so that the hub's
//! fan-out can write into the same socket while the connection lends it ([`Connection::Plain`]); every write of
//! the connection's own then first takes the socket back and writes what a partial write of the fan-out left.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::ws_socket::Socket;
use crate::error::ApiError;
use crate::hub::DirectHandle;

/// An upgraded WebSocket connection.
pub type WebSocket = Socket<SharedRead<Connection>>;

/// How the server takes a plain-TCP connection back out of hyper's upgrade: its socket and the bytes hyper read
/// past the request (the server puts it in the request's extensions; a TLS connection has none).
#[derive(Clone, Copy)]
pub struct PlainTcp(pub fn(Upgraded) -> Result<(TcpStream, Bytes), Upgraded>);

/// A request that asks for a WebSocket (HTTP/1.1 `GET` with `Upgrade: websocket`, version 13).
pub struct WebSocketUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    /// Set when the connection is plain TCP and its handler wants the socket itself ([`Self::with_plain_tcp`]).
    plain: Option<PlainTcp>,
    wants_plain: bool,
}

/// Why a request is no WebSocket handshake; the text says what was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRejection {
    /// Not `GET` (or not HTTP/1.x).
    #[error("a WebSocket handshake is an HTTP/1.1 `GET`")]
    MethodNotGet,
    /// No `Connection: upgrade`.
    #[error("the `Connection` header does not include `upgrade`")]
    Connection,
    /// No `Upgrade: websocket`.
    #[error("the `Upgrade` header is not `websocket`")]
    Upgrade,
    /// Not version 13.
    #[error("the `Sec-WebSocket-Version` header is not `13`")]
    Version,
    /// No key.
    #[error("the `Sec-WebSocket-Key` header is missing")]
    Key,
    /// The connection cannot be upgraded (it is not hyper's HTTP/1).
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let message = format!("this endpoint speaks WebSocket only: {self}");
        ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", message)
            .with_header(header::UPGRADE, HeaderValue::from_static("websocket"))
            .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET || parts.version > Version::HTTP_11 {
            return Err(UpgradeRejection::MethodNotGet);
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(UpgradeRejection::Connection);
        }
        if !header_is(&parts.headers, header::UPGRADE, "websocket") {
            return Err(UpgradeRejection::Upgrade);
        }
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(UpgradeRejection::Version);
        }
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).ok_or(UpgradeRejection::Key)?.clone();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(UpgradeRejection::NotUpgradable)?;
        let plain = parts.extensions.get::<PlainTcp>().copied();
        Ok(Self { key, on_upgrade, plain, wants_plain: false })
    }
}

impl WebSocketUpgrade {
    /// Serves a plain-TCP connection over its own socket ([`Connection::Plain`]), which the fan-out can then be
    /// lent; a TLS connection stays on hyper's upgraded stream.
    pub fn with_plain_tcp(mut self) -> Self {
        self.wants_plain = true;
        self
    }

    /// Answers `101 Switching Protocols`; once the client has it, `serve` gets the socket (a connection whose
    /// upgrade fails is dropped).
    pub fn on_upgrade<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        let plain = self.plain.filter(|_| self.wants_plain);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            // The connection out of a plain function, and the socket made in the call: matched or bound here, they
            // would keep room in this task all its life.
            serve(Socket::new(connection(upgraded, plain), config)).await;
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// The reading settings of every WebSocket: client frames and messages up to `max_frame_bytes`. (Writes are the
/// socket's own: gathered up to 16 KiB, `ws_socket.rs`.)
pub fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        // Nothing up front: reads go through the thread's buffer (`SharedRead`), and tungstenite's own grows to
        // the largest frame a client sent.
        .read_buffer_size(0)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers.get(name).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes())))
}

/// How much one read from a socket takes at most: the thread's buffer.
const SHARED_READ_BYTES: usize = 16 * 1024;

thread_local! {
    /// The read buffer of every WebSocket served on this thread. A read fills it and hands it on before the
    /// thread does anything else, so it never holds anything between two reads.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SHARED_READ_BYTES].into_boxed_slice());
}

/// A connection read through the thread's buffer: a read asks the socket for up to [`SHARED_READ_BYTES`] whatever
/// its caller asked for (tungstenite asks for a frame header's 14 bytes, then for the rest of the frame), and
/// keeps what the caller did not take in `rest` until it is taken. Idle, it holds nothing.
pub struct SharedRead<T> {
    inner: T,
    rest: Bytes,
}

impl<T> SharedRead<T> {
    fn new(inner: T) -> Self {
        Self { inner, rest: Bytes::new() }
    }

    /// Reads `rest` first (what was read off the socket before).
    fn with_rest(inner: T, rest: Bytes) -> Self {
        Self { inner, rest }
    }
}

/// The stream a WebSocket is served over: the plain-TCP socket itself when `plain` takes it out of the upgrade,
/// else hyper's upgraded connection.
fn connection(upgraded: Upgraded, plain: Option<PlainTcp>) -> SharedRead<Connection> {
    let upgraded = match plain {
        Some(PlainTcp(unwrap)) => unwrap(upgraded),
        None => Err(upgraded),
    };
    match upgraded {
        Ok((stream, read)) => SharedRead::with_rest(Connection::Plain(Plain::new(stream)), read),
        Err(upgraded) => SharedRead::new(Connection::Upgraded(TokioIo::new(upgraded))),
    }
}

/// The plain-TCP socket of a connection, when it has one ([`WebSocketUpgrade::with_plain_tcp`]).
pub fn plain_socket(socket: &WebSocket) -> Option<Arc<TcpStream>> {
    match &socket.get_ref().inner {
        Connection::Plain(plain) => Some(plain.stream.clone()),
        Connection::Upgraded(_) => None,
    }
}

/// Has every write of `socket` take the socket back from the fan-out first, through `handle`.
pub(crate) fn lend_through(socket: &mut WebSocket, handle: DirectHandle) {
    if let Connection::Plain(plain) = &mut socket.get_mut().inner {
        plain.lent = Some(handle);
    }
}

/// Whether nothing of a partial write of the fan-out is left to write on `socket`: only then may it be lent again.
pub fn is_settled(socket: &WebSocket) -> bool {
    match &socket.get_ref().inner {
        Connection::Plain(plain) => plain.rest.is_empty(),
        Connection::Upgraded(_) => true,
    }
}

/// The stream under a WebSocket: hyper's upgraded connection, or, for a plain-TCP connection whose handler asked,
/// its socket itself.
pub enum Connection {
    /// hyper's upgraded connection (TLS, or a handler that does not lend its socket).
    Upgraded(TokioIo<Upgraded>),
    /// The socket, shared with the hub's fan-out while lent. Inline: it is as large as hyper's connection, so the
    /// enum takes only a tag for it (boxed, every lending connection kept one more allocation of 48 bytes).
    Plain(Plain),
}

/// A plain-TCP socket that the connection may lend to the hub's fan-out (`hub/direct.rs`).
pub struct Plain {
    stream: Arc<TcpStream>,
    /// Takes the socket back from the fan-out, once one is lent it.
    lent: Option<DirectHandle>,
    /// What a partial write of the fan-out left, written before any byte of the connection's own.
    rest: Bytes,
}

impl Plain {
    fn new(stream: TcpStream) -> Self {
        Self { stream: Arc::new(stream), lent: None, rest: Bytes::new() }
    }

    /// Takes the socket back and writes what the fan-out left, before a write (or flush) of the connection's own.
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.rest.is_empty() {
            if let Some(rest) = self.lent.as_ref().and_then(DirectHandle::take_rest) {
                self.rest = rest;
            }
        }
        while !self.rest.is_empty() {
            let n = ready!(self.poll_write_now(cx, |s| s.try_write(&self.rest)))?;
            self.rest.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_now(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match write(&self.stream) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
            Connection::Plain(plain) => loop {
                ready!(plain.stream.poll_read_ready(cx))?;
                match plain.stream.try_read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(err) => return Poll::Ready(Err(err)),
                }
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
            Connection::Plain(plain) => {
                ready!(plain.poll_settle(cx))?;
                plain.poll_write_now(cx, |s| s.try_write(buf))
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Connection::Plain(plain) => {
                ready!(plain.poll_settle(cx))?;
                plain.poll_write_now(cx, |s| s.try_write_vectored(bufs))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Upgraded(io) => io.is_write_vectored(),
            Connection::Plain(_) => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Upgraded(io) => Pin::new(io).poll_flush(cx),
            // Nothing is buffered here: only what the fan-out left.
            Connection::Plain(plain) => plain.poll_settle(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
            // The socket is closed when the connection and the fan-out's copy of it are dropped.
            Connection::Plain(plain) => plain.poll_settle(cx),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SharedRead<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.rest.is_empty() && buf.remaining() >= SHARED_READ_BYTES {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.rest.is_empty() {
            let read = READ_BUFFER.with_borrow_mut(|shared| {
                let mut into = ReadBuf::new(shared);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
                let read = into.filled();
                let taken = read.len().min(buf.remaining());
                buf.put_slice(&read[..taken]);
                Poll::Ready(Ok::<_, io::Error>(Bytes::copy_from_slice(&read[taken..])))
            });
            this.rest = ready!(read)?;
            return Poll::Ready(Ok(()));
        }
        let taken = this.rest.len().min(buf.remaining());
        buf.put_slice(&this.rest[..taken]);
        this.rest.advance(taken);
        if this.rest.is_empty() {
            // Free the allocation now, not at the next read.
            this.rest = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SharedRead<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_short_read_takes_the_whole_arrival_and_keeps_the_rest_until_it_is_taken() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = SharedRead::new(server);
        client.write_all(b"0123456789abcdefghij").await.unwrap();
        let mut first = [0u8; 14];
        let n = reader.read(&mut first).await.unwrap();
        assert_eq!(&first[..n], b"0123456789abcd");
        assert_eq!(&reader.rest[..], b"efghij");
        let mut second = [0u8; 14];
        let n = reader.read(&mut second).await.unwrap();
        assert_eq!(&second[..n], b"efghij");
        assert!(reader.rest.is_empty());
    }

    #[tokio::test]
    async fn a_large_read_goes_straight_to_the_callers_buffer() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = SharedRead::new(server);
        let sent = vec![7u8; 20 * 1024];
        client.write_all(&sent).await.unwrap();
        let mut into = vec![0u8; 32 * 1024];
        let n = reader.read(&mut into).await.unwrap();
        assert_eq!((n, reader.rest.len()), (20 * 1024, 0));
    }
}

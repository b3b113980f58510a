//! One HTTP/2 connection (TLS, ALPN `h2`): hyper's HTTP/2 server, every request a stream of the one connection —
//! SSE streams, held polls and publishes alike — answered by the same router, so every limit, refusal and
//! metric applies per stream as it does per HTTP/1.1 request (`max_connections_per_ip` counts each SSE stream
//! or held poll, not the connection that carries it).
//!
//! Per connection: at most `http2_max_streams` streams open at once (SETTINGS_MAX_CONCURRENT_STREAMS); a PING
//! every `ws_ping_secs`, and a peer that does not answer one within as long is dropped with all its streams (a
//! stream's own writes never block the others, so a dead peer is found this way, not by a blocked write); a
//! connection with no stream open for `request_head_timeout_secs` is closed, as an idle HTTP/1.1 connection is.
//!
//! A slow consumer: each stream has its own flow-control window, and hyper asks an event stream's body for its
//! next chunk only while the stream's window is open. When the window is open the body ends itself on its
//! slow-consumer signal (the stream is reset and the others go on); a stream whose window the client keeps shut
//! holds its queue (bounded by `connection_queue`) and at most hyper's send buffer until the client resets it,
//! the connection's PINGs go unanswered, or shutdown.
//!
//! WebSocket stays on HTTP/1.1: the extended CONNECT of RFC 8441 is not offered, so a browser opens an HTTP/1.1
//! connection for it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::head_errors::MAX_HEAD_BYTES;
use super::secure::Secure;
use crate::shutdown::Shutdown;

/// What an HTTP/2 connection is served with.
pub(super) struct Http2 {
    pub(super) app: Router,
    pub(super) shutdown: Shutdown,
    /// When the first request must have arrived.
    pub(super) head_due: Instant,
    /// How long the connection may stay without an open stream.
    pub(super) head_timeout: Duration,
    pub(super) secure: Secure,
}

/// Serves one HTTP/2 connection until it ends, stays idle too long, or shutdown has drained it.
pub(super) async fn serve<S>(stream: S, peer: SocketAddr, settings: Http2)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Http2 { app, shutdown, head_due, head_timeout, secure } = settings;
    let app = TowerToHyperService::new(app);
    let (open, mut open_changed) = watch::channel(0usize);
    let hsts = secure.hsts.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let stream = OpenStream::new(open.clone());
        let response = hyper::service::Service::call(&app, request.map(Body::new));
        let hsts = hsts.clone();
        async move {
            let mut response = response.await?;
            if let Some(hsts) = hsts {
                response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            // The stream counts as open until hyper drops its body: written whole, or reset.
            Ok::<_, std::convert::Infallible>(response.map(|body| Counted { body, _stream: stream }))
        }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(secure.http2_max_streams)
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).unwrap_or(u32::MAX))
        .keep_alive_interval(secure.http2_ping)
        .keep_alive_timeout(secure.http2_ping);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut due = head_due;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(due) => {
                if *open_changed.borrow_and_update() == 0 {
                    break;
                }
                // Streams are open: look again once they are all done.
                due = far_future();
            }
            changed = open_changed.changed() => {
                if changed.is_err() {
                    due = far_future();
                } else if *open_changed.borrow_and_update() == 0 {
                    due = Instant::now() + head_timeout;
                } else {
                    due = far_future();
                }
            }
        }
    }
    // GOAWAY, then the streams in flight finish (event streams end on shutdown); the server's drain deadline
    // bounds this wait.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// One open stream of the connection, counted until dropped.
struct OpenStream(watch::Sender<usize>);

impl OpenStream {
    fn new(open: watch::Sender<usize>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its stream counted as open.
struct Counted {
    body: Body,
    _stream: OpenStream,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

//! One TLS connection: the handshake, which must be over within `request_head_timeout` like a request head,
//! then the protocol ALPN settled on — HTTP/1.1 on hyper's HTTP/1 connection ([`super::connection`]), HTTP/2
//! on hyper's HTTP/2 connection ([`super::http2`]). An ACME server's `acme-tls/1` handshake has done its work
//! once it is over: the connection is closed.
//!
//! The direct SSE path of plain connections is not taken here: under TLS the socket's bytes are records that
//! rustls must read, so a stream cannot be written around it; over HTTP/2 there is no connection per stream to
//! hand over anyway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::connection::{serve_http1, Http1, Serving};
use crate::metrics::Wire;
use crate::tls::{negotiated, Negotiated, Tls};

/// How long an ACME validation connection is given to take its `close_notify`.
const VALIDATION_CLOSE: Duration = Duration::from_secs(5);

/// What TLS connections are served with, besides [`Serving`].
#[derive(Clone)]
pub(super) struct Secure {
    pub(super) tls: Arc<Tls>,
    /// `Strict-Transport-Security` for every answer, when `hsts_max_age_secs` is set.
    pub(super) hsts: Option<HeaderValue>,
    /// Streams one HTTP/2 connection may have open at once (`http2_max_streams`).
    pub(super) http2_max_streams: u32,
    /// The interval of HTTP/2 PINGs; a peer that does not answer one within it is dropped (`ws_ping_secs`).
    pub(super) http2_ping: Duration,
}

/// Serves one accepted TLS connection until it ends or shutdown has drained it.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, serving: Serving, secure: Secure) {
    let head_due = Instant::now() + serving.head_timeout;
    let handshake = tokio::select! {
        () = serving.shutdown.cancelled() => return,
        handshake = tokio::time::timeout_at(head_due, secure.tls.acceptor().accept(stream)) => handshake,
    };
    let Ok(Ok(mut stream)) = handshake else {
        serving.metrics.tls_handshake_failed();
        return;
    };
    let protocol = negotiated(stream.get_ref().1.alpn_protocol());
    let Serving { app, shutdown, head_timeout, metrics } = serving;
    match protocol {
        Negotiated::AcmeValidation => {
            let _ = tokio::time::timeout(VALIDATION_CLOSE, stream.shutdown()).await;
        }
        Negotiated::Http1 => {
            let _open = metrics.http_connection(Wire::Http1Tls);
            let http1 = Http1 { app, shutdown, head_due, head_timeout, hsts: secure.hsts, plain_tcp: None };
            serve_http1(stream, peer, http1).await;
        }
        Negotiated::Http2 => {
            let _open = metrics.http_connection(Wire::Http2Tls);
            let http2 = super::http2::Http2 { app, shutdown, head_due, head_timeout, secure };
            super::http2::serve(stream, peer, http2).await;
        }
    }
}

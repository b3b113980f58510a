//! The plain-HTTP listener beside an HTTPS one (`redirect_listen`, usually port 80): every request is sent to
//! the same URL over HTTPS with `308 Permanent Redirect` (the method and body are kept), except ACME's HTTP-01
//! challenges, answered at `/.well-known/acme-challenge/<token>` while an order is open.
//!
//! Its connections are hyper's HTTP/1 ones ([`super::connection::serve_http1`]) with the same head timeout, on
//! the same shutdown tracker.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::connection::{serve_http1, Http1, Serving};
use crate::error::ApiError;
use crate::tls::acme::Challenges;

/// Where requests are sent, and the challenges to answer.
#[derive(Clone)]
struct Redirect {
    https_port: u16,
    challenges: Option<Arc<Challenges>>,
}

/// The redirect listener's routes.
fn router(https_port: u16, challenges: Option<Arc<Challenges>>) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(to_https)
        .with_state(Redirect { https_port, challenges })
}

async fn challenge(State(redirect): State<Redirect>, Path(token): Path<String>) -> Response {
    match redirect.challenges.as_ref().and_then(|challenges| challenges.http(&token)) {
        Some(answer) => ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response(),
        None => ApiError::not_found().into_response(),
    }
}

async fn to_https(State(redirect): State<Redirect>, headers: HeaderMap, uri: Uri) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
    let Some(host) = host else {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "a request without a valid Host header")
            .into_response();
    };
    let port = if redirect.https_port == 443 { String::new() } else { format!(":{}", redirect.https_port) };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{}{port}{path}", host.host());
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response()
}

/// Accepts on `listener` until shutdown, each connection on the shutdown tracker.
pub(super) async fn serve(
    listener: TcpListener,
    https_port: u16,
    challenges: Option<Arc<Challenges>>,
    serving: Serving,
) {
    let app = router(https_port, challenges);
    let shutdown = serving.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let http1 = Http1 {
                    app: app.clone(),
                    shutdown: shutdown.clone(),
                    head_due: Instant::now() + serving.head_timeout,
                    head_timeout: serving.head_timeout,
                    hsts: None,
                    plain_tcp: None,
                };
                shutdown.tracker().spawn(serve_connection(stream, peer, http1));
            }
            Err(error) => super::accept_failed(error).await,
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, http1: Http1) {
    serve_http1(stream, peer, http1).await;
}

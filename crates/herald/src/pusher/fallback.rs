//! pusher-js's HTTP fallbacks, for when WebSockets are blocked: `xhr_streaming` and `xhr_polling`, SockJS's
//! framing (`wire/sockjs.rs`) under `/pusher/app/{key}/{server}/{session}/…`.
//!
//! An HTTP session is a [`Session`] like a WebSocket's, run as a task over two bounded queues instead of a socket:
//! client frames arrive through `xhr_send` requests, server frames leave through receive requests — one long
//! streaming answer (`xhr_streaming`), or one answer per poll (`xhr`). The first receive request of a session id
//! admits it (as a WebSocket is admitted; a refusal is answered `o`, the `pusher:error`, `c[code]`). One receive
//! request at a time: a second is answered `c[2010]`, as SockJS does. When no receive request has been attached for
//! [`DISCONNECT_DELAY`], the client is gone and the session ends, as a closed socket would end it. The session is
//! bound to the address that opened it.
//!
//! The queue of server frames holds at most `connection_queue` frames; a client that stops receiving fills it, the
//! session then waits, its subscription's own queue fills, and it is closed as a slow consumer (4100).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::{mpsc, OwnedMutexGuard};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, PollSender};

use super::admission::admit;
use super::session::{Inbound, Outbound};
use super::wire::{sockjs, ServerFrame};
use super::PusherState;
use crate::error::ApiError;
use crate::http::client_ip::ClientIp;

/// How long a session lives without a receive request attached (SockJS's disconnect delay).
pub const DISCONNECT_DELAY: Duration = Duration::from_secs(5);
/// How long a poll is held when there is nothing to send; then it answers `h`.
pub const POLL_WAIT: Duration = Duration::from_secs(25);
/// How often a streaming answer says `h` when there is nothing to send.
pub const HEARTBEAT: Duration = Duration::from_secs(25);
/// Client frames queued for a session, at most (a send waits beyond it).
const INBOUND_QUEUE: usize = 64;
/// Server frames put on one line, at most.
const MAX_BATCH: usize = 64;

/// The path of a session's request: `/pusher/app/{key}/{server}/{session}/…`.
#[derive(Deserialize)]
pub struct SessionPath {
    key: String,
    server: String,
    session: String,
}

impl SessionPath {
    /// The session's id, or `None` when its segments are not pusher-js's.
    fn id(&self) -> Option<String> {
        sockjs::valid_session(&self.server, &self.session)
            .then(|| format!("{}/{}/{}", self.key, self.server, self.session))
    }
}

/// One HTTP session: the queues its task reads and writes, and who may use it.
struct HttpSession {
    ip: IpAddr,
    inbound: mpsc::Sender<Inbound>,
    outbound: Arc<tokio::sync::Mutex<mpsc::Receiver<Outbound>>>,
    /// Cancelled when its client is gone: the session's frames in end, so the session ends.
    gone: CancellationToken,
    /// Receive requests ended since the session began: the expiry after a detach checks nothing attached since.
    detaches: Mutex<u64>,
}

/// The HTTP sessions of this node.
#[derive(Default)]
pub struct HttpSessions {
    sessions: Mutex<HashMap<String, Arc<HttpSession>>>,
}

impl HttpSessions {
    fn get(&self, id: &str) -> Option<Arc<HttpSession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    fn insert(&self, id: String, session: Arc<HttpSession>) {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).insert(id, session);
    }

    fn remove(&self, id: &str, session: &Arc<HttpSession>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.get(id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            sessions.remove(id);
        }
    }

    /// How many sessions there are.
    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a receive request answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Receive {
    /// One long answer of many lines.
    Streaming,
    /// One line per answer.
    Polling,
}

/// `POST /pusher/app/{key}/{server}/{session}/xhr_streaming`.
pub async fn xhr_streaming(
    state: State<PusherState>,
    path: Path<SessionPath>,
    ip: ClientIp,
    query: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    receive(state, path, ip, query, headers, Receive::Streaming).await
}

/// `POST /pusher/app/{key}/{server}/{session}/xhr`.
pub async fn xhr_polling(
    state: State<PusherState>,
    path: Path<SessionPath>,
    ip: ClientIp,
    query: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    receive(state, path, ip, query, headers, Receive::Polling).await
}

/// An answer of SockJS lines.
fn lines(body: Body) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/javascript; charset=UTF-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0")),
        (header::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ];
    (StatusCode::OK, headers, body).into_response()
}

fn unknown_session() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "session_not_found", "no such session: open one with a receive request")
}

async fn receive(
    State(state): State<PusherState>,
    Path(path): Path<SessionPath>,
    ClientIp(ip): ClientIp,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    mode: Receive,
) -> Result<Response, ApiError> {
    let id = path.id().ok_or_else(unknown_session)?;
    let sessions = &state.pusher.http_sessions;
    let (session, opened) = match sessions.get(&id) {
        Some(session) if session.ip == ip => (session, false),
        Some(_) => return Err(unknown_session()),
        None => match admit(&state, &path.key, query.as_deref(), &headers, ip) {
            Ok(session) => (open(&state, id.clone(), session, ip), true),
            Err(close) => {
                let error = ServerFrame::Error { code: Some(close.code()), message: close.reason() }.encode();
                let refusal =
                    [sockjs::OPEN, &sockjs::array([error.as_slice()]), &sockjs::close(close.code(), close.reason())]
                        .concat();
                return Ok(lines(Body::from(refusal)));
            }
        },
    };
    let Ok(frames) = session.outbound.clone().try_lock_owned() else {
        return Ok(lines(Body::from(sockjs::close(2010, "Another connection still open"))));
    };
    let attached = Attached { state: state.clone(), id, session, frames: Some(frames) };
    let first = match (mode, opened) {
        (Receive::Streaming, true) => Some([&sockjs::prelude()[..], sockjs::OPEN].concat()),
        (Receive::Streaming, false) => Some(sockjs::prelude().to_vec()),
        // A poll that opens the session answers `o` alone.
        (Receive::Polling, true) => return Ok(lines(Body::from(sockjs::OPEN))),
        (Receive::Polling, false) => None,
    };
    let body = futures_util::stream::unfold(Some((attached, first)), move |next| async move {
        let (mut attached, first) = next?;
        if let Some(first) = first {
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(first)), Some((attached, None))));
        }
        let wait = if mode == Receive::Streaming { HEARTBEAT } else { POLL_WAIT };
        let (line, done) = attached.next_line(wait).await;
        let more = (mode == Receive::Streaming && !done).then_some((attached, None));
        Some((Ok(line), more))
    });
    Ok(lines(Body::from_stream(body)))
}

/// Starts the session's task and records it.
fn open(state: &PusherState, id: String, session: super::session::Session, ip: IpAddr) -> Arc<HttpSession> {
    let (inbound, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (outbound, outbound_rx) = mpsc::channel(state.app.hub.config().connection_queue);
    let gone = CancellationToken::new();
    let http = Arc::new(HttpSession {
        ip,
        inbound,
        outbound: Arc::new(tokio::sync::Mutex::new(outbound_rx)),
        gone: gone.clone(),
        detaches: Mutex::new(0),
    });
    state.pusher.http_sessions.insert(id.clone(), http.clone());
    let frames_in = futures_util::stream::unfold((inbound_rx, gone), |(mut rx, gone)| async move {
        tokio::select! {
            () = gone.cancelled() => None,
            frame = rx.recv() => frame.map(|frame| (frame, (rx, gone))),
        }
    });
    let frames_out = PollSender::new(outbound).sink_map_err(|_| ());
    let (pusher, registered) = (state.pusher.clone(), http.clone());
    let task = async move {
        session.run(Box::pin(frames_in), Box::pin(frames_out)).await;
        // Ended on its own (a close) or because its client left: a later request finds no session.
        pusher.http_sessions.remove(&id, &registered);
    };
    state.app.shutdown.tracker().spawn(task);
    http
}

/// A receive request attached to its session: it takes the session's frames until it ends, and when it ends (it
/// answered, or its client left) the session expires unless another attaches within [`DISCONNECT_DELAY`].
struct Attached {
    state: PusherState,
    id: String,
    session: Arc<HttpSession>,
    frames: Option<OwnedMutexGuard<mpsc::Receiver<Outbound>>>,
}

impl Attached {
    /// The next line: frames (up to a batch), the close, or `h` after `wait` with nothing; and whether the
    /// session is over.
    async fn next_line(&mut self, wait: Duration) -> (Bytes, bool) {
        let Some(frames) = self.frames.as_mut() else { return (sockjs::close(3000, "Go away!"), true) };
        let first = tokio::select! {
            frame = frames.recv() => frame,
            () = tokio::time::sleep(wait) => return (Bytes::from_static(sockjs::HEARTBEAT), false),
        };
        let mut texts = Vec::new();
        let mut next = first;
        loop {
            match next {
                Some(Outbound::Text(text)) => texts.push(text),
                Some(Outbound::Close(code, reason)) => {
                    let close = sockjs::close(code, reason);
                    if texts.is_empty() {
                        return (close, true);
                    }
                    return ([&sockjs::array(texts.iter().map(|t| &t[..]))[..], &close[..]].concat().into(), true);
                }
                // The session ended without a close (its client left, or shutdown cut it).
                None if texts.is_empty() => return (sockjs::close(3000, "Go away!"), true),
                None => break,
            }
            if texts.len() >= MAX_BATCH {
                break;
            }
            match frames.try_recv() {
                Ok(frame) => next = Some(frame),
                Err(_) => break,
            }
        }
        (sockjs::array(texts.iter().map(|t| &t[..])), false)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        drop(self.frames.take());
        let ended = {
            let mut detaches = self.session.detaches.lock().unwrap_or_else(PoisonError::into_inner);
            *detaches += 1;
            *detaches
        };
        let (session, id, pusher) = (self.session.clone(), self.id.clone(), self.state.pusher.clone());
        let expire = async move {
            let deadline = Instant::now() + DISCONNECT_DELAY;
            tokio::time::sleep_until(deadline).await;
            let attached_since = *session.detaches.lock().unwrap_or_else(PoisonError::into_inner) != ended;
            // Another receive request took the frames since, or holds them now: the client is still there.
            if attached_since || session.outbound.try_lock().is_err() {
                return;
            }
            session.gone.cancel();
            pusher.http_sessions.remove(&id, &session);
        };
        self.state.app.shutdown.tracker().spawn(expire);
    }
}

/// `POST /pusher/app/{key}/{server}/{session}/xhr_send`: the client's frames, a JSON array of strings; `204`.
pub async fn xhr_send(
    State(state): State<PusherState>,
    Path(path): Path<SessionPath>,
    ClientIp(ip): ClientIp,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path.id().ok_or_else(unknown_session)?;
    let session = state.pusher.http_sessions.get(&id).filter(|s| s.ip == ip).ok_or_else(unknown_session)?;
    let max = state.app.hub.config().max_frame_bytes;
    let frames = match axum::body::to_bytes(body, max).await {
        Ok(body) => {
            sockjs::sent(&body).ok_or_else(|| ApiError::bad_request("invalid_body", "send a JSON array of strings"))?
        }
        Err(_) => {
            // Too large (or cut): the session closes with 1009, as a WebSocket does for a frame too large.
            let _ = session.inbound.send(Inbound::TooBig).await;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    };
    for frame in frames {
        if session.inbound.send(Inbound::Text(frame)).await.is_err() {
            return Err(unknown_session());
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl std::fmt::Debug for HttpSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSessions").field("sessions", &self.len()).finish()
    }
}

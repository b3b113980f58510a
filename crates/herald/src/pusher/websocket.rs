//! `GET /app/{key}?protocol=7&client=js&version=…`: the Pusher WebSocket.
//!
//! Every connection that asks for the upgrade gets it, even one that will be refused (`admission.rs` decides):
//! pusher-js reads a refusal from the close code (after a `pusher:error` frame with the same code) and knows from
//! its range whether to retry, while an HTTP error status makes it retry forever.

use std::pin::pin;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{future, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};

use super::admission::admit;
use super::session::{Inbound, Outbound, Session};
use super::wire::{Close, ServerFrame};
use super::PusherState;
use crate::error::ApiError;
use crate::http::client_ip::ClientIp;
use crate::http::websocket::{self, UpgradeRejection, WebSocket, WebSocketUpgrade};

/// `GET /app/{key}`.
pub async fn connect(
    State(state): State<PusherState>,
    path: Result<Path<String>, PathRejection>,
    ClientIp(ip): ClientIp,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, UpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let key = path.map(|Path(key)| key).unwrap_or_default();
    // Boxed: the session waits in the upgrade's callback, which its task keeps room for after the session moved on.
    let admitted = admit(&state, &key, raw.as_deref(), &headers, ip).map(Box::new);
    let max = state.app.hub.config().max_frame_bytes;
    let tracker = state.app.shutdown.tracker().clone();
    let config = websocket::config(max);
    // The connection's future is boxed and the socket split before it is made: the upgrade's task keeps room for
    // what it holds at each step, and the socket moved from one future into the next would take room in each
    // (measured: 5.4 KiB of task per idle connection before, docs/BENCHMARKS.md).
    Ok(upgrade.on_upgrade(config, move |socket| {
        let (sink, stream) = socket.split();
        Box::pin(tracker.track_future(serve(admitted, sink, stream)))
    }))
}

/// `GET /app/{key}/{anything}`: upgraded, then closed with 4005.
pub async fn wrong_path(
    State(state): State<PusherState>,
    upgrade: Result<WebSocketUpgrade, UpgradeRejection>,
) -> Result<Response, ApiError> {
    let Ok(upgrade) = upgrade else { return Err(ApiError::not_found()) };
    let tracker = state.app.shutdown.tracker().clone();
    let max = state.app.hub.config().max_frame_bytes;
    let config = websocket::config(max);
    Ok(upgrade.on_upgrade(config, move |socket| tracker.track_future(refuse(socket.split().0, Close::PathNotFound))))
}

/// Runs the session over the socket, or tells the client why it has none.
async fn serve(admitted: Result<Box<Session>, Close>, sink: Sink, stream: SplitStream<WebSocket>) {
    match admitted {
        // Out of its box first: a value moved out of a box leaves the allocation alive until the box's scope ends.
        Ok(session) => drive(unbox(session), sink, stream).await,
        Err(close) => refuse(sink, close).await,
    }
}

/// The session, its box freed.
fn unbox(session: Box<Session>) -> Session {
    *session
}

/// The socket's writing half.
type Sink = SplitSink<WebSocket, WsMessage>;

/// Runs `session` over the socket: text frames in, text frames out.
async fn drive(session: Session, sink: Sink, stream: SplitStream<WebSocket>) {
    let inbound = stream
        .take_while(|frame| future::ready(!matches!(frame, Ok(WsMessage::Close(_)))))
        .scan((), |(), frame| {
            future::ready(match frame {
                Ok(WsMessage::Text(text)) => Some(Some(Inbound::Text(text.as_str().to_owned()))),
                Ok(WsMessage::Binary(_)) => Some(Some(Inbound::Binary)),
                // Ping (answered by the library) and pong only prove the peer is alive.
                Ok(_) => Some(None),
                Err(err) => too_big(err).then_some(Some(Inbound::TooBig)),
            })
        })
        .filter_map(future::ready);
    let outbound = sink.with(|out: Outbound| {
        future::ready(Ok::<_, WsError>(match out {
            // Frames are JSON written from UTF-8 text, so the check never fails.
            Outbound::Text(bytes) => WsMessage::Text(Utf8Bytes::try_from(bytes).unwrap_or_default()),
            Outbound::Close(code, reason) => {
                WsMessage::Close(Some(CloseFrame { code: code.into(), reason: Utf8Bytes::from_static(reason) }))
            }
        }))
    });
    // Pinned in place: this future is already on the heap.
    session.run(pin!(inbound), pin!(outbound)).await;
}

/// Upgraded only to say why not: a `pusher:error` and the close with the same code.
async fn refuse(mut socket: Sink, close: Close) {
    let error = ServerFrame::Error { code: Some(close.code()), message: close.reason() };
    let text = Utf8Bytes::try_from(bytes::Bytes::from(error.encode())).unwrap_or_default();
    let _ = socket.send(WsMessage::Text(text)).await;
    let frame = CloseFrame { code: close.code().into(), reason: Utf8Bytes::from_static(close.reason()) };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), socket.send(WsMessage::Close(Some(frame)))).await;
}

/// Whether a read failed on a frame over `max_frame_bytes`.
fn too_big(err: WsError) -> bool {
    matches!(err, WsError::Capacity(_))
}

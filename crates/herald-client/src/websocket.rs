//! Opening WebSockets: the one handshake used by the subscription transport and by [`TextWebSocket`], the
//! escape hatch for frames this client does not interpret itself (tests of Herald's protocol, or another
//! server driven by the same benchmark).
//!
//! tungstenite's default read buffer is 128 KiB, and it zeroes the free part before every read: a
//! benchmark with 10,000 connections would touch 1.2 GiB and spend its time clearing memory. Herald's frames
//! are small, so the buffer here is 8 KiB; a larger frame still grows it as needed.

use crate::io::Stream;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::client::Client;
use crate::error::ClientError;
use crate::http::api_error;

/// Bytes read from the socket per call at most (see the module documentation).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Opens a WebSocket on `route` (relative to the base URL). A refusal before the upgrade is the server's
/// ordinary HTTP error.
pub(crate) async fn connect(client: &Client, route: &str) -> Result<WebSocketStream<Stream>, ClientError> {
    let stream = client.connect(true).await?.stream;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES).write_buffer_size(0);
    let mut request = client.base().ws_url(route).into_client_request()?;
    if let Some(authorization) = client.authorization() {
        let value = authorization
            .parse()
            .map_err(|_| ClientError::InvalidRequest("a credential must be printable ASCII".into()))?;
        request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((socket, _)) => Ok(socket),
        // A refusal before the upgrade (`transport_disabled` …) is an ordinary Herald error.
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            Err(api_error(response.status().as_u16(), body))
        }
        Err(err) => Err(err.into()),
    }
}

/// The error for a close frame.
pub(crate) fn closed(close: Option<tungstenite::protocol::CloseFrame>) -> ClientError {
    let (code, reason) = close.map_or((None, String::new()), |c| (Some(c.code.into()), c.reason.to_string()));
    ClientError::Closed { code, reason }
}

/// A WebSocket to any route of the server, seen as a sequence of text (or binary) payloads: see
/// [`Client::websocket`]. Pings are answered by the library; dropping it closes the connection.
pub struct TextWebSocket {
    socket: WebSocketStream<Stream>,
}

impl std::fmt::Debug for TextWebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextWebSocket").finish_non_exhaustive()
    }
}

impl TextWebSocket {
    /// Sends one text frame.
    pub async fn send(&mut self, text: &str) -> Result<(), ClientError> {
        Ok(self.socket.send(Message::text(text)).await?)
    }

    /// The payload of the next text or binary frame; `None` when the connection ended without a close
    /// frame, [`ClientError::Closed`] when the server closed it.
    pub async fn next(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            return match self.socket.next().await? {
                Ok(Message::Text(text)) => Some(Ok(Bytes::from(text))),
                Ok(Message::Binary(data)) => Some(Ok(data)),
                Ok(Message::Close(close)) => Some(Err(closed(close))),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Err(err) => Some(Err(err.into())),
            };
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> Result<(), ClientError> {
        match self.socket.close(None).await {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

impl Client {
    /// Opens a WebSocket on `route` (relative to the base URL, e.g. `/v1/ws`) and hands over its frames as
    /// they come, uninterpreted; [`Client::subscribe`] is the way to follow Herald's channels.
    pub async fn websocket(&self, route: &str) -> Result<TextWebSocket, ClientError> {
        Ok(TextWebSocket { socket: connect(self, route).await? })
    }
}

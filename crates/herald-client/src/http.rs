//! HTTP/1.1 (or HTTP/2, when an `https://` server chooses it) on hyper's low-level client: a fresh connection
//! per request by default, one kept open for many requests in turn ([`HttpConnection`]), or, over HTTP/2,
//! streams sharing connections ([`Client::with_http2_sharing`]).
//!
//! One connection per request keeps the client small (no pool, no `hyper-util`) and makes each long poll
//! and each SSE stream its own connection. A publisher that sends many messages keeps one
//! [`HttpConnection`] instead, as a backend would. Whole answers are read up to [`MAX_RESPONSE_BYTES`] so
//! that a misbehaving server cannot exhaust the client's memory; a stream is read chunk by chunk instead
//! ([`HttpStream`], and `subscribe::sse`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::ClientError;
use crate::io::{HyperIo, TokioExecutor};
use crate::url::BaseUrl;

/// The largest answer body read into memory: 128 MiB, above a `/v1/poll` answer of 1000 messages of the
/// largest body Herald accepts by default (64 KiB).
pub const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

const USER_AGENT: &str = concat!("herald-client/", env!("CARGO_PKG_VERSION"));

/// The task that drives one connection; aborted when the answer it serves is dropped, so a dropped SSE
/// subscription closes its socket at once.
struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An answer whose body has not been read yet.
pub(crate) struct StreamingResponse {
    /// The status.
    pub(crate) status: StatusCode,
    /// The headers.
    pub(crate) headers: HeaderMap,
    /// The body, to be read frame by frame.
    pub(crate) body: Incoming,
    _connection: Option<Arc<ConnectionTask>>,
}

/// One connection's request side, HTTP/1.1 or HTTP/2.
#[derive(Clone)]
enum Sender {
    Http1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<Response<Incoming>, ClientError> {
        match self {
            Sender::Http1(sender) => {
                let mut sender = sender.lock().await;
                sender.ready().await?;
                Ok(sender.send_request(request).await?)
            }
            Sender::Http2(sender) => {
                // HTTP/2 takes the authority from the URI, not from `Host`.
                let authority = request.headers_mut().remove(hyper::header::HOST);
                let authority = authority.as_ref().and_then(|a| a.to_str().ok()).unwrap_or("localhost");
                let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
                *request.uri_mut() = format!("https://{authority}{path}")
                    .parse()
                    .map_err(|e: hyper::http::uri::InvalidUri| ClientError::InvalidRequest(e.to_string()))?;
                let mut sender = sender.clone();
                sender.ready().await?;
                Ok(sender.send_request(request).await?)
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(_) => false,
            Sender::Http2(sender) => sender.is_closed(),
        }
    }
}

/// HTTP/2 connections shared by up to `streams` requests each.
pub(crate) struct Http2Pool {
    streams: usize,
    current: tokio::sync::Mutex<Option<(Sender, Arc<ConnectionTask>, usize)>>,
}

impl Http2Pool {
    pub(crate) fn new(streams: usize) -> Self {
        Self { streams, current: tokio::sync::Mutex::new(None) }
    }
}

/// A request for `path_and_query` (already under the base URL's prefix) with the client's own headers.
fn build_request(
    base: &BaseUrl,
    authorization: Option<&Arc<str>>,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ClientError> {
    let mut request = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, base.authority())
        .header(hyper::header::USER_AGENT, USER_AGENT);
    if let Some(authorization) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, &**authorization);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(body)).map_err(|e| ClientError::InvalidRequest(e.to_string()))
}

/// Opens a connection and the task that drives it.
async fn open(client: &Client) -> Result<(Sender, Arc<ConnectionTask>), ClientError> {
    let connected = client.connect(false).await?;
    let io = HyperIo::new(connected.stream);
    // A failed connection also fails the request or the body being read, which is where the caller sees it.
    if connected.http2 {
        let (sender, connection) = http2::handshake(TokioExecutor, io).await?;
        let task = ConnectionTask(tokio::spawn(async move {
            let _ = connection.await;
        }));
        return Ok((Sender::Http2(sender), Arc::new(task)));
    }
    let (sender, connection) = http1::handshake(io).await?;
    let task = ConnectionTask(tokio::spawn(async move {
        let _ = connection.await;
    }));
    Ok((Sender::Http1(Arc::new(tokio::sync::Mutex::new(sender))), Arc::new(task)))
}

/// A connection for one more request: a new one, or, with HTTP/2 sharing, the current one while it has room.
async fn connection_for(client: &Client) -> Result<(Sender, Arc<ConnectionTask>), ClientError> {
    let Some(pool) = &client.http2_sharing else { return open(client).await };
    let mut current = pool.current.lock().await;
    if let Some((sender, task, used)) = current.as_mut() {
        if *used < pool.streams && !sender.is_closed() {
            *used += 1;
            return Ok((sender.clone(), task.clone()));
        }
    }
    let (sender, task) = open(client).await?;
    if matches!(sender, Sender::Http2(_)) {
        *current = Some((sender.clone(), task.clone(), 1));
    }
    Ok((sender, task))
}

/// Sends one request (on a new connection, or a shared HTTP/2 one) and returns as soon as the answer's head has
/// arrived.
pub(crate) async fn send(
    client: &Client,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<StreamingResponse, ClientError> {
    let request = build_request(client.base(), client.authorization(), method, path_and_query, headers, body)?;
    let (sender, task) = connection_for(client).await?;
    let response = sender.send(request).await?;
    let (parts, body) = response.into_parts();
    Ok(StreamingResponse { status: parts.status, headers: parts.headers, body, _connection: Some(task) })
}

/// Reads a whole body, refusing one larger than [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ClientError> {
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => match err.downcast::<hyper::Error>() {
            Ok(err) => Err(ClientError::Http(*err)),
            Err(err) if err.is::<LengthLimitError>() => {
                Err(ClientError::Protocol(format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes")))
            }
            Err(err) => Err(ClientError::Protocol(err.to_string())),
        },
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
    message: String,
}

/// The error for a non-2xx answer: [`ClientError::Api`] when the body is Herald's documented
/// `{"error":{"code":…,"message":…}}`, else [`ClientError::Protocol`] quoting the start of the body.
pub(crate) fn api_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Api { status, code: error.code, message: error.message },
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            ClientError::Protocol(format!("HTTP {status} without a Herald error body: {text:?}"))
        }
    }
}

/// The whole answer to [`Client::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Every header, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON of type `T` after a 2xx answer; otherwise the error the answer describes.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        if !(200..300).contains(&self.status) {
            return Err(api_error(self.status, &self.body));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Protocol(format!("HTTP {} with an unexpected body: {e}", self.status)))
    }
}

/// Every header, names in lower case, values as (lossy) text.
fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

fn parse_method(method: &str) -> Result<Method, ClientError> {
    Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::InvalidRequest(e.to_string()))
}

impl Client {
    /// Sends any request and reads the whole answer, whatever its status: the escape hatch for testing the
    /// HTTP contract itself (bad bodies, `ETag`s, `/latest`, `/healthz` …). `path_and_query` is relative to
    /// the base URL and sent as is, so it must already be percent-encoded; an empty `body` sends none.
    pub async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse, ClientError> {
        self.connect_http().await?.request(method, path_and_query, headers, body).await
    }

    /// Sends any request and returns once the answer's head has arrived, with its body to be read chunk by
    /// chunk: [`Client::request`] for answers that never end, such as an event stream.
    pub async fn request_stream(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpStream, ClientError> {
        let path = self.base().path(path_and_query);
        let response = send(self, parse_method(method)?, &path, headers, Bytes::new()).await?;
        Ok(HttpStream { status: response.status.as_u16(), headers: header_list(&response.headers), response })
    }

    /// Opens one HTTP/1.1 connection to be kept for many requests in turn, as a backend publishing a stream
    /// of messages would. Each [`Client::request`] or [`Client::publish`] otherwise opens its own.
    pub async fn connect_http(&self) -> Result<HttpConnection, ClientError> {
        let (sender, task) = open(self).await?;
        let authorization = self.authorization().cloned();
        Ok(HttpConnection { base: self.base().clone(), authorization, sender, _task: task })
    }
}

/// An answer whose body arrives chunk by chunk: see [`Client::request_stream`]. Dropping it closes the
/// connection.
pub struct HttpStream {
    /// The HTTP status code.
    pub status: u16,
    /// Every header, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    response: StreamingResponse,
}

impl std::fmt::Debug for HttpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStream").field("status", &self.status).field("headers", &self.headers).finish()
    }
}

impl HttpStream {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The next chunk of the body as it arrived; `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            match self.response.body.frame().await? {
                Err(err) => return Some(Err(err.into())),
                // Trailers carry no body.
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some(Ok(data)),
                    Err(_) => continue,
                },
            }
        }
    }
}

/// One HTTP/1.1 connection kept open for many requests, one at a time: see [`Client::connect_http`]. It is
/// not reopened: once the server closes it, every request fails, and the caller opens another.
pub struct HttpConnection {
    base: BaseUrl,
    authorization: Option<Arc<str>>,
    sender: Sender,
    _task: Arc<ConnectionTask>,
}

impl std::fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnection").field("authority", &self.base.authority()).finish_non_exhaustive()
    }
}

impl HttpConnection {
    /// Sends a request on this connection and returns once the answer's head has arrived.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<StreamingResponse, ClientError> {
        let path = self.base.path(path_and_query);
        let request = build_request(&self.base, self.authorization.as_ref(), method, &path, headers, body)?;
        let (parts, body) = self.sender.send(request).await?.into_parts();
        Ok(StreamingResponse { status: parts.status, headers: parts.headers, body, _connection: None })
    }

    /// [`Client::request`] on this connection.
    pub async fn request(
        &mut self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse, ClientError> {
        let response = self.send(parse_method(method)?, path_and_query, headers, Bytes::copy_from_slice(body)).await?;
        let headers = header_list(&response.headers);
        let status = response.status.as_u16();
        Ok(HttpResponse { status, headers, body: read_body(response.body).await? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_herald_error_body_becomes_an_api_error() {
        let body = br#"{"error":{"code":"invalid_channel","message":"channel name contains ' '"}}"#;
        match api_error(400, body) {
            ClientError::Api { status, code, message } => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (400, "invalid_channel", "channel name contains ' '")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn any_other_error_body_is_a_protocol_error_quoting_it() {
        let err = api_error(502, b"<html>Bad Gateway</html>");
        assert!(matches!(&err, ClientError::Protocol(text) if text.contains("502") && text.contains("Bad Gateway")));
    }

    #[test]
    fn json_of_a_success_parses_the_body_and_of_a_failure_returns_the_error() {
        let ok = HttpResponse { status: 200, headers: vec![], body: Bytes::from_static(br#"{"status":"ok"}"#) };
        assert_eq!(ok.json::<serde_json::Value>().unwrap()["status"], "ok");
        let refused = HttpResponse {
            status: 404,
            headers: vec![],
            body: Bytes::from_static(br#"{"error":{"code":"channel_empty","message":"no message"}}"#),
        };
        assert!(matches!(refused.json::<serde_json::Value>(), Err(ClientError::Api { status: 404, .. })));
    }

    #[test]
    fn header_lookup_ignores_case() {
        let response =
            HttpResponse { status: 200, headers: vec![("etag".into(), "\"AQ\"".into())], body: Bytes::new() };
        assert_eq!(response.header("ETag"), Some("\"AQ\""));
        assert_eq!(response.header("X-Herald-Event"), None);
    }
}

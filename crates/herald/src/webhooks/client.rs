//! One webhook request: a POST over HTTP/1.1 on a connection of its own, bounded by a timeout.
//!
//! A connection per request keeps this small and a hung receiver's connection short-lived (dropped with the
//! request at its timeout); requests are batches, so there are few of them. Only `http://` is spoken for now.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go, read from an `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    host: String,
    port: u16,
    /// `host[:port]`, the `Host` header.
    authority: String,
    /// The path and query.
    path: String,
}

impl Target {
    /// Reads `url`; an error says what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or("the URL must start with http://")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err("the URL needs a host (and no user info)".into());
        }
        let (host, port) = match authority.rsplit_once(':').filter(|(_, port)| !port.contains(']')) {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| "the port is not a number")?),
            None => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err("the URL needs a host".into());
        }
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
        Ok(Self { host, port, authority: authority.to_owned(), path })
    }
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("{0}")]
    Connection(String),
}

/// POSTs `body` (JSON) with `headers`; the answer's status.
pub(crate) async fn post(
    target: &Target,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<u16, SendError> {
    let exchange = async {
        let failed = |err: &dyn std::fmt::Display| SendError::Connection(err.to_string());
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| failed(&e))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| failed(&e))?;
        let mut request = Request::post(target.path.as_str())
            .header(HOST, target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(&e))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|e| failed(&e))?;
            request.headers_mut().insert(HeaderName::from_static(name), value);
        }
        let answer = async {
            let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
            Ok(response.status().as_u16())
        };
        tokio::pin!(connection, answer);
        tokio::select! {
            biased;
            answered = &mut answer => answered,
            // A receiver that answers and closes ends the connection as the answer arrives: take the answer.
            ended = &mut connection => match ended {
                Ok(()) => answer.await,
                Err(err) => Err(failed(&err)),
            },
        }
    };
    // Dropped at the timeout, the connection closes: a hung receiver holds nothing of ours.
    tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(SendError::Timeout(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_into_host_port_and_path() {
        let t = Target::parse("http://backend:8080/hooks/herald?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str(), t.path.as_str()),
            ("backend", 8080, "backend:8080", "/hooks/herald?x=1")
        );
        let t = Target::parse("http://127.0.0.1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 80, "/"));
        let t = Target::parse("http://[::1]:9000/h").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert!(Target::parse("https://x/").is_err());
        assert!(Target::parse("http://:80/").is_err());
        assert!(Target::parse("http://h:port/").is_err());
        assert!(Target::parse("http://user@h/").is_err());
    }
}

//! The one error type of the client, so a caller can tell apart what it can fix (a bad URL, a refused
//! request), what the network did (I/O, a dropped connection, a WebSocket close) and what the server got
//! wrong (an answer that breaks the documented protocol).

use tokio_tungstenite::tungstenite;

/// Everything that can go wrong talking to Herald.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not `http://host[:port][/prefix]`.
    #[error("invalid Herald URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A request that cannot be sent as written (a method, path or header that is not valid HTTP, or a
    /// subscription without channels).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The data to publish could not be encoded as JSON.
    #[error("the data cannot be encoded as JSON")]
    InvalidData(#[source] serde_json::Error),
    /// Connecting, reading or writing the socket failed.
    #[error("I/O error talking to Herald")]
    Io(#[from] std::io::Error),
    /// TLS could not be set up (roots, a server name).
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP exchange failed (malformed answer, connection closed mid-body …).
    #[error("HTTP error talking to Herald")]
    Http(#[from] hyper::Error),
    /// The WebSocket handshake or connection failed.
    #[error("WebSocket error talking to Herald")]
    WebSocket(#[from] tungstenite::Error),
    /// Herald answered with its documented JSON error, `{"error":{"code":…,"message":…}}`.
    #[error("Herald answered {status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code, such as `invalid_channel`.
        code: String,
        /// The human-readable explanation.
        message: String,
    },
    /// Herald answered a WebSocket request with an `error` frame.
    #[error("Herald refused a WebSocket request: {code}: {message}")]
    Refused {
        /// The stable error code, such as `invalid_cursor`.
        code: String,
        /// The human-readable explanation.
        message: String,
    },
    /// Herald closed the WebSocket: `1001` when it shuts down, `4001` for a slow consumer. Resume from
    /// [`Subscription::cursor`](crate::Subscription::cursor).
    #[error("Herald closed the WebSocket{}: {reason}", with_code(*.code))]
    Closed {
        /// The close code, when the close frame carried one.
        code: Option<u16>,
        /// The close reason, possibly empty.
        reason: String,
    },
    /// Herald's answer does not follow the documented protocol.
    #[error("unexpected answer from Herald: {0}")]
    Protocol(String),
}

/// ` with code N`, or nothing for a close frame without a code.
fn with_code(code: Option<u16>) -> String {
    code.map(|code| format!(" with code {code}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_says_its_code_when_it_has_one() {
        let slow = ClientError::Closed { code: Some(4001), reason: "slow consumer".into() };
        assert_eq!(slow.to_string(), "Herald closed the WebSocket with code 4001: slow consumer");
        let bare = ClientError::Closed { code: None, reason: String::new() };
        assert_eq!(bare.to_string(), "Herald closed the WebSocket: ");
    }
}

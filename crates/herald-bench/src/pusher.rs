//! The Pusher Channels protocol as the load generator speaks it, to Herald and to Soketi alike: one app whose id,
//! key and secret both servers are started with (`bench/pusher.sh`), the signed `POST /apps/{id}/events` a
//! backend SDK sends, and the WebSocket frames of a pusher-js subscriber (raw frames: the load needs no more).
//!
//! Signing follows the HTTP API's rule: `auth_signature = hex(HMAC-SHA256(secret, "POST\n" + path + "\n" + Q))`
//! where `Q` is the sorted query without the signature, `body_md5` included.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use sha2::Sha256;

/// The bench app's id, key and secret (the servers under test are configured with the same).
pub(crate) const APP_ID: &str = "herald-bench";
/// The app's key, in the WebSocket path.
pub(crate) const APP_KEY: &str = "herald-bench-key";
/// The app's secret, which signs API requests.
pub(crate) const APP_SECRET: &str = "herald-bench-secret";
/// The event name every published message carries.
pub(crate) const EVENT: &str = "bench";

/// The WebSocket route of a pusher-js client of the bench app.
pub(crate) fn websocket_route() -> String {
    format!("/app/{APP_KEY}?protocol=7&client=js&version=8.4.0&flash=false")
}

/// The subscribe frame for a public channel.
pub(crate) fn subscribe_frame(channel: &str) -> String {
    serde_json::json!({ "event": "pusher:subscribe", "data": { "auth": "", "channel": channel } }).to_string()
}

/// The answer to a server's `pusher:ping`.
pub(crate) const PONG: &str = r#"{"event":"pusher:pong","data":"{}"}"#;

/// A frame from the server, as far as the load generator reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct Frame {
    pub(crate) event: String,
    #[serde(default)]
    pub(crate) data: serde_json::Value,
}

impl Frame {
    /// Reads a text frame.
    pub(crate) fn parse(text: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(text).map_err(|err| format!("unreadable Pusher frame: {err}"))
    }

    /// `data` as the published string (a server event's `data` is the string the API was given).
    pub(crate) fn data_text(&self) -> Option<&str> {
        self.data.as_str()
    }
}

/// The body of `POST /apps/{id}/events` publishing `data` (already a JSON string literal, quotes included) to
/// `channel`.
pub(crate) fn event_body(channel: &str, data_literal: &str) -> String {
    format!(r#"{{"name":"{EVENT}","channel":{},"data":{data_literal}}}"#, serde_json::Value::from(channel))
}

/// The path and query of a signed `POST /apps/{id}/events` with `body`, at unix time `timestamp`.
pub(crate) fn signed_events_route(body: &[u8], timestamp: u64) -> String {
    let path = format!("/apps/{APP_ID}/events");
    let md5 = hex(&Md5::digest(body));
    // Already sorted by key, values need no escaping.
    let query = format!("auth_key={APP_KEY}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}");
    let signature = sign(APP_SECRET, &format!("POST\n{path}\n{query}"));
    format!("{path}?{query}&auth_signature={signature}")
}

/// `hex(HMAC-SHA256(secret, text))`.
fn sign(secret: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(text.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_method_path_and_sorted_query() {
        // Computed independently with Python's hmac and hashlib.
        let body = br#"{"name":"bench","channel":"c","data":"x"}"#;
        assert_eq!(hex(&Md5::digest(body)), "8997143062aed38d794283a125dfe0b9");
        let q = "auth_key=k&auth_timestamp=1700000000&auth_version=1.0&body_md5=8997143062aed38d794283a125dfe0b9";
        assert_eq!(
            sign("s", &format!("POST\n/apps/1/events\n{q}")),
            "0f5627d98439786ea19c4134c8c9d5073bad83fb81f6a14eab35b6a85daabe98"
        );
    }

    #[test]
    fn the_event_body_carries_the_payload_as_the_data_string() {
        let body = event_body("bench-x-0", r#""1:2:3:4:xx""#);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["data"], "1:2:3:4:xx");
        assert_eq!(value["channel"], "bench-x-0");
    }

    #[test]
    fn a_server_event_gives_back_its_data_string() {
        let frame = Frame::parse(br#"{"event":"bench","channel":"c","data":"1:2:3:4:xx"}"#).unwrap();
        assert_eq!((frame.event.as_str(), frame.data_text()), ("bench", Some("1:2:3:4:xx")));
    }
}

//! What a webhook request carries, as pure functions: its body and its signature headers, in Herald's format and
//! in Pusher's.
//!
//! **Herald's format** (docs/WEBHOOKS.md): `{"time_ms":…,"events":[{"id","name","channel","time_ms",…}]}`, each
//! event with the id a receiver deduplicates on; the header `Herald-Webhook-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<body>")>` proves the sender and the time (a receiver refuses an old `t`, so a
//! recorded request cannot be played again later).
//!
//! **Pusher's format** (pusher.com/docs/channels/server_api/webhooks): `{"time_ms":…,"events":[{"name",
//! "channel",…}]}`, `X-Pusher-Key: <key>` and `X-Pusher-Signature: <hex HMAC-SHA256(secret, body)>`, which the
//! official server SDKs' `webhook()` helpers check. Member events carry `user_id` only; client events carry
//! `event`, `data` (a string), `socket_id` and `user_id` when known.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hub::{Entry, LifecycleEvent};
use herald_proto::json::push_string;

/// How a receiver reads the requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Herald's body, signed with the endpoint's secret.
    Herald {
        /// The secret.
        secret: String,
    },
    /// Pusher's body and headers.
    Pusher {
        /// The app key, sent as `X-Pusher-Key`.
        key: String,
        /// The app secret.
        secret: String,
        /// The app's channels are named with this prefix in Herald; webhooks name them without it.
        channel_prefix: String,
    },
}

/// The header of Herald's signature.
pub const SIGNATURE_HEADER: &str = "herald-webhook-signature";

fn hex_hmac(secret: &str, parts: &[&[u8]]) -> String {
    // HMAC accepts a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn herald_signature(secret: &str, unix_secs: u64, body: &[u8]) -> String {
    let t = unix_secs.to_string();
    format!("t={t},v1={}", hex_hmac(secret, &[t.as_bytes(), b".", body]))
}

/// `hex(HMAC-SHA256(secret, body))`: Pusher's `X-Pusher-Signature`.
pub fn pusher_signature(secret: &str, body: &[u8]) -> String {
    hex_hmac(secret, &[body])
}

/// Appends `text` as JSON: as it is when it is JSON, else as a JSON string.
fn push_json_or_string(out: &mut Vec<u8>, text: &str) {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        out.extend_from_slice(text.as_bytes());
    } else {
        push_string(out, text);
    }
}

fn push_field(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    push_string(out, name);
    out.push(b':');
}

/// One event in Herald's format.
fn push_herald_event(out: &mut Vec<u8>, entry: &Entry) {
    let event = &entry.event;
    out.extend_from_slice(b"{\"id\":");
    push_string(out, &entry.id.id);
    push_field(out, "name");
    push_string(out, event.kind.name());
    push_field(out, "channel");
    push_string(out, event.channel.as_str());
    push_field(out, "time_ms");
    out.extend_from_slice(event.time_ms.to_string().as_bytes());
    if let Some(user) = &event.user_id {
        push_field(out, "user_id");
        push_string(out, user);
    }
    if let Some(info) = &event.user_info {
        push_field(out, "user_info");
        push_json_or_string(out, &String::from_utf8_lossy(info));
    }
    if let Some(name) = &event.event {
        push_field(out, "event");
        push_string(out, name);
    }
    if let Some(data) = &event.data {
        push_field(out, "data");
        push_json_or_string(out, data);
    }
    if let Some(socket) = &event.socket_id {
        push_field(out, "socket_id");
        push_string(out, socket);
    }
    out.push(b'}');
}

/// One event in Pusher's format, its channel named without the app's prefix.
fn push_pusher_event(out: &mut Vec<u8>, event: &LifecycleEvent, prefix: &str) {
    out.extend_from_slice(b"{\"name\":");
    push_string(out, event.kind.name());
    push_field(out, "channel");
    push_string(out, event.channel.as_str().strip_prefix(prefix).unwrap_or(event.channel.as_str()));
    if let Some(name) = &event.event {
        push_field(out, "event");
        push_string(out, name);
    }
    if let Some(data) = &event.data {
        push_field(out, "data");
        push_string(out, data);
    }
    if let Some(socket) = &event.socket_id {
        push_field(out, "socket_id");
        push_string(out, socket);
    }
    if let Some(user) = &event.user_id {
        push_field(out, "user_id");
        push_string(out, user);
    }
    out.push(b'}');
}

/// The body of a request carrying `entries`, sent at `now_ms`.
pub fn body(format: &Format, entries: &[&Entry], now_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.len() * 128);
    out.extend_from_slice(format!("{{\"time_ms\":{now_ms},\"events\":[").as_bytes());
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match format {
            Format::Herald { .. } => push_herald_event(&mut out, entry),
            Format::Pusher { channel_prefix, .. } => push_pusher_event(&mut out, &entry.event, channel_prefix),
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// The headers that sign `body`, sent at `unix_secs`.
pub fn signature_headers(format: &Format, body: &[u8], unix_secs: u64) -> Vec<(&'static str, String)> {
    match format {
        Format::Herald { secret } => vec![(SIGNATURE_HEADER, herald_signature(secret, unix_secs, body))],
        Format::Pusher { key, secret, .. } => {
            vec![("x-pusher-key", key.clone()), ("x-pusher-signature", pusher_signature(secret, body))]
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use herald_proto::ChannelName;
    use proptest::prelude::*;

    use super::*;
    use crate::hub::{EventKind, LogId};

    fn entry(n: u64, kind: EventKind, channel: &str) -> Entry {
        let event = LifecycleEvent::new(kind, ChannelName::new(channel).unwrap(), 1_796_000_000_000 + n);
        Entry { id: LogId { id: format!("1796000000000-{n}"), n }, event }
    }

    #[test]
    fn herald_bodies_have_the_documented_bytes() {
        let mut added = entry(2, EventKind::MemberAdded, "chat:lobby");
        added.event.user_id = Some("ada".into());
        added.event.user_info = Some(Bytes::from_static(br#"{"name":"Ada"}"#));
        let mut said = entry(3, EventKind::ClientEvent, "chat:lobby");
        said.event.event = Some("typing".into());
        said.event.data = Some(r#"{"on":true}"#.into());
        said.event.user_id = Some("ada".into());
        let occupied = entry(1, EventKind::ChannelOccupied, "chat:lobby");
        let herald = Format::Herald { secret: "s".repeat(16) };
        assert_eq!(
            String::from_utf8(body(&herald, &[&occupied, &added, &said], 1_796_000_000_999)).unwrap(),
            concat!(
                r#"{"time_ms":1796000000999,"events":["#,
                r#"{"id":"1796000000000-1","name":"channel_occupied","channel":"chat:lobby","time_ms":1796000000001},"#,
                r#"{"id":"1796000000000-2","name":"member_added","channel":"chat:lobby","time_ms":1796000000002,"user_id":"ada","user_info":{"name":"Ada"}},"#,
                r#"{"id":"1796000000000-3","name":"client_event","channel":"chat:lobby","time_ms":1796000000003,"user_id":"ada","event":"typing","data":{"on":true}}"#,
                "]}"
            )
        );
    }

    #[test]
    fn pusher_bodies_name_channels_without_the_app_prefix_and_carry_data_as_a_string() {
        let mut added = entry(1, EventKind::MemberAdded, "app1:presence-room");
        added.event.user_id = Some("7".into());
        added.event.user_info = Some(Bytes::from_static(b"{}"));
        let mut said = entry(2, EventKind::ClientEvent, "app1:private-room");
        said.event.event = Some("client-typing".into());
        said.event.data = Some(r#"{"on":true}"#.into());
        said.event.socket_id = Some("123.456".into());
        let pusher = Format::Pusher { key: "k".into(), secret: "s".into(), channel_prefix: "app1:".into() };
        assert_eq!(
            String::from_utf8(body(&pusher, &[&added, &said], 5)).unwrap(),
            concat!(
                r#"{"time_ms":5,"events":["#,
                r#"{"name":"member_added","channel":"presence-room","user_id":"7"},"#,
                r#"{"name":"client_event","channel":"private-room","event":"client-typing","data":"{\"on\":true}","socket_id":"123.456"}"#,
                "]}"
            )
        );
    }

    #[test]
    fn signatures_match_known_values() {
        // python3: hmac.new(b'whsec-0123456789abcdef', b'1796000000.{}', hashlib.sha256).hexdigest()
        assert_eq!(
            herald_signature("whsec-0123456789abcdef", 1_796_000_000, b"{}"),
            "t=1796000000,v1=ca5706ebbbf9ef0e76663299e1f2f2de28d5896eefb7dd76d2ad98227081f7a2"
        );
        // RFC 4231, test case 2.
        assert_eq!(
            pusher_signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let pusher = Format::Pusher { key: "k".into(), secret: "Jefe".into(), channel_prefix: String::new() };
        let headers = signature_headers(&pusher, b"what do ya want for nothing?", 0);
        assert_eq!(headers[0], ("x-pusher-key", "k".to_string()));
    }

    proptest! {
        #[test]
        fn any_event_makes_a_body_that_is_json(user in ".{0,20}", data in ".{0,40}", name in "[a-z-]{1,10}") {
            let mut said = entry(1, EventKind::ClientEvent, "c");
            said.event.user_id = Some(user);
            said.event.data = Some(data);
            said.event.event = Some(name);
            said.event.user_info = Some(Bytes::from_static(b"not json"));
            for format in [
                Format::Herald { secret: "s".repeat(16) },
                Format::Pusher { key: "k".into(), secret: "s".into(), channel_prefix: String::new() },
            ] {
                let text = body(&format, &[&said], 1);
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&text).is_ok(), "{}", String::from_utf8_lossy(&text));
            }
        }
    }
}

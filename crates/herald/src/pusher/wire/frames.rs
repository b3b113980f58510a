//! Frames: `{"event", "channel"?, "data"?}` both ways, text only.
//!
//! [`ClientFrame::parse`] turns a client's frame into a typed request, or a [`FrameRefusal`] to answer with a
//! `pusher:error` (the connection stays open). [`ServerFrame::encode`] writes every frame the server sends, to
//! exact bytes. Server frames carry `data` as the protocol's clients expect it: a JSON-encoded *string* for
//! the protocol's own events (`connection_established`, `subscription_succeeded`, presence events), an object
//! for `pusher:error`, `pusher:subscription_error` and `pusher:signin_success`.

use serde::Deserialize;
use serde_json::value::RawValue;

use herald_proto::json::push_string;

/// A request from a client.
#[derive(Debug, PartialEq)]
pub enum ClientFrame {
    /// `pusher:ping`.
    Ping,
    /// `pusher:pong`, the answer to the server's ping.
    Pong,
    /// `pusher:subscribe`.
    Subscribe {
        /// The channel's name, not yet validated.
        channel: String,
        /// `key:signature` for a private, encrypted or presence channel.
        auth: Option<String>,
        /// A presence channel's `{"user_id","user_info"}`, exactly as signed.
        channel_data: Option<String>,
    },
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// The channel's name.
        channel: String,
    },
    /// `pusher:signin`.
    Signin {
        /// `key:signature` of the user data.
        auth: String,
        /// The user's `{"id", …}`, exactly as signed.
        user_data: String,
    },
    /// A client event (`client-…`).
    ClientEvent {
        /// The event's name.
        event: String,
        /// The channel's name.
        channel: String,
        /// Its data's JSON text, as sent (`null` when there was none).
        data: String,
    },
    /// Any other event: the server does not act on it.
    Other {
        /// The event's name.
        event: String,
    },
}

/// A frame the server cannot act on: answered with a `pusher:error` carrying this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FrameRefusal(pub String);

#[derive(Deserialize)]
struct RawFrame<'a> {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

#[derive(Deserialize)]
struct UnsubscribeData {
    channel: String,
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

/// Reads a request's `data` object, which clients send as an object or as a string holding one.
fn data_object<T: for<'de> Deserialize<'de>>(event: &str, data: Option<&RawValue>) -> Result<T, FrameRefusal> {
    let refused = |e: serde_json::Error| FrameRefusal(format!("{event}: bad data: {e}"));
    let data = data.ok_or_else(|| FrameRefusal(format!("{event} needs data")))?;
    match serde_json::from_str::<String>(data.get()) {
        Ok(text) => serde_json::from_str(&text).map_err(refused),
        Err(_) => serde_json::from_str(data.get()).map_err(refused),
    }
}

impl ClientFrame {
    /// Parses a client's text frame.
    pub fn parse(text: &str) -> Result<Self, FrameRefusal> {
        let raw: RawFrame<'_> = serde_json::from_str(text)
            .map_err(|e| FrameRefusal(format!("a frame is a JSON object with an `event`: {e}")))?;
        let event = raw.event.as_str();
        Ok(match event {
            "pusher:ping" => ClientFrame::Ping,
            "pusher:pong" => ClientFrame::Pong,
            "pusher:subscribe" => {
                let data: SubscribeData = data_object(event, raw.data)?;
                ClientFrame::Subscribe { channel: data.channel, auth: data.auth, channel_data: data.channel_data }
            }
            "pusher:unsubscribe" => {
                let data: UnsubscribeData = data_object(event, raw.data)?;
                ClientFrame::Unsubscribe { channel: data.channel }
            }
            "pusher:signin" => {
                let data: SigninData = data_object(event, raw.data)?;
                ClientFrame::Signin { auth: data.auth, user_data: data.user_data }
            }
            _ if event.starts_with("client-") => {
                let channel =
                    raw.channel.ok_or_else(|| FrameRefusal(format!("client event {event} names no channel")))?;
                let data = raw.data.map_or_else(|| "null".to_string(), |data| data.get().to_string());
                ClientFrame::ClientEvent { event: raw.event, channel, data }
            }
            _ => ClientFrame::Other { event: raw.event },
        })
    }
}

/// A frame the server sends.
#[derive(Debug, Clone, Copy)]
pub enum ServerFrame<'a> {
    /// The first frame of a connection.
    ConnectionEstablished {
        /// The connection's socket id.
        socket_id: &'a str,
        /// Seconds of silence after which the client should ping.
        activity_timeout: u64,
    },
    /// An error; with a code when the connection is closed with it.
    Error {
        /// The close code that follows, if any.
        code: Option<u16>,
        /// What went wrong.
        message: &'a str,
    },
    /// The server's ping.
    Ping,
    /// The answer to a client's ping.
    Pong,
    /// A subscription succeeded; `data` is the JSON text carried as the data string (`{}`, or a presence
    /// channel's member list).
    SubscriptionSucceeded {
        /// The channel.
        channel: &'a str,
        /// The JSON text of the data string.
        data: &'a str,
    },
    /// A subscription was refused; the connection stays open.
    SubscriptionError {
        /// The channel.
        channel: &'a str,
        /// `AuthError`, `LimitReached`, `InvalidChannel` or `ServerError`.
        kind: &'a str,
        /// What went wrong.
        error: &'a str,
        /// The HTTP-like status (401 for a bad signature).
        status: u16,
    },
    /// A cache channel had no event to send.
    CacheMiss {
        /// The channel.
        channel: &'a str,
    },
    /// A sign-in succeeded.
    SigninSuccess {
        /// The user data as signed.
        user_data: &'a str,
    },
    /// A user appeared on a presence channel.
    MemberAdded {
        /// The channel.
        channel: &'a str,
        /// The user's id.
        user_id: &'a str,
        /// The user's info: JSON text.
        user_info: &'a str,
    },
    /// A user's last connection left a presence channel.
    MemberRemoved {
        /// The channel.
        channel: &'a str,
        /// The user's id.
        user_id: &'a str,
    },
    /// How many connections are subscribed to the channel.
    SubscriptionCount {
        /// The channel.
        channel: &'a str,
        /// Connections subscribed, on every node.
        count: u64,
    },
    /// An event on a channel (a message, a client event or a server-to-user event).
    Event {
        /// Its name.
        event: &'a str,
        /// The channel as the client named it.
        channel: &'a str,
        /// Herald's data.
        data: &'a [u8],
        /// Whether `data` goes out as the value itself, else as a string holding it.
        data_as_value: bool,
        /// The sender, for a client event on a presence channel.
        user_id: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    /// The frame's text.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(b"{\"event\":");
        match *self {
            ServerFrame::ConnectionEstablished { socket_id, activity_timeout } => {
                out.extend_from_slice(b"\"pusher:connection_established\",\"data\":");
                let data = format!(r#"{{"socket_id":"{socket_id}","activity_timeout":{activity_timeout}}}"#);
                push_string(&mut out, &data);
            }
            ServerFrame::Error { code, message } => {
                out.extend_from_slice(b"\"pusher:error\",\"data\":{\"code\":");
                match code {
                    Some(code) => out.extend_from_slice(code.to_string().as_bytes()),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"message\":");
                push_string(&mut out, message);
                out.push(b'}');
            }
            ServerFrame::Ping => out.extend_from_slice(b"\"pusher:ping\",\"data\":\"{}\""),
            ServerFrame::Pong => out.extend_from_slice(b"\"pusher:pong\",\"data\":\"{}\""),
            ServerFrame::SubscriptionSucceeded { channel, data } => {
                internal(&mut out, "pusher_internal:subscription_succeeded", channel);
                push_string(&mut out, data);
            }
            ServerFrame::SubscriptionError { channel, kind, error, status } => {
                internal(&mut out, "pusher:subscription_error", channel);
                out.extend_from_slice(b"{\"type\":");
                push_string(&mut out, kind);
                out.extend_from_slice(b",\"error\":");
                push_string(&mut out, error);
                out.extend_from_slice(format!(",\"status\":{status}}}").as_bytes());
            }
            ServerFrame::CacheMiss { channel } => {
                internal(&mut out, "pusher:cache_miss", channel);
                out.extend_from_slice(b"\"{}\"");
            }
            ServerFrame::SigninSuccess { user_data } => {
                out.extend_from_slice(b"\"pusher:signin_success\",\"data\":{\"user_data\":");
                push_string(&mut out, user_data);
                out.push(b'}');
            }
            ServerFrame::MemberAdded { channel, user_id, user_info } => {
                internal(&mut out, "pusher_internal:member_added", channel);
                let mut data = b"{\"user_id\":".to_vec();
                push_string(&mut data, user_id);
                data.extend_from_slice(b",\"user_info\":");
                data.extend_from_slice(user_info.as_bytes());
                data.push(b'}');
                push_string(&mut out, &String::from_utf8_lossy(&data));
            }
            ServerFrame::MemberRemoved { channel, user_id } => {
                internal(&mut out, "pusher_internal:member_removed", channel);
                let mut data = b"{\"user_id\":".to_vec();
                push_string(&mut data, user_id);
                data.push(b'}');
                push_string(&mut out, &String::from_utf8_lossy(&data));
            }
            ServerFrame::SubscriptionCount { channel, count } => {
                internal(&mut out, "pusher_internal:subscription_count", channel);
                push_string(&mut out, &format!(r#"{{"subscription_count":{count}}}"#));
            }
            ServerFrame::Event { event, channel, data, data_as_value, user_id } => {
                push_string(&mut out, event);
                out.extend_from_slice(b",\"channel\":");
                push_string(&mut out, channel);
                out.extend_from_slice(b",\"data\":");
                super::data::push_frame_data(&mut out, data, data_as_value);
                if let Some(user_id) = user_id {
                    out.extend_from_slice(b",\"user_id\":");
                    push_string(&mut out, user_id);
                }
            }
        }
        out.push(b'}');
        out
    }
}

/// Writes `"<event>","channel":"<channel>","data":` for the protocol's own events on a channel.
fn internal(out: &mut Vec<u8>, event: &str, channel: &str) {
    push_string(out, event);
    out.extend_from_slice(b",\"channel\":");
    push_string(out, channel);
    out.extend_from_slice(b",\"data\":");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(frame: ServerFrame<'_>) -> String {
        String::from_utf8(frame.encode()).unwrap()
    }

    #[test]
    fn server_frames_are_exactly_these_bytes() {
        let cases = [
            (
                ServerFrame::ConnectionEstablished { socket_id: "123.456", activity_timeout: 120 },
                r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#,
            ),
            (
                ServerFrame::Error { code: Some(4001), message: "no app has the key \"x\"" },
                r#"{"event":"pusher:error","data":{"code":4001,"message":"no app has the key \"x\""}}"#,
            ),
            (
                ServerFrame::Error { code: None, message: "m" },
                r#"{"event":"pusher:error","data":{"code":null,"message":"m"}}"#,
            ),
            (ServerFrame::Ping, r#"{"event":"pusher:ping","data":"{}"}"#),
            (ServerFrame::Pong, r#"{"event":"pusher:pong","data":"{}"}"#),
            (
                ServerFrame::SubscriptionSucceeded { channel: "orders", data: "{}" },
                r#"{"event":"pusher_internal:subscription_succeeded","channel":"orders","data":"{}"}"#,
            ),
            (
                ServerFrame::SubscriptionSucceeded {
                    channel: "presence-r",
                    data: r#"{"presence":{"ids":["1"],"hash":{"1":null},"count":1}}"#,
                },
                r#"{"event":"pusher_internal:subscription_succeeded","channel":"presence-r","data":"{\"presence\":{\"ids\":[\"1\"],\"hash\":{\"1\":null},\"count\":1}}"}"#,
            ),
            (
                ServerFrame::SubscriptionError { channel: "private-a", kind: "AuthError", error: "bad", status: 401 },
                r#"{"event":"pusher:subscription_error","channel":"private-a","data":{"type":"AuthError","error":"bad","status":401}}"#,
            ),
            (
                ServerFrame::CacheMiss { channel: "cache-a" },
                r#"{"event":"pusher:cache_miss","channel":"cache-a","data":"{}"}"#,
            ),
            (
                ServerFrame::SigninSuccess { user_data: r#"{"id":"7"}"# },
                r#"{"event":"pusher:signin_success","data":{"user_data":"{\"id\":\"7\"}"}}"#,
            ),
            (
                ServerFrame::MemberAdded { channel: "presence-r", user_id: "7", user_info: r#"{"name":"Ann"}"# },
                r#"{"event":"pusher_internal:member_added","channel":"presence-r","data":"{\"user_id\":\"7\",\"user_info\":{\"name\":\"Ann\"}}"}"#,
            ),
            (
                ServerFrame::MemberRemoved { channel: "presence-r", user_id: "7" },
                r#"{"event":"pusher_internal:member_removed","channel":"presence-r","data":"{\"user_id\":\"7\"}"}"#,
            ),
            (
                ServerFrame::SubscriptionCount { channel: "a", count: 3 },
                r#"{"event":"pusher_internal:subscription_count","channel":"a","data":"{\"subscription_count\":3}"}"#,
            ),
            (
                ServerFrame::Event {
                    event: r"App\Events\Shipped",
                    channel: "orders",
                    data: br#"{"id":1}"#,
                    data_as_value: false,
                    user_id: None,
                },
                r#"{"event":"App\\Events\\Shipped","channel":"orders","data":"{\"id\":1}"}"#,
            ),
            (
                ServerFrame::Event {
                    event: "client-typing",
                    channel: "presence-r",
                    data: br#"{"on":true}"#,
                    data_as_value: true,
                    user_id: Some("7"),
                },
                r#"{"event":"client-typing","channel":"presence-r","data":{"on":true},"user_id":"7"}"#,
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(text(frame), expected);
        }
    }

    #[test]
    fn client_frames_parse_into_requests() {
        assert_eq!(ClientFrame::parse(r#"{"event":"pusher:ping","data":{}}"#), Ok(ClientFrame::Ping));
        assert_eq!(ClientFrame::parse(r#"{"event":"pusher:ping","data":"{}"}"#), Ok(ClientFrame::Ping));
        assert_eq!(ClientFrame::parse(r#"{"event":"pusher:pong"}"#), Ok(ClientFrame::Pong));
        assert_eq!(
            ClientFrame::parse(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"orders"}}"#),
            Ok(ClientFrame::Subscribe { channel: "orders".into(), auth: Some(String::new()), channel_data: None })
        );
        assert_eq!(
            ClientFrame::parse(
                r#"{"event":"pusher:subscribe","data":"{\"channel\":\"presence-a\",\"auth\":\"k:s\",\"channel_data\":\"{\\\"user_id\\\":1}\"}"}"#
            ),
            Ok(ClientFrame::Subscribe {
                channel: "presence-a".into(),
                auth: Some("k:s".into()),
                channel_data: Some(r#"{"user_id":1}"#.into())
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"event":"pusher:unsubscribe","data":{"channel":"a"}}"#),
            Ok(ClientFrame::Unsubscribe { channel: "a".into() })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"1\"}"}}"#),
            Ok(ClientFrame::Signin { auth: "k:s".into(), user_data: r#"{"id":"1"}"#.into() })
        );
        let Ok(ClientFrame::ClientEvent { event, channel, data }) =
            ClientFrame::parse(r#"{"event":"client-typing","channel":"private-a","data":{"on": true}}"#)
        else {
            panic!("a client event")
        };
        assert_eq!(
            (event.as_str(), channel.as_str(), data.as_str()),
            ("client-typing", "private-a", r#"{"on": true}"#)
        );
        assert_eq!(
            ClientFrame::parse(r#"{"event":"hello","data":1,"extra":true}"#),
            Ok(ClientFrame::Other { event: "hello".into() })
        );
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        for bad in [
            "not json",
            "[]",
            r#"{"data":1}"#,
            r#"{"event":"pusher:subscribe"}"#,
            r#"{"event":"pusher:subscribe","data":{"auth":""}}"#,
            r#"{"event":"pusher:subscribe","data":"{broken"}"#,
            r#"{"event":"pusher:signin","data":{"auth":"k:s"}}"#,
            r#"{"event":"client-x","data":1}"#,
        ] {
            assert!(ClientFrame::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_is_parsed_or_refused_without_panicking(text in ".{0,200}") {
            let _ = ClientFrame::parse(&text);
        }

        #[test]
        fn event_frames_are_json_that_reads_back(
            event in "[ -~]{1,40}",
            channel in "[-A-Za-z0-9_=@,.;]{1,40}",
            data in "\\PC{0,40}",
            user in proptest::option::of("\\PC{0,10}"),
        ) {
            let (stored, as_value) = super::super::data::from_api(&data);
            let frame = ServerFrame::Event { event: &event, channel: &channel, data: &stored, data_as_value: as_value, user_id: user.as_deref() };
            let back: serde_json::Value = serde_json::from_slice(&frame.encode()).unwrap();
            prop_assert_eq!(back["event"].as_str(), Some(event.as_str()));
            prop_assert_eq!(back["channel"].as_str(), Some(channel.as_str()));
            prop_assert_eq!(back["data"].as_str(), Some(data.as_str()));
            prop_assert_eq!(back.get("user_id").and_then(|u| u.as_str()), user.as_deref());
        }
    }
}

//! The WebSocket protocol: JSON text frames, many channels per connection.
//!
//! [`ClientFrame::parse`] turns a client's text frame into a typed request or a [`FrameError`] that already
//! carries the error code and the request `id` to echo, so the connection can answer and stay usable.
//! [`ServerFrame`] encodes every answer to exact bytes.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channel::{ChannelName, EventName};
use crate::cursor::Cursor;
use crate::envelope::Message;
use crate::json::{minify, push_string};
use crate::presence::{push_member, push_members, MemberText};

/// A client request's `id`: a JSON number or string, echoed verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The id's JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// Only what is published from now on (no `since`, no `last`).
    Now,
    /// After this cursor's position for the channel.
    Cursor(Cursor),
    /// The newest N retained messages first.
    Last(u32),
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `{"op":"subscribe","channel":…,"since":…,"last":…,"id":…}`
    Subscribe {
        /// The channel.
        channel: ChannelName,
        /// A cursor wins over `last`.
        cursor: Option<Cursor>,
        /// Replay the newest N retained messages when the cursor does not name the channel.
        last: Option<u32>,
        /// Echoed in the answer.
        id: Option<RequestId>,
    },
    /// `{"op":"unsubscribe","channel":…,"id":…}`
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
        /// Echoed in the answer.
        id: Option<RequestId>,
    },
    /// `{"op":"publish","channel":…,"event":…,"data":…,"id":…}`
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The event, `message` when not given.
        event: EventName,
        /// Minified JSON.
        data: Vec<u8>,
        /// Echoed in the answer.
        id: Option<RequestId>,
    },
    /// `{"op":"ping","id":…}`
    Ping {
        /// Echoed in the answer.
        id: Option<RequestId>,
    },
    /// `{"op":"auth","token":…,"id":…}`: present a subscriber token, or a fresh one before the last expires.
    Auth {
        /// The token (a JWT).
        token: String,
        /// Echoed in the answer.
        id: Option<RequestId>,
    },
    /// `{"op":"presence","channel":…,"id":…}`: the members of a subscribed channel, then their joins and leaves.
    Presence {
        /// The channel.
        channel: ChannelName,
        /// Echoed in the answer.
        id: Option<RequestId>,
    },
}

/// A refused frame: the code and message of the `error` frame, and the `id` to echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The request's id, when one could be read.
    pub id: Option<RequestId>,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
}

impl FrameError {
    fn new(id: &Option<RequestId>, code: &'static str, message: impl Into<String>) -> Self {
        Self { id: id.clone(), code, message: message.into() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame<'a> {
    op: String,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    channel: Option<String>,
    since: Option<String>,
    last: Option<u32>,
    event: Option<String>,
    #[serde(borrow, default, deserialize_with = "crate::json::present")]
    data: Option<&'a RawValue>,
    token: Option<String>,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

fn request_id(raw: Option<&RawValue>) -> Result<Option<RequestId>, ()> {
    match raw.map(RawValue::get) {
        None => Ok(None),
        Some(text) if text.starts_with('"') => Ok(Some(RequestId(text.to_string()))),
        // A number is echoed verbatim, so it must be one every JSON reader takes: finite as a double
        // (`1e999` is valid JSON grammar, but most parsers refuse it or read infinity).
        Some(text) if text.parse::<f64>().is_ok_and(f64::is_finite) => Ok(Some(RequestId(text.to_string()))),
        Some(_) => Err(()),
    }
}

impl ClientFrame {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        // serde reads a struct from an array too (`["subscribe"]`); a frame is an object, nothing else.
        if !text.trim_start().starts_with('{') {
            let is_json = serde_json::from_str::<IgnoredAny>(text).is_ok();
            let message = if is_json { "a frame must be a JSON object" } else { "the frame is not JSON" };
            return Err(FrameError::new(&None, "invalid_json", message));
        }
        let raw: RawFrame<'_> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                let Ok(IdOnly { id }) = serde_json::from_str::<IdOnly<'_>>(text) else {
                    let is_json = serde_json::from_str::<IgnoredAny>(text).is_ok();
                    let message = if is_json { "a frame must be a JSON object" } else { "the frame is not JSON" };
                    return Err(FrameError::new(&None, "invalid_json", message));
                };
                let id = request_id(id).unwrap_or(None);
                return Err(FrameError::new(&id, "invalid_frame", err.to_string()));
            }
        };
        let Ok(id) = request_id(raw.id) else {
            return Err(FrameError::new(&None, "invalid_frame", "`id` must be a number or a string"));
        };
        let channel = |raw_channel: Option<String>| -> Result<ChannelName, FrameError> {
            let name = raw_channel
                .ok_or_else(|| FrameError::new(&id, "invalid_frame", format!("`{}` needs a `channel`", raw.op)))?;
            ChannelName::new(&name).map_err(|e| FrameError::new(&id, "invalid_channel", e.to_string()))
        };
        if raw.token.is_some() && raw.op != "auth" {
            return Err(FrameError::new(&id, "invalid_frame", "`token` belongs in an `auth` frame"));
        }
        match raw.op.as_str() {
            "subscribe" => {
                let channel = channel(raw.channel)?;
                let cursor = raw
                    .since
                    .map(|text| Cursor::decode(&text))
                    .transpose()
                    .map_err(|e| FrameError::new(&id, "invalid_cursor", e.to_string()))?;
                Ok(ClientFrame::Subscribe { channel, cursor, last: raw.last, id })
            }
            "unsubscribe" => Ok(ClientFrame::Unsubscribe { channel: channel(raw.channel)?, id }),
            "publish" => {
                let channel = channel(raw.channel)?;
                let event = match raw.event {
                    Some(name) => {
                        EventName::new(&name).map_err(|e| FrameError::new(&id, "invalid_event", e.to_string()))?
                    }
                    None => EventName::default_event(),
                };
                let data = raw.data.ok_or_else(|| FrameError::new(&id, "invalid_frame", "`publish` needs `data`"))?;
                Ok(ClientFrame::Publish { channel, event, data: minify(data.get().as_bytes()), id })
            }
            "ping" => Ok(ClientFrame::Ping { id }),
            "presence" => Ok(ClientFrame::Presence { channel: channel(raw.channel)?, id }),
            "auth" => {
                let token = raw.token.ok_or_else(|| FrameError::new(&id, "invalid_frame", "`auth` needs a `token`"))?;
                Ok(ClientFrame::Auth { token, id })
            }
            other => Err(FrameError::new(
                &id,
                "unknown_op",
                format!("unknown op {other:?}; expected subscribe, unsubscribe, publish, ping, auth or presence"),
            )),
        }
    }
}

/// A frame from the server (all but `message`, whose bytes are built once per message by
/// [`ServerFrame::message`] and shared by every subscriber).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    /// The subscription starts after `cursor`.
    Subscribed {
        /// The channel.
        channel: &'a ChannelName,
        /// The start position.
        cursor: &'a str,
        /// The requested cursor could not be honoured.
        reset: bool,
        /// The request's id.
        id: Option<&'a RequestId>,
    },
    /// No message of the channel follows.
    Unsubscribed {
        /// The channel.
        channel: &'a ChannelName,
        /// The request's id.
        id: Option<&'a RequestId>,
    },
    /// A client's publish was stored.
    Published {
        /// The stored message.
        message: &'a Message,
        /// The request's id.
        id: Option<&'a RequestId>,
    },
    /// Answer to `ping`.
    Pong {
        /// The request's id.
        id: Option<&'a RequestId>,
    },
    /// Messages were lost after the subscription started; what follows continues after `cursor`.
    Reset {
        /// The channel.
        channel: &'a ChannelName,
        /// The position the stream continues from.
        cursor: &'a str,
    },
    /// A request failed.
    Error(&'a FrameError),
    /// Answer to `auth`: the token is accepted until `exp`.
    Authenticated {
        /// The token's `sub`, if it has one.
        sub: Option<&'a str>,
        /// The token's `exp`, in seconds since 1970.
        exp: u64,
        /// The request's id.
        id: Option<&'a RequestId>,
    },
    /// Answer to `presence`: the channel's members; their joins and leaves follow.
    Presence {
        /// The channel.
        channel: &'a ChannelName,
        /// The members.
        members: &'a [MemberText<'a>],
        /// The request's id.
        id: Option<&'a RequestId>,
    },
    /// A member joined (`join: true`) or left a channel whose presence the connection follows.
    Change {
        /// The channel.
        channel: &'a ChannelName,
        /// Joined, or left.
        join: bool,
        /// Who.
        member: MemberText<'a>,
    },
    /// The server ended a subscription on its own (its token expired, or a new token does not grant it): no
    /// message of the channel follows.
    Ended {
        /// The channel.
        channel: &'a ChannelName,
        /// Why, as an error code (`token_expired`, `channel_forbidden`).
        code: &'static str,
        /// A human-readable explanation.
        message: &'a str,
    },
}

fn push_id(out: &mut String, id: Option<&RequestId>) {
    if let Some(id) = id {
        out.push_str(",\"id\":");
        out.push_str(id.as_json());
    }
}

impl ServerFrame<'_> {
    /// The frame's JSON text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(128);
        match self {
            ServerFrame::Subscribed { channel, cursor, reset, id } => {
                out.push_str(&format!(
                    r#"{{"op":"subscribed","channel":"{channel}","cursor":"{cursor}","reset":{reset}"#
                ));
                push_id(&mut out, *id);
            }
            ServerFrame::Unsubscribed { channel, id } => {
                out.push_str(&format!(r#"{{"op":"unsubscribed","channel":"{channel}""#));
                push_id(&mut out, *id);
            }
            ServerFrame::Published { message, id } => {
                let mut receipt = Vec::with_capacity(96);
                message.write_receipt(&mut receipt, &message.cursor_text());
                out.push_str(r#"{"op":"published","#);
                out.push_str(&String::from_utf8_lossy(&receipt));
                push_id(&mut out, *id);
            }
            ServerFrame::Pong { id } => {
                out.push_str(r#"{"op":"pong""#);
                push_id(&mut out, *id);
            }
            ServerFrame::Reset { channel, cursor } => {
                out.push_str(&format!(r#"{{"op":"reset","channel":"{channel}","cursor":"{cursor}""#));
            }
            ServerFrame::Error(err) => {
                out.push_str(r#"{"op":"error""#);
                push_id(&mut out, err.id.as_ref());
                let mut rest = Vec::with_capacity(err.message.len() + 32);
                rest.extend_from_slice(b",\"code\":");
                push_string(&mut rest, err.code);
                rest.extend_from_slice(b",\"message\":");
                push_string(&mut rest, &err.message);
                out.push_str(&String::from_utf8_lossy(&rest));
            }
            ServerFrame::Authenticated { sub, exp, id } => {
                let mut rest = Vec::with_capacity(64);
                rest.extend_from_slice(b"{\"op\":\"authenticated\",\"sub\":");
                match sub {
                    Some(sub) => push_string(&mut rest, sub),
                    None => rest.extend_from_slice(b"null"),
                }
                out.push_str(&String::from_utf8_lossy(&rest));
                out.push_str(&format!(",\"exp\":{exp}"));
                push_id(&mut out, *id);
            }
            ServerFrame::Presence { channel, members, id } => {
                let mut rest = format!(r#"{{"op":"presence","channel":"{channel}","#).into_bytes();
                push_members(&mut rest, members);
                out.push_str(&String::from_utf8_lossy(&rest));
                push_id(&mut out, *id);
            }
            ServerFrame::Change { channel, join, member } => {
                let op = if *join { "join" } else { "leave" };
                let mut rest = format!(r#"{{"op":"{op}","channel":"{channel}","member":"#).into_bytes();
                push_member(&mut rest, member);
                out.push_str(&String::from_utf8_lossy(&rest));
            }
            ServerFrame::Ended { channel, code, message } => {
                let mut rest = Vec::with_capacity(64 + message.len());
                rest.extend_from_slice(format!(r#"{{"op":"ended","channel":"{channel}","code":"#).as_bytes());
                push_string(&mut rest, code);
                rest.extend_from_slice(b",\"message\":");
                push_string(&mut rest, message);
                out.push_str(&String::from_utf8_lossy(&rest));
            }
        }
        out.push('}');
        out
    }

    /// The bytes of a `message` frame: the envelope with `"op":"message"` first.
    pub fn message(message: &Message) -> Vec<u8> {
        message.envelope_json(r#""op":"message","#)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Position;
    use proptest::prelude::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    fn err(text: &str) -> FrameError {
        ClientFrame::parse(text).unwrap_err()
    }

    #[test]
    fn parses_every_request() {
        let cursor = Cursor::single(ch("c"), Position::new(1, 2));
        let text = format!(r#"{{"op":"subscribe","channel":"c","since":"{}","last":3,"id":1}}"#, cursor.encode());
        assert_eq!(
            ClientFrame::parse(&text).unwrap(),
            ClientFrame::Subscribe {
                channel: ch("c"),
                cursor: Some(cursor),
                last: Some(3),
                id: Some(RequestId("1".into()))
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"op":"unsubscribe","channel":"c","id":"x"}"#).unwrap(),
            ClientFrame::Unsubscribe { channel: ch("c"), id: Some(RequestId("\"x\"".into())) }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"op":"publish","channel":"c","data":{ "a" : 1 }}"#).unwrap(),
            ClientFrame::Publish {
                channel: ch("c"),
                event: EventName::default_event(),
                data: br#"{"a":1}"#.to_vec(),
                id: None
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"op":"publish","channel":"c","event":"e","data":null,"id":3}"#).unwrap(),
            ClientFrame::Publish {
                channel: ch("c"),
                event: EventName::new("e").unwrap(),
                data: b"null".to_vec(),
                id: Some(RequestId("3".into()))
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"op":"ping","id":4}"#).unwrap(),
            ClientFrame::Ping { id: Some(RequestId("4".into())) }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"op":"auth","token":"a.b.c","id":5}"#).unwrap(),
            ClientFrame::Auth { token: "a.b.c".into(), id: Some(RequestId("5".into())) }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"op":"presence","channel":"chat:1","id":6}"#).unwrap(),
            ClientFrame::Presence { channel: ch("chat:1"), id: Some(RequestId("6".into())) }
        );
        assert_eq!(err(r#"{"op":"presence","id":6}"#).code, "invalid_frame");
        assert_eq!(err(r#"{"op":"auth","id":5}"#).code, "invalid_frame");
        assert_eq!(err(r#"{"op":"subscribe","channel":"c","token":"t"}"#).code, "invalid_frame");
    }

    #[test]
    fn bad_frames_get_a_code_and_keep_their_id() {
        assert_eq!(err("nope").code, "invalid_json");
        assert_eq!(err("[1,2]").code, "invalid_json");
        assert_eq!(err(r#"{"op":"dance","id":7}"#).code, "unknown_op");
        assert_eq!(err(r#"{"op":"dance","id":7}"#).id, Some(RequestId("7".into())));
        assert_eq!(err(r#"{"id":5}"#).code, "invalid_frame");
        assert_eq!(err(r#"{"id":5}"#).id, Some(RequestId("5".into())));
        assert_eq!(err(r#"{"op":"subscribe","id":6}"#).code, "invalid_frame");
        assert_eq!(err(r#"{"op":"subscribe","channel":"a b"}"#).code, "invalid_channel");
        assert_eq!(err(r#"{"op":"subscribe","channel":"a","since":"!!"}"#).code, "invalid_cursor");
        assert_eq!(err(r#"{"op":"subscribe","channel":"a","last":-1}"#).code, "invalid_frame");
        assert_eq!(err(r#"{"op":"subscribe","channel":"a","colour":"red","id":2}"#).code, "invalid_frame");
        assert_eq!(err(r#"{"op":"publish","channel":"a"}"#).code, "invalid_frame");
        assert_eq!(err(r#"{"op":"publish","channel":"a","event":"a b","data":1}"#).code, "invalid_event");
        assert_eq!(err(r#"{"op":"ping","id":{"x":1}}"#).code, "invalid_frame");
    }

    /// Found by the `ws_frame` fuzz target: an array was read as a frame, and its number echoed as an `id` that
    /// JSON readers refuse.
    #[test]
    fn regression_an_array_is_not_a_frame_and_an_id_must_be_a_finite_number() {
        let e = err("[0.3E607]");
        assert_eq!((e.code, e.id), ("invalid_json", None));
        assert_eq!(err(r#"["ping"]"#).code, "invalid_json");
        let e = err(r#"{"op":"ping","id":1e999}"#);
        assert_eq!((e.code, e.id.clone()), ("invalid_frame", None));
        assert!(serde_json::from_str::<serde_json::Value>(&ServerFrame::Error(&e).encode()).is_ok());
        assert_eq!(
            ClientFrame::parse(r#"{"op":"ping","id":-1.5e3}"#).unwrap(),
            ClientFrame::Ping { id: Some(RequestId("-1.5e3".into())) }
        );
    }

    #[test]
    fn server_frames_have_the_documented_bytes() {
        let c = ch("c");
        let id = RequestId("1".into());
        assert_eq!(
            ServerFrame::Subscribed { channel: &c, cursor: "AQ", reset: false, id: Some(&id) }.encode(),
            r#"{"op":"subscribed","channel":"c","cursor":"AQ","reset":false,"id":1}"#
        );
        assert_eq!(
            ServerFrame::Unsubscribed { channel: &c, id: None }.encode(),
            r#"{"op":"unsubscribed","channel":"c"}"#
        );
        assert_eq!(ServerFrame::Pong { id: Some(&id) }.encode(), r#"{"op":"pong","id":1}"#);
        assert_eq!(
            ServerFrame::Reset { channel: &c, cursor: "AQ" }.encode(),
            r#"{"op":"reset","channel":"c","cursor":"AQ"}"#
        );
        assert_eq!(
            ServerFrame::Authenticated { sub: Some("u\"42"), exp: 1_800_000_000, id: Some(&id) }.encode(),
            r#"{"op":"authenticated","sub":"u\"42","exp":1800000000,"id":1}"#
        );
        assert_eq!(
            ServerFrame::Authenticated { sub: None, exp: 7, id: None }.encode(),
            r#"{"op":"authenticated","sub":null,"exp":7}"#
        );
        assert_eq!(
            ServerFrame::Ended { channel: &c, code: "token_expired", message: "renew" }.encode(),
            r#"{"op":"ended","channel":"c","code":"token_expired","message":"renew"}"#
        );
        let ada = MemberText { user_id: "ada", user_info: br#"{"name":"Ada"}"# };
        assert_eq!(
            ServerFrame::Presence { channel: &c, members: &[ada], id: Some(&id) }.encode(),
            r#"{"op":"presence","channel":"c","members":[{"user_id":"ada","user_info":{"name":"Ada"}}],"count":1,"id":1}"#
        );
        assert_eq!(
            ServerFrame::Change { channel: &c, join: true, member: ada }.encode(),
            r#"{"op":"join","channel":"c","member":{"user_id":"ada","user_info":{"name":"Ada"}}}"#
        );
        assert_eq!(
            ServerFrame::Change { channel: &c, join: false, member: ada }.encode(),
            r#"{"op":"leave","channel":"c","member":{"user_id":"ada","user_info":{"name":"Ada"}}}"#
        );
        let e = FrameError { id: None, code: "unknown_op", message: "say \"hi\"".into() };
        assert_eq!(ServerFrame::Error(&e).encode(), r#"{"op":"error","code":"unknown_op","message":"say \"hi\""}"#);
        let m = Message {
            channel: c.clone(),
            position: Position::new(1, 8),
            event: EventName::default_event(),
            data: bytes::Bytes::from_static(b"1"),
            time_ms: 0,
        };
        assert_eq!(
            ServerFrame::Published { message: &m, id: Some(&id) }.encode(),
            format!(
                r#"{{"op":"published","channel":"c","offset":8,"cursor":"{}","time":"1970-01-01T00:00:00.000Z","id":1}}"#,
                m.cursor().encode()
            )
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_or_errors_without_panicking(text in ".{0,200}") {
            let _ = ClientFrame::parse(&text);
        }

        #[test]
        fn error_frames_are_valid_json_whatever_the_message(message in ".{0,50}") {
            let e = FrameError { id: Some(RequestId("\"r\"".into())), code: "x", message };
            let text = ServerFrame::Error(&e).encode();
            prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        }
    }
}

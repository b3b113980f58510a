//! The WebSocket transport: `GET /v1/ws`, one `subscribe` frame per channel.
//!
//! Opening waits for every channel's `subscribed` frame (or the `error` frame refusing one); messages of
//! channels already confirmed may arrive meanwhile and are kept, in order, for [`WsSubscription::next`]. The
//! cursor is the merge of each channel's own position: its `subscribed` cursor (where it starts), then the
//! cursor of each message or `reset` frame as it is handed to the caller.

use std::collections::VecDeque;

use crate::io::Stream;
use futures_util::{SinkExt, StreamExt};
use herald_proto::{Cursor, Envelope};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::{server_cursor, Event, SubscribeOptions};
use crate::client::Client;
use crate::error::ClientError;

/// A frame from the server, as far as a subscriber cares.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ServerFrame {
    Subscribed {
        channel: String,
        cursor: String,
        #[serde(default)]
        reset: bool,
    },
    /// Read apart from the other ops (see [`ServerFrame::parse`]).
    #[serde(skip)]
    Message(Envelope),
    Reset {
        channel: String,
        cursor: String,
    },
    Error {
        #[serde(default)]
        id: Option<Value>,
        code: String,
        message: String,
    },
    /// `pong`, `published`, `unsubscribed` and any op a later server may add.
    #[serde(other)]
    Other,
}

impl ServerFrame {
    fn parse(text: &str) -> Result<Self, ClientError> {
        #[derive(Deserialize)]
        struct Op<'a> {
            #[serde(borrow)]
            op: std::borrow::Cow<'a, str>,
        }
        let unreadable = |e: serde_json::Error| ClientError::Protocol(format!("unreadable WebSocket frame: {e}"));
        // A message is read straight into an Envelope: serde's internally tagged enums buffer their content,
        // which would lose the raw `data` text.
        if serde_json::from_str::<Op<'_>>(text).map_err(unreadable)?.op == "message" {
            return serde_json::from_str(text).map(ServerFrame::Message).map_err(unreadable);
        }
        serde_json::from_str(text).map_err(unreadable)
    }
}

/// The `subscribe` frame for `channel`, tagged with `id`.
fn subscribe_frame(channel: &str, since: Option<&str>, last: Option<u32>, id: usize) -> String {
    let mut frame = serde_json::json!({ "op": "subscribe", "channel": channel, "id": id });
    if let Some(since) = since {
        frame["since"] = since.into();
    }
    if let Some(last) = last {
        frame["last"] = last.into();
    }
    frame.to_string()
}

pub(super) struct WsSubscription {
    socket: WebSocketStream<Stream>,
    pending: VecDeque<ServerFrame>,
    cursor: Cursor,
    done: bool,
}

impl WsSubscription {
    pub(super) async fn open(client: &Client, options: &SubscribeOptions) -> Result<Self, ClientError> {
        let socket = crate::websocket::connect(client, "/v1/ws").await?;
        let mut sub = Self { socket, pending: VecDeque::new(), cursor: Cursor::new(), done: false };
        // Subscribing twice to a channel is refused (`already_subscribed`), so a repeated name is sent once.
        let mut channels: Vec<&str> = Vec::with_capacity(options.channels.len());
        for channel in &options.channels {
            if !channels.contains(&channel.as_str()) {
                channels.push(channel);
            }
        }
        for (id, channel) in channels.iter().enumerate() {
            let frame = subscribe_frame(channel, options.since.as_deref(), options.last, id);
            sub.socket.feed(Message::text(frame)).await?;
        }
        sub.socket.flush().await?;
        sub.await_subscribed(channels).await?;
        Ok(sub)
    }

    async fn await_subscribed(&mut self, mut waiting: Vec<&str>) -> Result<(), ClientError> {
        while !waiting.is_empty() {
            let frame = self.read_frame().await?.ok_or_else(|| {
                ClientError::Protocol("the WebSocket ended before every channel was subscribed".into())
            })?;
            match &frame {
                ServerFrame::Subscribed { channel, .. } => waiting.retain(|c| c != channel),
                ServerFrame::Error { code, message, .. } => {
                    return Err(ClientError::Refused { code: code.clone(), message: message.clone() });
                }
                _ => {}
            }
            self.pending.push_back(frame);
        }
        Ok(())
    }

    /// The next frame from the socket; `Ok(None)` when the stream ended without a close frame.
    async fn read_frame(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        loop {
            let frame = match self.socket.next().await.transpose()? {
                None => return Ok(None),
                Some(Message::Text(text)) => ServerFrame::parse(&text)?,
                Some(Message::Close(close)) => return Err(crate::websocket::closed(close)),
                Some(Message::Binary(_)) => return Err(ClientError::Protocol("Herald sent a binary frame".into())),
                // tungstenite answers pings by itself.
                Some(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            };
            // A channel's start position holds from its `subscribed` frame on: no message of that channel can
            // be queued before it, so it is merged at once, which lets `cursor()` cover every channel as soon
            // as `open` returns.
            if let ServerFrame::Subscribed { cursor, .. } = &frame {
                self.cursor.merge(server_cursor(cursor)?);
            }
            return Ok(Some(frame));
        }
    }

    pub(super) async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        while !self.done {
            let frame = match self.pending.pop_front() {
                Some(frame) => Ok(Some(frame)),
                None => self.read_frame().await,
            };
            let event = match frame {
                Ok(Some(frame)) => self.apply(frame),
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(err) => Err(err),
            };
            match event {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
        None
    }

    /// Turns a frame into the event it means, advancing the cursor.
    fn apply(&mut self, frame: ServerFrame) -> Result<Option<Event>, ClientError> {
        Ok(match frame {
            ServerFrame::Subscribed { channel, reset: true, .. } => Some(Event::Reset { channels: vec![channel] }),
            ServerFrame::Message(envelope) => {
                self.cursor.merge(server_cursor(&envelope.cursor)?);
                Some(Event::Message(envelope))
            }
            ServerFrame::Reset { channel, cursor } => {
                self.cursor.merge(server_cursor(&cursor)?);
                Some(Event::Reset { channels: vec![channel] })
            }
            ServerFrame::Error { code, message, .. } => return Err(ClientError::Refused { code, message }),
            ServerFrame::Subscribed { .. } | ServerFrame::Other => None,
        })
    }

    pub(super) fn cursor(&self) -> String {
        self.cursor.encode()
    }

    pub(super) async fn close(mut self) -> Result<(), ClientError> {
        match self.socket.close(None).await {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscribe_frame_carries_since_and_last_only_when_given() {
        let frame: Value = serde_json::from_str(&subscribe_frame("chat:a", None, None, 0)).unwrap();
        assert_eq!(frame, serde_json::json!({"op":"subscribe","channel":"chat:a","id":0}));
        let frame: Value = serde_json::from_str(&subscribe_frame("c", Some("AQ"), Some(5), 2)).unwrap();
        assert_eq!(frame, serde_json::json!({"op":"subscribe","channel":"c","since":"AQ","last":5,"id":2}));
    }

    #[test]
    fn reads_every_documented_server_frame() {
        assert_eq!(
            ServerFrame::parse(r#"{"op":"subscribed","channel":"c","cursor":"AQ","reset":true,"id":1}"#).unwrap(),
            ServerFrame::Subscribed { channel: "c".into(), cursor: "AQ".into(), reset: true }
        );
        assert_eq!(
            ServerFrame::parse(r#"{"op":"reset","channel":"c","cursor":"AQ"}"#).unwrap(),
            ServerFrame::Reset { channel: "c".into(), cursor: "AQ".into() }
        );
        assert_eq!(
            ServerFrame::parse(r#"{"op":"error","id":1,"code":"invalid_cursor","message":"no"}"#).unwrap(),
            ServerFrame::Error { id: Some(1.into()), code: "invalid_cursor".into(), message: "no".into() }
        );
        for other in [
            r#"{"op":"pong","id":4}"#,
            r#"{"op":"unsubscribed","channel":"c"}"#,
            r#"{"op":"published","channel":"c","offset":8,"cursor":"AQ","time":"t","id":3}"#,
            r#"{"op":"something_new","x":[1]}"#,
        ] {
            assert_eq!(ServerFrame::parse(other).unwrap(), ServerFrame::Other, "{other}");
        }
    }

    #[test]
    fn a_message_frame_is_the_envelope_with_an_op() {
        let text =
            r#"{"op":"message","channel":"c","offset":3,"cursor":"AQ","event":"e","data":{"x":[1,null]},"time":"t"}"#;
        let ServerFrame::Message(envelope) = ServerFrame::parse(text).unwrap() else { panic!("not a message") };
        assert_eq!((envelope.channel.as_str(), envelope.offset, envelope.event.as_str()), ("c", 3, "e"));
        assert_eq!(envelope.data.get(), r#"{"x":[1,null]}"#);
    }

    #[test]
    fn a_frame_that_is_not_a_server_frame_is_a_protocol_error() {
        for bad in ["nope", "[1]", r#"{"channel":"c"}"#, r#"{"op":"subscribed","channel":"c"}"#] {
            assert!(matches!(ServerFrame::parse(bad), Err(ClientError::Protocol(_))), "{bad}");
        }
    }
}

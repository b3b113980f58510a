//! The Server-Sent Events transport: `GET /v1/sse?channel=…&envelope=true`, read incrementally.
//!
//! `envelope=true` makes every message an unnamed event whose data is the whole envelope, so the client
//! learns each message's channel and cursor; `herald.reset` events announce lost history. Opening waits for
//! the stream's first block, whose `id` is the position the stream starts from. The cursor is the SSE last
//! event id as of the last event handed to the caller, which covers every channel of the stream.

use std::collections::VecDeque;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use serde::Deserialize;

use super::{Event, SubscribeOptions};
use crate::client::Client;
use crate::error::ClientError;
use crate::http::{api_error, read_body, send, StreamingResponse};
use crate::sse_parser::{SseEvent, SseParser};
use crate::url::Query;

/// The event type of a lost history.
const RESET_EVENT: &str = "herald.reset";

/// The route and query of the stream.
fn stream_route(options: &SubscribeOptions) -> String {
    let mut query = Query::default();
    for channel in &options.channels {
        query.push("channel", channel);
    }
    if let Some(since) = &options.since {
        query.push("since", since);
    }
    if let Some(last) = options.last {
        query.push("last", &last.to_string());
    }
    query.push("envelope", "true");
    query.after("/v1/sse")
}

#[derive(Deserialize)]
struct ResetData {
    channels: Vec<String>,
}

/// The meaning of an SSE event: a message, a reset, or nothing this client knows (skipped, as a browser
/// skips an event type it has no listener for).
fn to_event(sse: SseEvent) -> Result<Option<Event>, ClientError> {
    match sse.event.as_str() {
        "message" => serde_json::from_str(&sse.data)
            .map(|envelope| Some(Event::Message(envelope)))
            .map_err(|e| ClientError::Protocol(format!("an SSE message is not an envelope: {e}"))),
        RESET_EVENT => serde_json::from_str::<ResetData>(&sse.data)
            .map(|reset| Some(Event::Reset { channels: reset.channels }))
            .map_err(|e| ClientError::Protocol(format!("a {RESET_EVENT} event is not {{\"channels\":[…]}}: {e}"))),
        _ => Ok(None),
    }
}

pub(super) struct SseSubscription {
    response: StreamingResponse,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
    /// The last event id as of the last event returned (or, before any, as of the first one queued).
    returned_id: String,
    done: bool,
}

impl SseSubscription {
    pub(super) async fn open(client: &Client, options: &SubscribeOptions) -> Result<Self, ClientError> {
        let path = client.base().path(&stream_route(options));
        let headers = [("accept", "text/event-stream"), ("cache-control", "no-cache")];
        let response = send(client, Method::GET, &path, &headers, Bytes::new()).await?;
        if !response.status.is_success() {
            let status = response.status.as_u16();
            return Err(api_error(status, &read_body(response.body).await?));
        }
        let content_type = response.headers.get(hyper::header::CONTENT_TYPE).map(|v| v.as_bytes());
        if !content_type.is_some_and(|v| v.starts_with(b"text/event-stream")) {
            return Err(ClientError::Protocol(format!("/v1/sse answered with content type {content_type:?}")));
        }
        let mut sub = Self {
            response,
            parser: SseParser::new(),
            queue: VecDeque::new(),
            returned_id: String::new(),
            done: false,
        };
        while sub.parser.blocks() == 0 {
            if !sub.read_chunk().await? {
                return Err(ClientError::Protocol("the SSE stream ended before its first block".into()));
            }
        }
        if sub.parser.last_event_id().is_empty() {
            return Err(ClientError::Protocol("the SSE stream did not open with an id".into()));
        }
        Ok(sub)
    }

    /// Reads the next chunk of the body into the parser; `false` at the end of the stream.
    async fn read_chunk(&mut self) -> Result<bool, ClientError> {
        loop {
            let Some(frame) = self.response.body.frame().await else { return Ok(false) };
            // Trailers carry no event.
            let Ok(data) = frame?.into_data() else { continue };
            if self.queue.is_empty() {
                self.returned_id = self.parser.last_event_id().to_string();
            }
            let mut events = Vec::new();
            self.parser.feed(&data, &mut events).map_err(|e| ClientError::Protocol(e.to_string()))?;
            self.queue.extend(events);
            return Ok(true);
        }
    }

    pub(super) async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        while !self.done {
            let result = match self.queue.pop_front() {
                Some(sse) => {
                    self.returned_id.clone_from(&sse.id);
                    to_event(sse)
                }
                None => match self.read_chunk().await {
                    Ok(true) => Ok(None),
                    Ok(false) => {
                        self.done = true;
                        return None;
                    }
                    Err(err) => Err(err),
                },
            };
            match result {
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

    pub(super) fn cursor(&self) -> String {
        match self.queue.is_empty() {
            true => self.parser.last_event_id().to_string(),
            false => self.returned_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscribe::Transport;

    #[test]
    fn the_stream_route_names_every_channel_and_asks_for_envelopes() {
        let options = SubscribeOptions::new(["a", "orders/42"], Transport::Sse);
        assert_eq!(stream_route(&options), "/v1/sse?channel=a&channel=orders/42&envelope=true");
        let options = options.since("AQ-_").last(3);
        assert_eq!(stream_route(&options), "/v1/sse?channel=a&channel=orders/42&since=AQ-_&last=3&envelope=true");
    }

    fn sse(event: &str, data: &str) -> SseEvent {
        SseEvent { id: "c".into(), event: event.into(), data: data.into() }
    }

    #[test]
    fn a_message_event_carries_an_envelope() {
        let data = r#"{"channel":"a","offset":1,"cursor":"c","event":"e","data":null,"time":"t"}"#;
        let Ok(Some(Event::Message(envelope))) = to_event(sse("message", data)) else { panic!("not a message") };
        assert_eq!((envelope.channel.as_str(), envelope.offset, envelope.data.get()), ("a", 1, "null"));
    }

    #[test]
    fn a_herald_reset_event_names_its_channels() {
        assert_eq!(
            to_event(sse("herald.reset", r#"{"channels":["a","b"]}"#)).unwrap(),
            Some(Event::Reset { channels: vec!["a".into(), "b".into()] })
        );
    }

    #[test]
    fn unknown_event_types_are_skipped_and_bad_data_is_a_protocol_error() {
        assert_eq!(to_event(sse("something.new", "1")).unwrap(), None);
        assert!(matches!(to_event(sse("message", "{}")), Err(ClientError::Protocol(_))));
        assert!(matches!(to_event(sse("herald.reset", "[]")), Err(ClientError::Protocol(_))));
    }
}

//! Publishing: `POST /v1/channels/{channel}/messages`.
//!
//! The data is any `Serialize` value; a `serde_json::value::RawValue` goes out byte for byte, which is how
//! the CLI sends exactly what the user typed and how a benchmark avoids re-encoding its payload. A publisher of
//! many messages keeps one connection open ([`HttpConnection::publish`]).

use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::ClientError;
use crate::http::{api_error, read_body, HttpConnection};
use crate::url::path_segment;

/// Herald's answer to a publish: where the message was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The channel.
    pub channel: String,
    /// The message's offset in the channel.
    pub offset: u64,
    /// The message's cursor: `since=<it>` returns the messages after it.
    pub cursor: String,
    /// When Herald stored it (RFC 3339, UTC, milliseconds).
    pub time: String,
}

#[derive(Serialize)]
struct PublishBody<'a, T: ?Sized> {
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    data: &'a T,
}

/// The request body `{"event":…,"data":…}`, without `event` when there is none.
fn publish_body<T: Serialize + ?Sized>(event: Option<&str>, data: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(&PublishBody { event, data }).map_err(ClientError::InvalidData)
}

/// The route of `channel`'s messages, with a `/` in the name written `%2F`.
fn messages_route(channel: &str) -> String {
    format!("/v1/channels/{}/messages", path_segment(channel))
}

impl Client {
    /// Publishes `data` (any JSON value, `null` included) on `channel`, with `event` or Herald's default
    /// `message`. Returns once Herald has stored the message and handed it to every subscriber's queue; a
    /// refusal (`invalid_channel`, `payload_too_large` …) is [`ClientError::Api`]. Opens a connection for
    /// this one message: a publisher of many keeps one with [`Client::connect_http`].
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: Option<&str>,
        data: &T,
    ) -> Result<Published, ClientError> {
        self.connect_http().await?.publish(channel, event, data).await
    }
}

impl HttpConnection {
    /// [`Client::publish`] on this kept-open connection.
    pub async fn publish<T: Serialize + ?Sized>(
        &mut self,
        channel: &str,
        event: Option<&str>,
        data: &T,
    ) -> Result<Published, ClientError> {
        let body = publish_body(event, data)?;
        let headers = [("content-type", "application/json"), ("accept", "application/json")];
        let response = self.send(Method::POST, &messages_route(channel), &headers, Bytes::from(body)).await?;
        let status = response.status;
        let body = read_body(response.body).await?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!("the publish answer is not {{channel,offset,cursor,time}}: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn the_body_carries_the_event_only_when_given() {
        let data = serde_json::json!({"top_seller": "Hassan"});
        assert_eq!(publish_body(None, &data).unwrap(), br#"{"data":{"top_seller":"Hassan"}}"#);
        assert_eq!(publish_body(Some("sale"), &data).unwrap(), br#"{"event":"sale","data":{"top_seller":"Hassan"}}"#);
    }

    #[test]
    fn raw_data_is_sent_byte_for_byte() {
        let raw = RawValue::from_string(r#"{ "b" : 1, "a" : 2 }"#.to_string()).unwrap();
        assert_eq!(publish_body(None, &*raw).unwrap(), br#"{"data":{ "b" : 1, "a" : 2 }}"#);
    }

    #[test]
    fn null_is_data_like_any_other() {
        assert_eq!(publish_body(None, &serde_json::Value::Null).unwrap(), br#"{"data":null}"#);
    }

    #[test]
    fn a_slash_in_the_channel_is_percent_encoded_in_the_route() {
        assert_eq!(messages_route("orders/42"), "/v1/channels/orders%2F42/messages");
        assert_eq!(messages_route("chat:room1"), "/v1/channels/chat:room1/messages");
    }
}

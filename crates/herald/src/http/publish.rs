//! `POST /v1/channels/{channel}/messages`: the backend's one call to publish.
//!
//! The body is read up to `max_body_bytes`, checked to be `{"event"?, "data"}` with nothing else, and the
//! data minified before it is stored. `201` is answered only once the engine has stored the message.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use herald_proto::json::minify;
use herald_proto::EventName;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::client_ip::ClientIp;
use super::credentials::authorization;
use super::{AppState, ChannelPath};
use crate::encoded::EncodedMessage;
use crate::error::ApiError;
use crate::refusal::Refusal;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    #[serde(default)]
    event: Option<String>,
    #[serde(borrow, default, deserialize_with = "herald_proto::json::present")]
    data: Option<&'a RawValue>,
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body is larger than {max} bytes"))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ))
    }
}

/// The `201`'s body: `{"channel":…,"offset":…,"cursor":…,"time":…}`, written piece by piece (no `format!`).
fn answer(message: &EncodedMessage) -> Vec<u8> {
    let m = &message.message;
    let mut out = Vec::with_capacity(64 + m.channel.as_str().len() + message.cursor.len());
    out.push(b'{');
    m.write_receipt(&mut out, &message.cursor);
    out.push(b'}');
    out
}

async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|err| {
        let over = std::error::Error::source(&err).is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            too_large(max)
        } else {
            ApiError::bad_request("invalid_body", format!("could not read the body: {err}"))
        }
    })
}

pub(crate) async fn publish(
    State(state): State<AppState>,
    ChannelPath(channel): ChannelPath,
    ClientIp(ip): ClientIp,
    request: Request,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    // The request's own headers, not a copy of them (a `HeaderMap` extractor clones the map).
    let (Parts { headers, .. }, body) = request.into_parts();
    // Who is asking comes first: nothing of an unauthenticated body is read.
    if let Some(key) = state.auth.publisher(authorization(&headers), &channel)? {
        state.limits.publish_with_key(key.name())?;
    }
    check_content_type(&headers)?;
    let max = state.hub.config().max_body_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let body = match declared.filter(|&len| len > max) {
        Some(_) => Err(too_large(max)),
        None => read_body(body, max).await,
    };
    let body = body.inspect_err(|err| {
        if err.code == "payload_too_large" {
            state.limits.refused(Refusal::BodySize, || format!("{ip}: a publish body over {max} bytes"));
        }
    })?;
    // One parse on the way that succeeds; a failure is parsed again only to say which of the two it is.
    let parsed: PublishBody<'_> = serde_json::from_slice(&body).map_err(|e| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            ApiError::bad_request("invalid_json", "the body is not valid JSON")
        } else {
            ApiError::bad_request("invalid_body", e.to_string())
        }
    })?;
    let data = parsed.data.ok_or_else(|| ApiError::bad_request("invalid_body", "`data` is required"))?;
    let event = match parsed.event {
        Some(name) => EventName::new(&name)?,
        None => EventName::default_event(),
    };
    let data = Bytes::from(minify(data.get().as_bytes()));
    let message = state.hub.publish(channel, event, data).await?;
    let answer = answer(&message);
    state.hub.metrics().publish_answered(started);
    Ok((StatusCode::CREATED, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], answer)
        .into_response())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use herald_proto::{ChannelName, EventName, Message, Position};

    use super::*;

    #[test]
    fn the_answer_is_the_documented_shape() {
        let message = EncodedMessage::new(Message {
            channel: ChannelName::new("orders.42").unwrap(),
            position: Position::new(7, 12_345_678_901),
            event: EventName::default_event(),
            data: Bytes::from_static(b"{}"),
            time_ms: 1_795_833_108_123,
        });
        let cursor = message.message.cursor().encode();
        assert_eq!(
            String::from_utf8(answer(&message)).unwrap(),
            format!(
                r#"{{"channel":"orders.42","offset":12345678901,"cursor":"{cursor}","time":"2026-11-28T02:31:48.123Z"}}"#
            )
        );
    }
}

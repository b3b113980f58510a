//! What a backend (or a page) may ask about channels rather than their messages: who is in one
//! (`GET /v1/channels/{channel}/presence`), how many listen to one (`GET /v1/channels/{channel}`), and which are
//! occupied (`GET /v1/channels?prefix=…`). All of it is the cluster's, from the hub.
//!
//! Occupancy is the backend's business: it needs a publisher key (when keys are configured), and the list shows
//! only channels the key reaches. A channel's members may be read by a backend with a key that reaches the channel,
//! or by whoever may subscribe to it (a page with its token).

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_proto::{presence, ChannelName};

use super::credentials::{authorization, authorize_read};
use super::query::Query;
use super::{AppState, ChannelPath};
use crate::error::ApiError;

/// Occupied channels a list answers at most, and by default.
const MAX_LIST: u64 = 1000;
const DEFAULT_LIST: u64 = 100;

fn json(body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

/// `GET /v1/channels/{channel}/presence`: `{"channel","members":[…],"count"}`.
pub(crate) async fn presence(
    State(state): State<AppState>,
    ChannelPath(channel): ChannelPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authorization(&headers);
    if state.auth.carries_publisher_key(auth) {
        state.auth.publisher(auth, &channel)?;
    } else {
        authorize_read(&state, &headers, &Query::parse(raw.as_deref()), std::slice::from_ref(&channel))?;
    }
    if !state.hub.has_presence(&channel) {
        let message = format!("{channel} has no presence: its namespace does not set `presence = true`");
        return Err(ApiError::bad_request("presence_disabled", message));
    }
    let members = state.hub.members(&channel).await?;
    Ok(json(presence::members(&channel, &members.texts())))
}

/// `GET /v1/channels/{channel}`: `{"channel","occupied","subscribers","members"}`.
pub(crate) async fn channel(
    State(state): State<AppState>,
    ChannelPath(channel): ChannelPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.publisher(authorization(&headers), &channel)?;
    let occupancy = state.hub.occupancy(&channel).await?;
    let body = format!(
        r#"{{"channel":"{channel}","occupied":{},"subscribers":{},"members":{}}}"#,
        occupancy.occupied(),
        occupancy.subscribers,
        occupancy.members
    );
    Ok(json(body.into_bytes()))
}

/// `GET /v1/channels?prefix=…&limit=…`: `{"channels":[{"channel","subscribers","members"}, …]}`, occupied
/// channels in name order.
pub(crate) async fn occupied(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = state.auth.backend(authorization(&headers))?;
    let query = Query::parse(raw.as_deref());
    let prefix = query.one("prefix").unwrap_or("");
    if !prefix.is_empty() && !ChannelName::is_valid(prefix) {
        return Err(ApiError::parameter("`prefix` is the start of a channel name"));
    }
    let limit = query.number("limit")?.unwrap_or(DEFAULT_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::parameter(format!("`limit` is between 1 and {MAX_LIST}")));
    }
    let found = state.hub.occupied(prefix, limit as usize).await?;
    let mut body = b"{\"channels\":[".to_vec();
    let reached = found.iter().filter(|(channel, _)| key.map_or(true, |key| key.reaches(channel)));
    for (i, (channel, occupancy)) in reached.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            format!(
                r#"{{"channel":"{channel}","subscribers":{},"members":{}}}"#,
                occupancy.subscribers, occupancy.members
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(b"]}");
    Ok(json(body))
}

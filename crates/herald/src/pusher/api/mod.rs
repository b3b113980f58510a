//! The Pusher HTTP API under `/apps/{id}/…`, every request signed (`signed.rs`).
//!
//! - `POST /apps/{id}/events`: one event on up to `max_channels_per_event` channels;
//! - `POST /apps/{id}/batch_events`: up to `max_batch_events` events;
//! - `GET /apps/{id}/channels`, `GET /apps/{id}/channels/{channel}`, `GET /apps/{id}/channels/{channel}/users`:
//!   occupied channels, one channel's occupancy, a presence channel's users, across the cluster (the hub's
//!   occupancy and members);
//! - `POST /apps/{id}/users/{user_id}/terminate_connections`: close a signed-in user's connections on every node
//!   (also at `/users/{user_id}/terminate_connections`, where the Python SDK sends it).
//!
//! An event goes through `Hub::publish_from` once per channel, in the order given, with the trigger's
//! `socket_id` in its origin; on a user's `#server-to-user-<id>` channel it is a signal to every node instead
//! (server-to-user events are not stored). Everything is checked before anything is published, so a refused
//! request publishes nothing.

pub mod signed;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use herald_proto::{ChannelName, EventName};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::apps::App;
use super::signals::Signal;
use super::wire::names::server_to_user;
use super::wire::{data, ChannelKind, PusherChannel, SocketId};
use super::PusherState;
use crate::error::ApiError;
use crate::hub::{Occupancy, Origin};
use crate::refusal::Refusal;
use signed::Signed;

/// One event as the API gives it.
#[derive(Deserialize)]
struct EventBody<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

impl EventBody<'_> {
    /// The attributes its `info` asks for.
    fn info(&self) -> Result<Info, ApiError> {
        Info::parse(self.info.as_deref())
    }
}

/// The attributes a request's `info` asks for (`user_count`, `subscription_count`; others are ignored).
#[derive(Debug, Clone, Copy, Default)]
struct Info {
    user_count: bool,
    subscription_count: bool,
}

impl Info {
    fn parse(info: Option<&str>) -> Result<Self, ApiError> {
        let mut asked = Info::default();
        for attribute in info.unwrap_or_default().split(',').map(str::trim) {
            match attribute {
                "user_count" => asked.user_count = true,
                "subscription_count" => asked.subscription_count = true,
                _ => {}
            }
        }
        Ok(asked)
    }

    fn any(self) -> bool {
        self.user_count || self.subscription_count
    }

    /// `user_count` is a presence channel's only.
    fn check(self, channel: &PusherChannel) -> Result<(), ApiError> {
        if self.user_count && channel.kind() != ChannelKind::Presence {
            let message = format!("user_count is for presence channels only; {channel} is not one");
            return Err(ApiError::bad_request("invalid_info", message));
        }
        Ok(())
    }

    /// Writes the asked attributes of `occupancy` as JSON members (`"user_count":2,…`), without braces.
    fn members(self, occupancy: Occupancy) -> String {
        let mut out = Vec::new();
        if self.user_count {
            out.push(format!("\"user_count\":{}", occupancy.members));
        }
        if self.subscription_count {
            out.push(format!("\"subscription_count\":{}", occupancy.subscribers));
        }
        out.join(",")
    }
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<EventBody<'a>>,
}

/// Where one checked event goes.
enum Target {
    /// A Herald channel of the app, and its Pusher name.
    Channel(ChannelName, PusherChannel),
    /// A signed-in user, through a signal.
    User(String),
}

/// An event checked and ready to go out.
struct Trigger {
    info: Info,
    event: EventName,
    /// The data string as given.
    text: String,
    targets: Vec<Target>,
    socket_id: Option<SocketId>,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            ApiError::bad_request("invalid_json", "the body is not valid JSON")
        } else {
            ApiError::bad_request("invalid_body", e.to_string())
        }
    })
}

/// Checks one event against the app's limits and names.
fn check(state: &PusherState, app: &App, body: EventBody<'_>) -> Result<Trigger, ApiError> {
    let limits = &app.limits;
    let info = body.info()?;
    let event = EventName::any(&body.name).map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
    if body.name.starts_with("pusher:") || body.name.starts_with("pusher_internal:") {
        return Err(ApiError::bad_request("invalid_event", "event names starting with pusher: are the protocol's own"));
    }
    // `data` is a string; another JSON value is taken as its JSON text.
    let text = serde_json::from_str::<String>(body.data.get()).unwrap_or_else(|_| body.data.get().to_string());
    let max = limits.max_event_bytes;
    if data::size(&text) > max {
        state.app.limits.refused(Refusal::PusherEventSize, || format!("app {}: event data over {max} bytes", app.id));
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("an event's data may be at most {max} bytes"),
        ));
    }
    let names: Vec<String> = body.channels.unwrap_or_default().into_iter().chain(body.channel).collect();
    if names.is_empty() {
        return Err(ApiError::bad_request("invalid_body", "name at least one channel (`channels` or `channel`)"));
    }
    let most = limits.max_channels_per_event;
    if names.len() > most {
        state
            .app
            .limits
            .refused(Refusal::PusherChannelsPerEvent, || format!("app {}: more than {most} channels", app.id));
        return Err(ApiError::bad_request("too_many_channels", format!("an event may name at most {most} channels")));
    }
    let targets = names
        .iter()
        .map(|name| match server_to_user(name) {
            Some(user) => Ok(Target::User(user.to_string())),
            None => {
                let channel = PusherChannel::parse(name)
                    .map_err(|e| ApiError::bad_request("invalid_channel", format!("{name:?}: {e}")))?;
                info.check(&channel)?;
                Ok(Target::Channel(app.herald_channel(&channel)?, channel))
            }
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let socket_id = match body.socket_id.as_deref() {
        None | Some("") => None,
        Some(id) => Some(SocketId::parse(id).ok_or_else(|| {
            ApiError::bad_request("invalid_socket_id", format!("{id:?} is not a socket id (digits.digits)"))
        })?),
    };
    Ok(Trigger { info, event, text, targets, socket_id })
}

/// Publishes a checked event on each of its targets, in order; answers the attributes its `info` asked for, as
/// `"name":{…}` JSON members, one per channel.
async fn trigger(state: &PusherState, app: &App, trigger: Trigger) -> Result<Vec<String>, ApiError> {
    let (stored, data_as_value) = data::from_api(&trigger.text);
    let origin = Origin { sender: trigger.socket_id.as_ref().map(SocketId::shared), user_id: None, data_as_value };
    let mut attributes = Vec::new();
    for target in trigger.targets {
        match target {
            Target::Channel(channel, name) => {
                let hub = &state.app.hub;
                hub.publish_from(channel.clone(), trigger.event.clone(), stored.clone(), origin.clone()).await?;
                if trigger.info.any() {
                    let occupancy = hub.occupancy(&channel).await?;
                    attributes.push(format!("{}:{{{}}}", json_string(name.as_str()), trigger.info.members(occupancy)));
                }
            }
            Target::User(user) => {
                let signal = Signal::UserEvent {
                    app: app.id.clone(),
                    user,
                    event: trigger.event.to_string(),
                    data: trigger.text.clone(),
                };
                signal.send(&state.app.hub).await?;
            }
        }
    }
    Ok(attributes)
}

fn json_string(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + 2);
    herald_proto::json::push_string(&mut out, text);
    String::from_utf8_lossy(&out).into_owned()
}

/// `200` with a JSON body.
fn json(body: impl Into<Bytes>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// `200 {}`, what the API answers a request that did what it asked.
fn done() -> Response {
    json(Bytes::from_static(b"{}"))
}

/// `POST /apps/{id}/events`: `{}`, or with `info`, `{"channels":{name:{attributes}}}`.
pub async fn events(State(state): State<PusherState>, request: Signed) -> Result<Response, ApiError> {
    let body: EventBody<'_> = parse(&request.body)?;
    let checked = check(&state, &request.app, body)?;
    let asked = checked.info.any();
    let attributes = trigger(&state, &request.app, checked).await?;
    if !asked {
        return Ok(done());
    }
    Ok(json(format!("{{\"channels\":{{{}}}}}", attributes.join(","))))
}

/// `POST /apps/{id}/batch_events`.
pub async fn batch_events(State(state): State<PusherState>, request: Signed) -> Result<Response, ApiError> {
    let body: BatchBody<'_> = parse(&request.body)?;
    let most = request.app.limits.max_batch_events;
    if body.batch.len() > most {
        let id = &request.app.id;
        state.app.limits.refused(Refusal::PusherBatchSize, || format!("app {id}: a batch of more than {most} events"));
        return Err(ApiError::bad_request("too_many_events", format!("a batch may hold at most {most} events")));
    }
    let checked =
        body.batch.into_iter().map(|event| check(&state, &request.app, event)).collect::<Result<Vec<_>, _>>()?;
    let asked = checked.iter().any(|event| event.info.any());
    let mut answers = Vec::with_capacity(checked.len());
    for event in checked {
        // An event names one channel in a batch: its attributes, or `{}`.
        let attributes = trigger(&state, &request.app, event).await?;
        let first = attributes.first().and_then(|a| a.split_once(':')).map_or("", |(_, value)| value);
        answers.push(if first.is_empty() { "{}".to_string() } else { first.to_string() });
    }
    if !asked {
        return Ok(done());
    }
    Ok(json(format!("{{\"batch\":[{}]}}", answers.join(","))))
}

/// The most channels `GET /apps/{id}/channels` lists (the first, in name order), as Herald's own listing.
pub const MAX_LISTED_CHANNELS: usize = 1000;

/// `GET /apps/{id}/channels[?filter_by_prefix=…][&info=user_count,subscription_count]`: the app's occupied
/// channels across the cluster, `{"channels":{name:{attributes}}}`.
pub async fn channels(State(state): State<PusherState>, request: Signed) -> Result<Response, ApiError> {
    let info = Info::parse(request.param("info"))?;
    let prefix = request.param("filter_by_prefix").unwrap_or_default();
    if info.user_count && !prefix.starts_with("presence-") {
        return Err(ApiError::bad_request("invalid_info", "user_count needs filter_by_prefix=presence-"));
    }
    let namespace = format!("{}:{prefix}", request.app.namespace);
    let occupied = state.app.hub.occupied(&namespace, MAX_LISTED_CHANNELS).await?;
    let listed: Vec<String> = occupied
        .iter()
        .filter_map(|(channel, occupancy)| {
            let name = request.app.pusher_name(channel).filter(|name| PusherChannel::parse(name).is_ok())?;
            Some(format!("{}:{{{}}}", json_string(name), info.members(*occupancy)))
        })
        .collect();
    Ok(json(format!("{{\"channels\":{{{}}}}}", listed.join(","))))
}

/// The `{channel_name}` of a path.
#[derive(Deserialize)]
pub struct ChannelNamePath {
    channel_name: String,
}

/// The app's channel a path names.
fn named(app: &App, name: &str) -> Result<(PusherChannel, ChannelName), ApiError> {
    let channel =
        PusherChannel::parse(name).map_err(|e| ApiError::bad_request("invalid_channel", format!("{name:?}: {e}")))?;
    let herald = app.herald_channel(&channel)?;
    Ok((channel, herald))
}

/// `GET /apps/{id}/channels/{channel_name}[?info=user_count,subscription_count]`: `{"occupied":…,…}`.
pub async fn channel(
    State(state): State<PusherState>,
    Path(ChannelNamePath { channel_name }): Path<ChannelNamePath>,
    request: Signed,
) -> Result<Response, ApiError> {
    let info = Info::parse(request.param("info"))?;
    let (channel, herald) = named(&request.app, &channel_name)?;
    info.check(&channel)?;
    let occupancy = state.app.hub.occupancy(&herald).await?;
    let attributes = info.members(occupancy);
    let separator = if attributes.is_empty() { "" } else { "," };
    Ok(json(format!("{{\"occupied\":{}{separator}{attributes}}}", occupancy.occupied())))
}

/// `GET /apps/{id}/channels/{channel_name}/users`: a presence channel's users, `{"users":[{"id":…}]}`.
pub async fn users(
    State(state): State<PusherState>,
    Path(ChannelNamePath { channel_name }): Path<ChannelNamePath>,
    request: Signed,
) -> Result<Response, ApiError> {
    let (channel, herald) = named(&request.app, &channel_name)?;
    if channel.kind() != ChannelKind::Presence {
        let message = format!("{channel} is not a presence channel");
        return Err(ApiError::bad_request("not_a_presence_channel", message));
    }
    let members = state.app.hub.members(&herald).await?;
    let users: Vec<String> =
        members.members.iter().map(|m| format!("{{\"id\":{}}}", json_string(&m.user_id))).collect();
    Ok(json(format!("{{\"users\":[{}]}}", users.join(","))))
}

/// The `{user_id}` of a path.
#[derive(Deserialize)]
pub struct UserPath {
    user_id: String,
}

/// `POST /apps/{id}/users/{user_id}/terminate_connections`, and `POST /users/{user_id}/terminate_connections`
/// where the Python SDK sends it (the app then comes from `auth_key`).
pub async fn terminate_connections(
    State(state): State<PusherState>,
    Path(UserPath { user_id: user }): Path<UserPath>,
    request: Signed,
) -> Result<Response, ApiError> {
    Signal::Terminate { app: request.app.id.clone(), user }.send(&state.app.hub).await?;
    Ok(done())
}

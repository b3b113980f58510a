//! The Pusher HTTP API under `/apps/{id}/…`, every request signed (`signed.rs`).
//!
//! - `POST /apps/{id}/events`: one event on up to `max_channels_per_event` channels;
//! - `POST /apps/{id}/batch_events`: up to `max_batch_events` events;
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
use super::wire::{data, PusherChannel, SocketId};
use super::PusherState;
use crate::error::ApiError;
use crate::hub::Origin;
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
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<EventBody<'a>>,
}

/// Where one checked event goes.
enum Target {
    /// A Herald channel of the app.
    Channel(ChannelName),
    /// A signed-in user, through a signal.
    User(String),
}

/// An event checked and ready to go out.
struct Trigger {
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
                Ok(Target::Channel(app.herald_channel(&channel)?))
            }
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let socket_id = match body.socket_id.as_deref() {
        None | Some("") => None,
        Some(id) => Some(SocketId::parse(id).ok_or_else(|| {
            ApiError::bad_request("invalid_socket_id", format!("{id:?} is not a socket id (digits.digits)"))
        })?),
    };
    Ok(Trigger { event, text, targets, socket_id })
}

/// Publishes a checked event on each of its targets, in order.
async fn trigger(state: &PusherState, app: &App, trigger: Trigger) -> Result<(), ApiError> {
    let (stored, data_as_value) = data::from_api(&trigger.text);
    let origin = Origin { sender: trigger.socket_id.as_ref().map(SocketId::shared), user_id: None, data_as_value };
    for target in trigger.targets {
        match target {
            Target::Channel(channel) => {
                state.app.hub.publish_from(channel, trigger.event.clone(), stored.clone(), origin.clone()).await?;
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
    Ok(())
}

/// `200 {}`, what the API answers a request that did what it asked.
fn done() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Bytes::from_static(b"{}")).into_response()
}

/// `POST /apps/{id}/events`.
pub async fn events(State(state): State<PusherState>, request: Signed) -> Result<Response, ApiError> {
    let body: EventBody<'_> = parse(&request.body)?;
    let checked = check(&state, &request.app, body)?;
    trigger(&state, &request.app, checked).await?;
    Ok(done())
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
    for event in checked {
        trigger(&state, &request.app, event).await?;
    }
    Ok(done())
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

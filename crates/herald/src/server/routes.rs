//! Every route: the one place that knows which path goes to which handler, above the transports and the
//! shared HTTP parts they use.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::http::{admin, assets, channels, cors, ops, publish, AppState};
use crate::pusher::{api as pusher_api, fallback as pusher_http, websocket as pusher_ws, Pusher, PusherState};
use crate::transport::{latest, poll, sse, ws};

/// The Server-Sent Events route; `connection.rs` also looks for it to serve such a stream off hyper.
pub(crate) const SSE_PATH: &str = "/v1/sse";

/// All routes: Herald's, and the Pusher protocol's (`/app/…` for clients, `/apps/…` for the HTTP API).
pub fn router(state: AppState, pusher: Arc<Pusher>) -> Router {
    let cors = Arc::new(state.hub.config().cors_origins.clone());
    let pusher = Router::new()
        .route("/app/{key}", get(pusher_ws::connect))
        .route("/app/{key}/{*rest}", get(pusher_ws::wrong_path))
        .route("/pusher/app/{key}/{server}/{session}/xhr_streaming", post(pusher_http::xhr_streaming))
        .route("/pusher/app/{key}/{server}/{session}/xhr", post(pusher_http::xhr_polling))
        .route("/pusher/app/{key}/{server}/{session}/xhr_send", post(pusher_http::xhr_send))
        .route("/apps/{id}/events", post(pusher_api::events))
        .route("/apps/{id}/batch_events", post(pusher_api::batch_events))
        .route("/apps/{id}/channels", get(pusher_api::channels))
        .route("/apps/{id}/channels/{channel_name}", get(pusher_api::channel))
        .route("/apps/{id}/channels/{channel_name}/users", get(pusher_api::users))
        .route("/apps/{id}/users/{user_id}/terminate_connections", post(pusher_api::terminate_connections))
        .route("/users/{user_id}/terminate_connections", post(pusher_api::terminate_connections))
        .with_state(PusherState { app: state.clone(), pusher });
    Router::new()
        .route("/v1/channels/{channel}/messages", post(publish::publish).get(poll::channel_messages))
        .route("/v1/channels/{channel}/latest", get(latest::latest))
        .route("/v1/channels/{channel}/presence", get(channels::presence))
        .route("/v1/channels/{channel}", get(channels::channel))
        .route("/v1/channels", get(channels::occupied))
        .route("/v1/poll", get(poll::poll))
        .route(SSE_PATH, get(sse::sse))
        .route("/v1/ws", get(ws::ws))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .route("/v1/herald.js", get(assets::client))
        .route("/v1/herald/{*module}", get(assets::client_module))
        .merge(admin::routes())
        .with_state(state)
        .merge(pusher)
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
        })
        .layer(cors::CorsLayer::new(cors))
}

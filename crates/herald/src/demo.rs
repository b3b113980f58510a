//! The demo's publisher: the scenarios of a food-ordering app, played on the embedded hub.
//!
//! - `dashboard`, event `newTopSeller`: a new top seller of the day every interval;
//! - `orders:1001`, event `orderStatus`: an order moving pending → preparing → in-delivery → delivered, over
//!   and over (35 minutes compressed to a few intervals);
//! - `chat:lobby`, event `chat`: a room where visitors may publish (the `chat` namespace allows it) and a bot
//!   that answers now and then; the namespace has presence, so the page shows who is in the room (the bot, and
//!   each visitor by the name the demo's `/demo/token` put in its token, as a real app's backend would);
//! - `notifications`, event `notification`: occasional notices.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64ct::{Base64UrlUnpadded, Encoding};
use bytes::Bytes;
use herald_proto::{ChannelName, EventName};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::{Config, NamespaceSettings};
use crate::error::ApiError;
use crate::http::query::Query;
use crate::http::AppState;
use crate::hub::{member, Hub, Item, Start};
use crate::metrics::Transport;
use crate::shutdown::Shutdown;

const SELLERS: [&str; 5] = ["Ahmed", "Yasser", "Ibrahim", "Hussain", "Hassan"];
const ORDER_STEPS: [(&str, u32); 4] = [("pending", 35), ("preparing", 35), ("in-delivery", 20), ("delivered", 0)];
const BOT: &str = "Chef Bot";
const BOT_LINES: [&str; 5] = [
    "Today's special: lamb mandi with saffron rice.",
    "Kitchen's busy: average prep time is 15 minutes.",
    "Free delivery on orders over 50 until 9 pm!",
    "Riders are out: delivery time is about 20 minutes.",
    "Try the kunafa, it just came out of the oven.",
];
const REPLIES: [&str; 4] = [
    "Great choice!",
    "Noted, I'll tell the kitchen.",
    "Thanks for ordering with us!",
    "Good question: ask me anything about the menu.",
];
const NOTICES: [(&str, &str); 4] = [
    ("Order 1001", "Your rider is on the way."),
    ("Promotion", "20% off desserts for the next hour."),
    ("Kitchen", "The grill is fired up."),
    ("Account", "You earned 50 loyalty points."),
];

/// How long a demo visitor's token lasts.
const TOKEN_LIFETIME_SECS: u64 = 3600;

/// Adds what the demo needs to a configuration: a `chat` namespace open to client publishing, with presence, and
/// a secret to sign visitors' tokens with. When the configuration had no token key, the secret is a random one and
/// every namespace stays public, as without it.
pub fn configure(config: &mut Config) {
    if !config.jwt.has_key() {
        config.jwt.secret = Some(random_secret());
        config.default_namespace.public.get_or_insert(true);
    }
    config.namespaces.entry("chat".to_string()).or_insert_with(|| NamespaceSettings {
        allow_client_publish: true,
        presence: true,
        ..config.default_namespace.clone()
    });
}

/// 64 hexadecimal digits from the process's random hash keys: enough for a demo's tokens.
fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..4)
        .map(|i: u64| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(i);
            hasher.write_u128(herald_proto::time::now_millis().into());
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

/// The demo's own routes: `GET /demo/token?name=…`, a visitor's token, as an application's backend would issue it.
pub fn routes() -> Router<AppState> {
    Router::new().route("/demo/token", get(token))
}

/// A token for the visitor `name` (1 to 32 characters): `sub` is the name, and so is `info.name`.
async fn token(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let name = query.one("name").unwrap_or("").trim();
    if name.is_empty() || name.chars().count() > 32 || name.chars().any(char::is_control) {
        return Err(ApiError::parameter("`name` has 1 to 32 characters"));
    }
    let Some(secret) = state.hub.config().jwt.secret.as_deref() else {
        return Err(ApiError::not_found());
    };
    let claims = json!({ "sub": name, "exp": crate::auth::now_unix() + TOKEN_LIFETIME_SECS, "info": { "name": name } });
    let header = Base64UrlUnpadded::encode_string(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signed = format!("{header}.{}", Base64UrlUnpadded::encode_string(claims.to_string().as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| ApiError::not_found())?;
    mac.update(signed.as_bytes());
    let token = format!("{signed}.{}", Base64UrlUnpadded::encode_string(&mac.finalize().into_bytes()));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain"), (header::CACHE_CONTROL, "no-store")], token)
        .into_response())
}

/// A small xorshift generator: the demo needs variety, not cryptography.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        Self(herald_proto::time::now_millis() | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

async fn publish(hub: &Hub, channel: &str, event: &str, data: serde_json::Value) {
    let (Ok(channel), Ok(event)) = (ChannelName::new(channel), EventName::new(event)) else { return };
    let data = Bytes::from(serde_json::to_vec(&data).unwrap_or_default());
    if let Err(err) = hub.publish(channel, event, data).await {
        tracing::warn!(%err, "demo publish failed");
    }
}

/// Plays every scenario until shutdown; `interval` paces the top seller, the rest follow from it.
pub async fn run(hub: Arc<Hub>, interval: Duration, shutdown: Shutdown) {
    let mut dice = Dice::new();
    let mut tick = tokio::time::interval(interval);
    let mut seller = SELLERS.len();
    let mut step = 0;
    let mut chat = hub.subscription(Transport::WebSocket);
    if let Ok(lobby) = ChannelName::new("chat:lobby") {
        // Only new messages matter; should the engine fail, the bot just does not answer (nor show in the room).
        if chat.subscribe(&lobby, Start::Now, 0).await.is_ok() {
            if let Ok(bot) = member(BOT, Some(&json!({ "name": BOT }).to_string()), 1024) {
                let _ = chat.join(&lobby, &bot).await;
            }
        }
    }
    for round in 0u64.. {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            live = chat.recv() => {
                let said = chat.follow(live, 1).await.items.into_iter().find_map(|item| match item {
                    Item::Message(message) => Some(message),
                    Item::Reset { .. } | Item::Presence(_) => None,
                });
                let visitor = said
                    .and_then(|said| serde_json::from_slice::<serde_json::Value>(&said.message.data).ok())
                    .and_then(|v| v.get("user").and_then(|u| u.as_str()).map(str::to_owned))
                    .filter(|user| user != BOT);
                if visitor.is_some() && dice.below(2) == 0 {
                    let reply = REPLIES[dice.below(REPLIES.len())];
                    publish(&hub, "chat:lobby", "chat", json!({ "user": BOT, "text": reply })).await;
                }
                continue;
            }
        }
        // A different seller each time, so every update is visible.
        let next = (seller + 1 + dice.below(SELLERS.len() - 1)) % SELLERS.len();
        seller = next;
        publish(&hub, "dashboard", "newTopSeller", json!({ "top_seller": SELLERS[seller] })).await;
        if round % 2 == 0 {
            let (status, eta) = ORDER_STEPS[step % ORDER_STEPS.len()];
            publish(
                &hub,
                "orders:1001",
                "orderStatus",
                json!({ "order_id": 1001, "status": status, "eta_minutes": eta }),
            )
            .await;
            step += 1;
        }
        if round % 5 == 2 {
            publish(&hub, "chat:lobby", "chat", json!({ "user": BOT, "text": BOT_LINES[dice.below(BOT_LINES.len())] }))
                .await;
        }
        if round % 4 == 1 {
            let (title, body) = NOTICES[dice.below(NOTICES.len())];
            publish(&hub, "notifications", "notification", json!({ "title": title, "body": body })).await;
        }
    }
}

//! A Pusher client and signed HTTP API requests, over the harness's raw sockets, for the Pusher protocol's Rust
//! tests (the official clients are tested from Node, in clients/pusher/test/).

use std::time::{SystemTime, UNIX_EPOCH};

use herald::config::{Config, PusherAppSettings, PusherLimits};
use herald::pusher::wire::signature;
use serde_json::{json, Value};

use super::{config, Client, Response, Ws, WsRead};

/// The app most tests use.
pub const ID: &str = "1";
pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";

/// An app with default limits.
pub fn app(id: &str, key: &str, secret: &str) -> PusherAppSettings {
    PusherAppSettings {
        id: id.into(),
        key: key.into(),
        secret: secret.into(),
        namespace: None,
        enabled: true,
        client_events: true,
        limits: PusherLimits::default(),
        webhooks: Vec::new(),
    }
}

/// The harness's configuration with the app `1`/`app-key`/`app-secret`.
pub fn pusher_config() -> Config {
    let mut config = config();
    config.pusher.apps = vec![app(ID, KEY, SECRET)];
    config
}

/// A connected Pusher client.
pub struct PusherWs {
    pub ws: Ws,
    pub socket_id: String,
}

impl Client {
    /// Connects to `/app/{key}` as pusher-js does; panics unless the connection is established.
    pub async fn pusher(&self, key: &str) -> PusherWs {
        let mut ws = self.pusher_raw(&format!("/app/{key}?protocol=7&client=js&version=8.6.0&flash=false")).await;
        let hello = ws.recv().await;
        assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
        let data: Value = serde_json::from_str(hello["data"].as_str().unwrap()).unwrap();
        let socket_id = data["socket_id"].as_str().unwrap().to_string();
        PusherWs { ws, socket_id }
    }

    /// A WebSocket on `path`, whatever happens next.
    pub async fn pusher_raw(&self, path: &str) -> Ws {
        self.ws_with(path, &[]).await.unwrap_or_else(|r| panic!("the upgrade was refused: {} {}", r.status, r.text()))
    }

    /// A request to the HTTP API signed with `secret` as the SDKs sign it, at `now` plus `skew` seconds, with the
    /// body's MD5 unless `query` gives a `body_md5`.
    pub async fn pusher_api_at(
        &self,
        (id, key, secret): (&str, &str, &str),
        method: &str,
        path: &str,
        body: &[u8],
        query: &[(&str, &str)],
        skew: i64,
    ) -> Response {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + skew;
        let mut pairs: Vec<(String, String)> = vec![
            ("auth_key".into(), key.into()),
            ("auth_timestamp".into(), now.to_string()),
            ("auth_version".into(), "1.0".into()),
        ];
        if !body.is_empty() && !query.iter().any(|(k, _)| *k == "body_md5") {
            pairs.push(("body_md5".into(), signature::body_md5(body)));
        }
        pairs.extend(query.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let full = format!("/apps/{id}{path}");
        let text = signature::api_text(method, &full, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        pairs.push(("auth_signature".into(), signature::sign(secret, &text)));
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        self.request(method, &format!("{full}?{query}"), &[("Content-Type", "application/json")], body).await
    }

    /// A signed request to the test app's API.
    pub async fn pusher_api(&self, method: &str, path: &str, body: &Value) -> Response {
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
        self.pusher_api_at((ID, KEY, SECRET), method, path, &body, &[], 0).await
    }

    /// Triggers `event` on `channels` with the data string `data`; panics unless `200 {}`.
    pub async fn trigger(&self, channels: &[&str], event: &str, data: &str) {
        let r = self.pusher_api("POST", "/events", &json!({ "name": event, "channels": channels, "data": data })).await;
        assert_eq!((r.status, r.text()), (200, "{}".to_string()));
    }
}

/// A channel authorization as an app's backend signs it.
pub fn auth(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    signature::auth(KEY, SECRET, &signature::channel_text(socket_id, channel, channel_data))
}

impl PusherWs {
    /// Sends a frame.
    pub async fn send(&mut self, frame: Value) {
        self.ws.send(frame).await;
    }

    /// The next frame.
    pub async fn recv(&mut self) -> Value {
        self.ws.recv().await
    }

    /// Subscribes with an authorization (or none) and returns the answer.
    pub async fn subscribe_with(&mut self, channel: &str, auth: Option<&str>, channel_data: Option<&str>) -> Value {
        let mut data = json!({ "channel": channel, "auth": auth.unwrap_or_default() });
        if let Some(channel_data) = channel_data {
            data["channel_data"] = json!(channel_data);
        }
        self.send(json!({ "event": "pusher:subscribe", "data": data })).await;
        self.recv().await
    }

    /// Subscribes (signing when the channel needs it); panics unless it succeeds.
    pub async fn subscribe(&mut self, channel: &str) {
        let auth = (channel.starts_with("private-") || channel.starts_with("presence-"))
            .then(|| auth(&self.socket_id, channel, None));
        let answer = self.subscribe_with(channel, auth.as_deref(), None).await;
        assert_eq!(
            (answer["event"].as_str(), answer["channel"].as_str()),
            (Some("pusher_internal:subscription_succeeded"), Some(channel)),
            "{answer}"
        );
    }

    /// Proves no frame is pending: two ping round trips answer with nothing in between.
    pub async fn assert_quiet(&mut self) {
        for _ in 0..2 {
            self.send(json!({ "event": "pusher:ping", "data": {} })).await;
            let answer = self.recv().await;
            assert_eq!(answer, json!({ "event": "pusher:pong", "data": "{}" }), "a frame came before the pong");
        }
    }

    /// The `pusher:error` and close code that end the connection.
    pub async fn closing(&mut self) -> (Value, Option<u16>) {
        let error = self.recv().await;
        let code = loop {
            if let WsRead::Closed(code) = self.ws.read().await {
                break code;
            }
        };
        (error, code)
    }
}

//! A signed HTTP API request: the app its path names, its body and its query, accepted only when its signature
//! holds, exactly as the SDKs sign.
//!
//! The checks, each a real `401 invalid_signature` (counted as `pusher_signature`) when it fails: `auth_key` is the
//! app's key, `auth_version` is `1.0`, `auth_timestamp` is within ±600 s of the server's clock, `body_md5` is the
//! hex MD5 of a non-empty body, and `auth_signature` is the HMAC-SHA256 of `METHOD\npath\nQ` with the app's
//! secret. The signature covers the query only (the body through its `body_md5`), so it is checked first: nothing
//! of an unsigned request's body is read. Then the body is read (bounded) and its MD5 checked.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;

use super::super::apps::App;
use super::super::wire::signature;
use super::super::PusherState;
use crate::config::PusherLimits;
use crate::error::ApiError;
use crate::refusal::Refusal;

/// How far `auth_timestamp` may be from the server's clock, in seconds.
pub const TIMESTAMP_WINDOW_SECS: u64 = 600;

/// A request whose signature holds.
pub struct Signed {
    /// The app the path names.
    pub app: Arc<App>,
    /// The raw body.
    pub body: Bytes,
    /// The decoded query pairs.
    pub query: Vec<(String, String)>,
}

impl Signed {
    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The largest body an app's API request may have: a full batch of events of the largest data, with room for
/// JSON escaping and the other fields.
pub fn body_limit(limits: &PusherLimits) -> usize {
    limits.max_batch_events.saturating_mul(limits.max_event_bytes).saturating_mul(2).saturating_add(64 * 1024)
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", message)
}

/// The app id of a path `/apps/{id}/…`.
fn app_id(path: &str) -> Option<&str> {
    path.strip_prefix("/apps/")?.split('/').next().filter(|id| !id.is_empty())
}

impl FromRequest<PusherState> for Signed {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &PusherState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let refusals = &state.app.limits;
        let query: Vec<(String, String)> = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        // The Python SDK sends terminate_connections to /users/… without /apps/{id}: its key names the app.
        let found = match app_id(&path) {
            Some(id) => state.pusher.apps.by_id(id),
            None => query.iter().find(|(k, _)| k == "auth_key").and_then(|(_, key)| state.pusher.apps.by_key(key)),
        };
        let Some(app) = found.cloned() else {
            refusals.refused(Refusal::PusherUnknownApp, || format!("an API request for {path}"));
            return Err(ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "no app has this id"));
        };
        let refuse = |err: &ApiError| {
            let (id, why) = (&app.id, err.message.clone());
            refusals.refused(Refusal::PusherSignature, || format!("an API request to app {id}: {why}"));
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        check(parts.method.as_str(), &path, &query, &app, now).inspect_err(refuse)?;
        let max = body_limit(&app.limits);
        let body = read_body(body, max).await.inspect_err(|err| {
            if err.status == StatusCode::PAYLOAD_TOO_LARGE {
                refusals.refused(Refusal::BodySize, || format!("a Pusher API body over {max} bytes"));
            }
        })?;
        check_body(&query, &body).inspect_err(refuse)?;
        Ok(Signed { app, body, query })
    }
}

async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|err| {
        let over = std::error::Error::source(&err).is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {max} bytes"),
            )
        } else {
            ApiError::bad_request("invalid_body", format!("could not read the body: {err}"))
        }
    })
}

fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The checks of a signed request's query, at `now` (seconds since 1970): key, version, timestamp, signature.
fn check(method: &str, path: &str, query: &[(String, String)], app: &App, now: u64) -> Result<(), ApiError> {
    let param = |key: &str| param(query, key);
    if param("auth_key") != Some(app.key.as_str()) {
        return Err(unauthorized("auth_key is not the app's key"));
    }
    if param("auth_version") != Some("1.0") {
        return Err(unauthorized("auth_version must be 1.0"));
    }
    let timestamp = param("auth_timestamp").and_then(|t| t.parse::<u64>().ok());
    match timestamp {
        Some(at) if at.abs_diff(now) <= TIMESTAMP_WINDOW_SECS => {}
        Some(_) => {
            return Err(unauthorized(format!(
                "auth_timestamp is more than {TIMESTAMP_WINDOW_SECS} s from the server's clock"
            )))
        }
        None => return Err(unauthorized("auth_timestamp is missing or not a number")),
    }
    let text = signature::api_text(method, path, query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let given = param("auth_signature").unwrap_or_default();
    if !signature::same(given, &signature::sign(app.secret(), &text)) {
        return Err(unauthorized("auth_signature does not match"));
    }
    Ok(())
}

/// The check of a signed request's body: a non-empty one is the one its signed `body_md5` names.
fn check_body(query: &[(String, String)], body: &[u8]) -> Result<(), ApiError> {
    let md5 = param(query, "body_md5");
    if !body.is_empty() && !md5.is_some_and(|md5| signature::same(md5, &signature::body_md5(body))) {
        return Err(unauthorized("body_md5 is not the MD5 of the body"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PusherAppSettings, PusherSettings};
    use crate::pusher::apps::Apps;

    const NOW: u64 = 1_800_000_000;

    fn app() -> Arc<App> {
        let settings = PusherAppSettings {
            id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
            namespace: None,
            enabled: true,
            client_events: true,
            limits: PusherLimits::default(),
            webhooks: Vec::new(),
        };
        Apps::new(&PusherSettings { apps: vec![settings], ..PusherSettings::default() }).by_id("3").unwrap().clone()
    }

    /// The query an SDK sends for `body` at `at`.
    fn signed(
        app: &App,
        method: &str,
        path: &str,
        body: &[u8],
        at: u64,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut query: Vec<(String, String)> = vec![
            ("auth_key".into(), app.key.clone()),
            ("auth_timestamp".into(), at.to_string()),
            ("auth_version".into(), "1.0".into()),
        ];
        if !body.is_empty() {
            query.push(("body_md5".into(), signature::body_md5(body)));
        }
        query.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let text = signature::api_text(method, path, query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        query.push(("auth_signature".into(), signature::sign(app.secret(), &text)));
        query
    }

    #[test]
    fn a_request_signed_as_the_sdks_sign_is_accepted() {
        let app = app();
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = signed(&app, "POST", "/apps/3/events", body, NOW, &[]);
        assert!(check("POST", "/apps/3/events", &query, &app, NOW).is_ok() && check_body(&query, body).is_ok());
        let get = signed(
            &app,
            "GET",
            "/apps/3/channels",
            b"",
            NOW,
            &[("filter_by_prefix", "presence-"), ("info", "user_count,subscription_count")],
        );
        assert!(check("GET", "/apps/3/channels", &get, &app, NOW + 600).is_ok(), "600 s of skew is fine");
        assert!(check_body(&get, b"").is_ok());
    }

    #[test]
    fn every_broken_part_is_refused() {
        let app = app();
        let body = br#"{"name":"foo","channels":["a"],"data":"1"}"#;
        let good = signed(&app, "POST", "/apps/3/events", body, NOW, &[]);
        let with = |key: &str, value: &str| -> Vec<(String, String)> {
            good.iter().map(|(k, v)| (k.clone(), if k == key { value.to_string() } else { v.clone() })).collect()
        };
        let refused = |query: &[(String, String)], body: &[u8], now: u64, path: &str| {
            let checked = check("POST", path, query, &app, now).and_then(|()| check_body(query, body));
            checked.unwrap_err().message
        };
        assert!(refused(&good, body, NOW + 601, "/apps/3/events").contains("auth_timestamp"), "stale");
        assert!(refused(&good, body, NOW - 601, "/apps/3/events").contains("auth_timestamp"), "from the future");
        assert!(refused(&with("auth_key", "other"), body, NOW, "/apps/3/events").contains("auth_key"));
        assert!(refused(&with("auth_version", "2.0"), body, NOW, "/apps/3/events").contains("auth_version"));
        assert!(
            refused(&with("body_md5", &signature::body_md5(b"x")), body, NOW, "/apps/3/events")
                .contains("auth_signature"),
            "body_md5 is signed"
        );
        assert!(refused(&good, br#"{"name":"bar","channels":["a"],"data":"1"}"#, NOW, "/apps/3/events")
            .contains("body_md5"));
        assert!(
            refused(&with("auth_signature", &"0".repeat(64)), body, NOW, "/apps/3/events").contains("auth_signature")
        );
        assert!(refused(&good, body, NOW, "/apps/3/batch_events").contains("auth_signature"), "another path");
        let unsigned: Vec<(String, String)> = good.iter().filter(|(k, _)| k != "auth_signature").cloned().collect();
        assert!(refused(&unsigned, body, NOW, "/apps/3/events").contains("auth_signature"));
    }

    #[test]
    fn the_app_id_comes_from_the_path() {
        assert_eq!(app_id("/apps/3/events"), Some("3"));
        assert_eq!(app_id("/apps/3"), Some("3"));
        assert_eq!(app_id("/apps//events"), None);
        assert_eq!(app_id("/v1/poll"), None);
    }
}

//! Subscriber tokens, tried over every way of subscribing: SSE (`?token=` and `Authorization`), `/v1/poll`,
//! `/messages`, `/latest`, and WebSocket (`?token=`, `Authorization` on the handshake, an `auth` frame). Every bad
//! token an attacker would try is refused with the same code everywhere; every valid one works everywhere.

#![allow(clippy::unwrap_used)]

mod common;

use common::tokens::{self, claims, BACKEND_KEY};
use common::{spawn, TestServer};
use serde_json::{json, Value};

/// A way of subscribing, and how the token travels.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    SseQuery,
    SseHeader,
    Poll,
    Messages,
    Latest,
    WsQuery,
    WsHeader,
    WsAuthFrame,
}

const EVERY_WAY: [Via; 8] = [
    Via::SseQuery,
    Via::SseHeader,
    Via::Poll,
    Via::Messages,
    Via::Latest,
    Via::WsQuery,
    Via::WsHeader,
    Via::WsAuthFrame,
];

/// What a subscription attempt got: `ok`, or an error code with the HTTP status (`None` for a WebSocket frame).
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    code: String,
    status: Option<u16>,
}

fn ok() -> Outcome {
    Outcome { code: "ok".into(), status: None }
}

fn http_error(r: &common::Response) -> Outcome {
    assert!(r.status >= 400, "{} {}", r.status, r.text());
    if r.status == 401 {
        assert!(r.header("WWW-Authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", r.headers);
    }
    Outcome { code: r.error_code(), status: Some(r.status) }
}

/// Publishes one message on `channel` as the backend, so every transport has something to return.
async fn seed(server: &TestServer, channel: &str) {
    let body = serde_json::to_vec(&json!({ "data": "seed" })).unwrap();
    let path = format!("/v1/channels/{channel}/messages");
    let auth = format!("Bearer {BACKEND_KEY}");
    let r = server.request("POST", &path, &[("Authorization", &auth)], &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

async fn subscribe_frame(ws: &mut common::Ws, channel: &str) -> Outcome {
    let answer = ws.call(json!({ "op": "subscribe", "channel": channel, "last": 1, "id": "s" })).await;
    match answer["op"].as_str() {
        Some("subscribed") => {
            let message = ws.recv().await;
            assert_eq!((message["op"].as_str(), message["data"].as_str()), (Some("message"), Some("seed")));
            ok()
        }
        _ => Outcome { code: answer["code"].as_str().unwrap().into(), status: None },
    }
}

/// Tries to read `channel` through `via` with `token`.
async fn attempt(server: &TestServer, via: Via, channel: &str, token: Option<&str>) -> Outcome {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let header: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    let query = token.map(|t| format!("&token={t}")).unwrap_or_default();
    match via {
        Via::SseQuery | Via::SseHeader => {
            let (q, h) = if via == Via::SseQuery { (query.as_str(), &[][..]) } else { ("", &header[..]) };
            let mut sse = server.sse(&format!("channel={channel}&last=1{q}"), h).await;
            if sse.status != 200 {
                let status = sse.status;
                let body = sse.rest().await;
                return http_error(&common::Response { status, headers: sse_headers(status), body });
            }
            sse.next().await.unwrap();
            assert_eq!(sse.next_data().await.data.as_deref(), Some("\"seed\""));
            ok()
        }
        Via::Poll | Via::Messages | Via::Latest => {
            let path = match via {
                Via::Poll => format!("/v1/poll?channel={channel}"),
                Via::Messages => format!("/v1/channels/{channel}/messages?x=1{query}"),
                _ => format!("/v1/channels/{channel}/latest"),
            };
            // `/messages` takes the token in the query, the other two in the header.
            let headers = if via == Via::Messages { &[][..] } else { &header[..] };
            let r = server.get_with(&path, headers).await;
            if r.status != 200 {
                return http_error(&r);
            }
            let seen = if via == Via::Latest { r.json() } else { r.json()["messages"][0]["data"].clone() };
            assert_eq!(seen, json!("seed"), "{via:?}");
            ok()
        }
        Via::WsQuery | Via::WsHeader => {
            let attempt = if via == Via::WsQuery {
                server.ws_with(&format!("/v1/ws?x=1{query}"), &[]).await
            } else {
                server.ws_with("/v1/ws", &header).await
            };
            match attempt {
                Ok(mut ws) => subscribe_frame(&mut ws, channel).await,
                Err(r) => http_error(&r),
            }
        }
        Via::WsAuthFrame => {
            let mut ws = server.ws().await;
            if let Some(token) = token {
                let answer = ws.call(json!({ "op": "auth", "token": token, "id": "a" })).await;
                if answer["op"] == "error" {
                    assert_eq!(answer["id"], "a");
                    return Outcome { code: answer["code"].as_str().unwrap().into(), status: None };
                }
                assert_eq!(answer["op"], "authenticated", "{answer}");
            }
            subscribe_frame(&mut ws, channel).await
        }
    }
}

/// The raw SSE harness reads headers itself; an error answer is always JSON.
fn sse_headers(status: u16) -> Vec<(String, String)> {
    let challenge = if status == 401 { vec![("WWW-Authenticate".into(), "Bearer".into())] } else { Vec::new() };
    [vec![("Content-Type".into(), "application/json".into())], challenge].concat()
}

/// Every way of subscribing refuses with `code` and `status`.
async fn assert_refused_everywhere(server: &TestServer, channel: &str, token: Option<&str>, code: &str, status: u16) {
    for via in EVERY_WAY {
        let outcome = attempt(server, via, channel, token).await;
        assert_eq!(outcome.code, code, "{via:?}");
        assert!(outcome.status.map_or(true, |s| s == status), "{via:?}: {outcome:?}");
    }
}

async fn secured_server() -> TestServer {
    let server = spawn(tokens::secured()).await;
    for channel in ["orders:1", "orders:2", "user:u42", "news:today", "chat:room1"] {
        seed(&server, channel).await;
    }
    server
}

#[tokio::test]
async fn a_private_channel_without_a_token_is_refused_everywhere() {
    let server = secured_server().await;
    assert_refused_everywhere(&server, "orders:1", None, "token_required", 401).await;
    let refused = server.metric(r#"herald_refusals_total{reason="token_required"}"#).await;
    assert_eq!(refused, EVERY_WAY.len() as u64);
}

#[tokio::test]
async fn an_expired_token_is_refused_everywhere() {
    let server = secured_server().await;
    let expired = tokens::hs256(&json!({ "sub": "u1", "exp": tokens::now() - 60, "channels": ["orders:*"] }));
    assert_refused_everywhere(&server, "orders:1", Some(&expired), "token_expired", 401).await;
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused_everywhere() {
    let server = secured_server().await;
    let claims = claims("u1", &["orders:*"]);
    let other_secret = tokens::hs256_with("another-secret-another-secret-another", &claims);
    assert_refused_everywhere(&server, "orders:1", Some(&other_secret), "invalid_token", 401).await;
    let other_rsa = tokens::rs256_other(&claims);
    assert_refused_everywhere(&server, "orders:1", Some(&other_rsa), "invalid_token", 401).await;
}

#[tokio::test]
async fn a_token_with_alg_none_is_refused_everywhere() {
    let server = secured_server().await;
    let none = tokens::alg_none(&claims("u1", &["orders:*"]));
    assert_refused_everywhere(&server, "orders:1", Some(&none), "invalid_token", 401).await;
}

#[tokio::test]
async fn a_token_with_a_tampered_payload_is_refused_everywhere() {
    let server = secured_server().await;
    let genuine = tokens::hs256(&claims("u1", &["orders:2"]));
    let widened = tokens::tampered(&genuine, &claims("u1", &["orders:*"]));
    assert_refused_everywhere(&server, "orders:1", Some(&widened), "invalid_token", 401).await;
}

#[tokio::test]
async fn a_token_for_another_channel_is_forbidden_everywhere() {
    let server = secured_server().await;
    let token = tokens::hs256(&claims("u1", &["orders:2"]));
    assert_refused_everywhere(&server, "orders:1", Some(&token), "channel_forbidden", 403).await;
}

#[tokio::test]
async fn a_token_for_user_u43_cannot_read_user_u42() {
    let server = secured_server().await;
    let token = tokens::hs256(&claims("u43", &[]));
    assert_refused_everywhere(&server, "user:u42", Some(&token), "channel_forbidden", 403).await;
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm_work_everywhere() {
    let server = secured_server().await;
    let claims = claims("u1", &["orders:*"]);
    let signed = [
        ("HS256", tokens::hs256(&claims)),
        ("RS256 (PEM)", tokens::rs256(&claims)),
        ("RS256 (JWKS kid)", tokens::rs256_kid(&claims)),
        ("ES256", tokens::es256(&claims)),
    ];
    for (alg, token) in signed {
        for via in EVERY_WAY {
            assert_eq!(attempt(&server, via, "orders:1", Some(&token)).await, ok(), "{alg} over {via:?}");
        }
    }
}

#[tokio::test]
async fn a_user_reads_their_own_user_channel_without_listing_it() {
    let server = secured_server().await;
    let token = tokens::es256(&claims("u42", &[]));
    for via in EVERY_WAY {
        assert_eq!(attempt(&server, via, "user:u42", Some(&token)).await, ok(), "{via:?}");
    }
}

#[tokio::test]
async fn a_public_namespace_needs_no_token() {
    let server = secured_server().await;
    for via in EVERY_WAY {
        assert_eq!(attempt(&server, via, "news:today", None).await, ok(), "{via:?}");
    }
}

#[tokio::test]
async fn a_bad_token_is_refused_even_where_none_is_needed() {
    let server = secured_server().await;
    assert_refused_everywhere(&server, "news:today", Some("not-a-token"), "invalid_token", 401).await;
}

#[tokio::test]
async fn an_authorization_header_of_another_scheme_is_an_invalid_token() {
    let server = secured_server().await;
    let r = server.get_with("/v1/channels/orders:1/messages", &[("Authorization", "Basic dTpw")]).await;
    assert_eq!((r.status, r.error_code()), (401, "invalid_token".to_string()));
    assert_eq!(r.header("WWW-Authenticate"), Some(r#"Bearer realm="herald", error="invalid_token""#));
}

#[tokio::test]
async fn the_error_says_why_without_echoing_the_token() {
    let server = secured_server().await;
    let token = tokens::hs256_with("another-secret-another-secret-another", &claims("u1", &["orders:*"]));
    let r = server.get(&format!("/v1/channels/orders:1/messages?token={token}")).await;
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("signature") && !message.contains(&token), "{message}");
}

/// The answer of a refused WebSocket handshake is an ordinary JSON error.
#[tokio::test]
async fn a_refused_websocket_handshake_answers_json() {
    let server = secured_server().await;
    let r = server.ws_with("/v1/ws?token=nope", &[]).await.err().unwrap();
    assert_eq!(r.status, 401);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "invalid_token");
}

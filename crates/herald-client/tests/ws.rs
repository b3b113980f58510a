//! The WebSocket transport against a scripted server: subscribe frames, waiting for `subscribed`, resets,
//! the merged cursor, refusals and close codes.

#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod fake;

use fake::{cursor, cursor_of, envelope, ws_server, WsStep};
use herald_client::{Client, ClientError, Event, SubscribeOptions, Transport};
use serde_json::{json, Value};

fn message_frame(channel: &str, offset: u64) -> String {
    format!(r#"{{"op":"message",{}"#, &envelope(channel, offset, "{}")[1..])
}

#[tokio::test]
async fn subscribing_waits_for_every_channel_and_keeps_what_arrived_meanwhile_in_order() {
    let (url, server) = ws_server(
        2,
        vec![
            WsStep::Send(format!(
                r#"{{"op":"subscribed","channel":"a","cursor":"{}","reset":false,"id":0}}"#,
                cursor("a", 0)
            )),
            WsStep::Send(message_frame("a", 1)),
            WsStep::Send(format!(
                r#"{{"op":"subscribed","channel":"b","cursor":"{}","reset":true,"id":1}}"#,
                cursor("b", 4)
            )),
            WsStep::Send(message_frame("b", 5)),
            WsStep::Send(format!(r#"{{"op":"reset","channel":"a","cursor":"{}"}}"#, cursor("a", 7))),
            WsStep::Send(r#"{"op":"pong"}"#.into()),
            WsStep::Send(message_frame("a", 8)),
            WsStep::Close(4001, "slow consumer"),
        ],
    )
    .await;

    let options = SubscribeOptions::new(["a", "b", "a"], Transport::WebSocket).since("AQA").last(2);
    let mut sub = Client::new(&url).unwrap().subscribe(options).await.unwrap();
    assert_eq!(sub.cursor(), cursor_of(&[("a", 0), ("b", 4)]), "both start positions, nothing returned yet");

    assert!(matches!(sub.next().await.unwrap().unwrap(), Event::Message(m) if m.channel == "a" && m.offset == 1));
    assert_eq!(sub.cursor(), cursor_of(&[("a", 1), ("b", 4)]));
    assert_eq!(sub.next().await.unwrap().unwrap(), Event::Reset { channels: vec!["b".into()] });
    assert!(matches!(sub.next().await.unwrap().unwrap(), Event::Message(m) if m.channel == "b" && m.offset == 5));
    assert_eq!(sub.next().await.unwrap().unwrap(), Event::Reset { channels: vec!["a".into()] });
    assert_eq!(sub.cursor(), cursor_of(&[("a", 7), ("b", 5)]));
    assert!(matches!(sub.next().await.unwrap().unwrap(), Event::Message(m) if m.offset == 8));
    match sub.next().await {
        Some(Err(ClientError::Closed { code, reason })) => {
            assert_eq!((code, reason.as_str()), (Some(4001), "slow consumer"))
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(sub.next().await.is_none());
    drop(sub);

    let frames: Vec<Value> = server.await.unwrap().iter().map(|f| serde_json::from_str(f).unwrap()).collect();
    assert_eq!(
        frames,
        [
            json!({"op":"subscribe","channel":"a","since":"AQA","last":2,"id":0}),
            json!({"op":"subscribe","channel":"b","since":"AQA","last":2,"id":1}),
        ],
        "a repeated channel is subscribed once"
    );
}

#[tokio::test]
async fn an_error_frame_answering_a_subscribe_is_a_refusal() {
    let (url, _server) = ws_server(
        1,
        vec![WsStep::Send(
            r#"{"op":"error","id":0,"code":"invalid_cursor","message":"cursor is not base64url text"}"#.into(),
        )],
    )
    .await;
    let options = SubscribeOptions::new(["a"], Transport::WebSocket).since("!!");
    let err = Client::new(&url).unwrap().subscribe(options).await.unwrap_err();
    assert!(matches!(err, ClientError::Refused { ref code, .. } if code == "invalid_cursor"), "{err:?}");
}

#[tokio::test]
async fn a_refusal_before_the_upgrade_is_an_api_error() {
    let body = r#"{"error":{"code":"transport_disabled","message":"ws is disabled"}}"#;
    let (url, _server) = fake::http_server(vec![vec![fake::answer("404 Not Found", "application/json", body)]]).await;
    let err =
        Client::new(&url).unwrap().subscribe(SubscribeOptions::new(["a"], Transport::WebSocket)).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, ref code, .. } if code == "transport_disabled"), "{err:?}");
}

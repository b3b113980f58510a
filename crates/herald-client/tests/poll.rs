//! Long and short polling against a scripted server: the requests the loop makes, and the cursor while an
//! answer is handed out message by message.

#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod fake;

use std::time::Duration;

use fake::{answer, cursor_of, envelope, http_server};
use herald_client::{Client, ClientError, Event, SubscribeOptions, Transport};

fn poll_answer(messages: &[String], cursor: &str, reset_channels: &[&str]) -> Vec<Vec<u8>> {
    let body = serde_json::json!({
        "messages": messages.iter().map(|m| serde_json::from_str::<serde_json::Value>(m).unwrap()).collect::<Vec<_>>(),
        "cursor": cursor,
        "reset": !reset_channels.is_empty(),
        "reset_channels": reset_channels,
    });
    vec![answer("200 OK", "application/json", &body.to_string())]
}

fn request_line(request: &str) -> &str {
    request.lines().next().unwrap()
}

#[tokio::test]
async fn long_polling_starts_from_latest_then_waits_with_each_answers_cursor() {
    let c0 = cursor_of(&[("a", 3), ("b", 5)]);
    let c1 = cursor_of(&[("a", 4), ("b", 6)]);
    let (url, server) = http_server(vec![
        poll_answer(&[], &c0, &[]),
        poll_answer(&[envelope("a", 4, "1"), envelope("b", 6, "2")], &c1, &[]),
    ])
    .await;

    let mut sub =
        Client::new(&url).unwrap().subscribe(SubscribeOptions::new(["a", "b"], Transport::LongPoll)).await.unwrap();
    assert_eq!(sub.cursor(), c0);

    let Event::Message(first) = sub.next().await.unwrap().unwrap() else { panic!("not a message") };
    assert_eq!((first.channel.as_str(), first.offset), ("a", 4));
    assert_eq!(sub.cursor(), cursor_of(&[("a", 4), ("b", 5)]), "after a#4 only, b is still at 5");
    sub.next().await.unwrap().unwrap();
    assert_eq!(sub.cursor(), c1);
    assert!(matches!(sub.next().await, Some(Err(ClientError::Io(_) | ClientError::Http(_)))), "the server is gone");
    assert!(sub.next().await.is_none(), "an error ends the subscription");

    let requests = server.await.unwrap();
    assert_eq!(request_line(&requests[0]), "GET /v1/poll?channel=a&channel=b&since=latest&limit=1000 HTTP/1.1");
    assert_eq!(
        request_line(&requests[1]),
        format!("GET /v1/poll?channel=a&channel=b&since={c0}&limit=1000&wait=30 HTTP/1.1")
    );
}

#[tokio::test]
async fn short_polling_replays_last_then_polls_without_waiting_and_reports_resets_first() {
    let c0 = cursor_of(&[("a", 2)]);
    let c1 = cursor_of(&[("a", 9)]);
    let (url, server) = http_server(vec![
        poll_answer(&[envelope("a", 2, "1")], &c0, &[]),
        poll_answer(&[envelope("a", 9, "1")], &c1, &["a"]),
    ])
    .await;

    let options = SubscribeOptions::new(["a"], Transport::Poll { interval: Duration::from_millis(10) }).last(1);
    let mut sub = Client::new(&url).unwrap().subscribe(options).await.unwrap();
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(sub.next().await.unwrap().unwrap());
    }

    assert!(matches!(&events[0], Event::Message(m) if m.offset == 2));
    assert_eq!(events[1], Event::Reset { channels: vec!["a".into()] });
    assert!(matches!(&events[2], Event::Message(m) if m.offset == 9));
    let requests = server.await.unwrap();
    assert_eq!(request_line(&requests[0]), "GET /v1/poll?channel=a&last=1&limit=1000 HTTP/1.1");
    assert_eq!(request_line(&requests[1]), format!("GET /v1/poll?channel=a&since={c0}&limit=1000 HTTP/1.1"));
}

#[tokio::test]
async fn a_refused_poll_is_an_api_error() {
    let body = r#"{"error":{"code":"invalid_cursor","message":"cursor is not base64url text"}}"#;
    let (url, _server) = http_server(vec![vec![answer("400 Bad Request", "application/json", body)]]).await;
    let options = SubscribeOptions::new(["a"], Transport::LongPoll).since("!!");
    let err = Client::new(&url).unwrap().subscribe(options).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 400, ref code, .. } if code == "invalid_cursor"), "{err:?}");
}

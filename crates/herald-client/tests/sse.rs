//! The SSE transport against a scripted stream: opening, incremental parsing, resets, the cursor after
//! every event, and the end of the stream.

#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod fake;

use fake::{cursor, cursor_of, envelope, http_server};
use herald_client::{Client, ClientError, Event, SubscribeOptions, Transport};

const HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n";

fn offsets(events: &[Event]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some((m.channel.clone(), m.offset)),
            Event::Reset { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn a_stream_yields_envelopes_and_resets_and_the_cursor_follows_each_event() {
    let start = cursor_of(&[("a", 0), ("b", 0)]);
    let after_a1 = cursor_of(&[("a", 1), ("b", 0)]);
    let after_b1 = cursor_of(&[("a", 1), ("b", 1)]);
    let stream = format!(
        "retry: 2000\nid: {start}\n\n: ping\n\nid: {after_a1}\ndata: {}\n\nevent: herald.reset\ndata: {{\"channels\":[\"b\"]}}\n\nid: {after_b1}\ndata: {}\n\n",
        envelope("a", 1, r#"{"x":1}"#),
        envelope("b", 1, "null"),
    );
    // Split in the middle of lines and of a CRLF-free stream, as a network may.
    let bytes = stream.into_bytes();
    let chunks = vec![HEAD.as_bytes().to_vec(), bytes[..30].to_vec(), bytes[30..101].to_vec(), bytes[101..].to_vec()];
    let (url, server) = http_server(vec![chunks]).await;

    let options = SubscribeOptions::new(["a", "b"], Transport::Sse).last(1);
    let mut sub = Client::new(&url).unwrap().subscribe(options).await.unwrap();
    assert_eq!(sub.cursor(), start);

    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(offsets(&[first]), [("a".to_string(), 1)]);
    assert_eq!(sub.cursor(), after_a1);
    assert_eq!(sub.next().await.unwrap().unwrap(), Event::Reset { channels: vec!["b".into()] });
    let third = sub.next().await.unwrap().unwrap();
    assert_eq!(offsets(&[third]), [("b".to_string(), 1)]);
    assert_eq!(sub.cursor(), after_b1);
    assert!(sub.next().await.is_none(), "the stream ended");
    assert!(sub.next().await.is_none(), "and stays ended");

    let request = server.await.unwrap().remove(0);
    assert!(request.starts_with("GET /v1/sse?channel=a&channel=b&last=1&envelope=true HTTP/1.1\r\n"), "{request}");
}

#[tokio::test]
async fn several_events_in_one_chunk_still_give_an_exact_cursor_after_each() {
    let stream = format!(
        "id: {}\n\nid: {}\ndata: {}\n\nid: {}\ndata: {}\n\n",
        cursor("a", 0),
        cursor("a", 1),
        envelope("a", 1, "1"),
        cursor("a", 2),
        envelope("a", 2, "2"),
    );
    let (url, _server) = http_server(vec![vec![HEAD.as_bytes().to_vec(), stream.into_bytes()]]).await;
    let mut sub = Client::new(&url).unwrap().subscribe(SubscribeOptions::new(["a"], Transport::Sse)).await.unwrap();

    sub.next().await.unwrap().unwrap();
    assert_eq!(sub.cursor(), cursor("a", 1));
    sub.next().await.unwrap().unwrap();
    assert_eq!(sub.cursor(), cursor("a", 2));
}

#[tokio::test]
async fn an_error_before_the_stream_is_an_api_error() {
    let body = r#"{"error":{"code":"too_many_channels","message":"at most 100"}}"#;
    let (url, _server) = http_server(vec![vec![fake::answer("400 Bad Request", "application/json", body)]]).await;
    let err = Client::new(&url).unwrap().subscribe(SubscribeOptions::new(["a"], Transport::Sse)).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 400, ref code, .. } if code == "too_many_channels"), "{err:?}");
}

#[tokio::test]
async fn a_stream_that_does_not_open_with_an_id_is_refused() {
    let (url, _server) = http_server(vec![vec![HEAD.as_bytes().to_vec(), b"retry: 2000\n\n".to_vec()]]).await;
    let err = Client::new(&url).unwrap().subscribe(SubscribeOptions::new(["a"], Transport::Sse)).await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
}

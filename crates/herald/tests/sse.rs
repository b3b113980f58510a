//! `GET /v1/sse`: the stream's headers and bytes, where it starts (`Last-Event-ID`, `since`, `last`), resets,
//! heartbeats, slow consumers, and the JSON errors answered before a stream starts. Every case about what a
//! client sees runs on both of the server's SSE writers (see `on_both_paths!`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, position, spawn, start, Event, Sse, TestServer, PATIENCE};
use herald_proto::Position;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs each case as two tests: `direct::case`, the stream written straight to the socket (a browser's
/// `EventSource`), and `hyper::case`, the same stream served by hyper (a request head longer than the direct path
/// takes). Both writers must behave the same in everything a client can see.
macro_rules! on_both_paths {
    ($(#[$runtime:meta] $($case:ident),* $(,)?);* $(;)?) => {
        mod direct {
            $($(#[$runtime]
            async fn $case() {
                super::$case().await;
            })*)*
        }
        mod hyper {
            $($(#[$runtime]
            async fn $case() {
                super::common::sse_via_hyper();
                super::$case().await;
            })*)*
        }
    };
}

on_both_paths!(
    #[tokio::test]
    the_stream_is_an_uncached_unbuffered_event_stream,
    the_stream_opens_with_retry_and_the_id_of_its_start_without_data,
    the_retry_delay_is_sse_retry_ms,
    a_message_is_its_cursor_its_event_and_its_data,
    with_envelope_true_the_data_is_the_envelope_and_there_is_no_event_line,
    with_several_channels_every_id_is_a_cursor_over_all_of_them,
    last_event_id_resumes_exactly_after_the_last_message_seen,
    last_event_id_wins_over_since,
    since_starts_after_the_cursor,
    a_cursor_wins_over_last,
    last_n_replays_the_newest_n_messages,
    without_since_last_event_id_or_last_only_new_messages_come,
    the_opening_id_alone_resumes_without_a_gap,
    the_opening_id_of_a_channel_that_never_had_a_message_resumes_from_its_first,
    a_position_older_than_the_history_gets_herald_reset_then_what_is_retained,
    a_stream_too_slow_for_its_queue_ends_and_is_counted,
    a_slow_stream_does_not_hold_up_publishing_or_lose_history,
    a_slow_stream_resumes_from_its_last_id_without_a_gap,
    more_channels_than_max_channels_per_request_are_refused,
    a_subscriber_that_goes_away_is_forgotten_at_once_not_at_the_next_heartbeat;
    #[tokio::test(start_paused = true)]
    an_idle_stream_gets_a_ping_comment_every_heartbeat;
);

/// The `n` of an event published as `{"n": …}`.
fn n(event: &Event) -> u64 {
    event.json()["n"].as_u64().unwrap_or_else(|| panic!("no n in {event:?}"))
}

/// The `n` of the next `count` events.
async fn next_numbers(sse: &mut Sse, count: usize) -> Vec<u64> {
    let mut numbers = Vec::with_capacity(count);
    for _ in 0..count {
        numbers.push(n(&sse.next_data().await));
    }
    numbers
}

/// Publishes `{"n": next}` and asserts it is the next event: nothing was left over, nothing comes twice.
async fn assert_caught_up(server: &TestServer, sse: &mut Sse, channel: &str, next: u64) {
    server.publish(channel, "tick", json!({ "n": next })).await;
    assert_eq!(n(&sse.next_data().await), next, "the next event is the one just published");
}

fn cursor(answer: &serde_json::Value) -> &str {
    answer["cursor"].as_str().unwrap()
}

async fn the_stream_is_an_uncached_unbuffered_event_stream() {
    let server = start().await;
    let sse = server.sse("channel=a", &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(sse.header("Cache-Control"), Some("no-cache"));
    assert_eq!(sse.header("X-Accel-Buffering"), Some("no"));
}

async fn the_stream_opens_with_retry_and_the_id_of_its_start_without_data() {
    let server = start().await;
    let published = server.publish_n("a", 2).await;
    let mut sse = server.sse("channel=a", &[]).await;
    let preamble = sse.next().await.unwrap();
    let expected = Event { retry: Some("2000".into()), id: preamble.id.clone(), ..Event::default() };
    assert_eq!(preamble, expected, "a retry and an id, no data");
    let start = position(preamble.id.as_deref().unwrap(), "a");
    assert_eq!(start, position(cursor(&published[1]), "a"), "the stream starts after the newest message");
}

async fn the_retry_delay_is_sse_retry_ms() {
    let mut config = config();
    config.sse_retry_ms = 750;
    let server = spawn(config).await;
    let mut sse = server.sse("channel=a", &[]).await;
    assert_eq!(sse.next().await.unwrap().retry.as_deref(), Some("750"));
}

async fn a_message_is_its_cursor_its_event_and_its_data() {
    let server = start().await;
    let mut sse = server.sse("channel=dashboard", &[]).await;
    sse.next().await.unwrap();
    let published = server.publish("dashboard", "newTopSeller", json!({ "top_seller": "Hassan" })).await;
    let expected = Event {
        id: Some(cursor(&published).to_string()),
        event: Some("newTopSeller".into()),
        data: Some(r#"{"top_seller":"Hassan"}"#.into()),
        ..Event::default()
    };
    assert_eq!(sse.next().await.unwrap(), expected);
}

async fn with_envelope_true_the_data_is_the_envelope_and_there_is_no_event_line() {
    let server = start().await;
    let mut sse = server.sse("channel=a&envelope=true", &[]).await;
    sse.next().await.unwrap();
    server.publish("a", "newTopSeller", json!({ "top_seller": "Hassan" })).await;
    let event = sse.next().await.unwrap();
    let stored = server.get("/v1/channels/a/messages").await.json()["messages"][0].clone();
    assert_eq!(event.event, None);
    assert_eq!(event.json(), stored);
    assert_eq!(event.id.as_deref(), stored["cursor"].as_str());
}

async fn with_several_channels_every_id_is_a_cursor_over_all_of_them() {
    let server = start().await;
    let b_before = server.publish("b", "tick", json!(0)).await;
    let mut sse = server.sse("channel=a&channel=b", &[]).await;
    sse.next().await.unwrap();
    let a1 = server.publish("a", "tick", json!(1)).await;
    let b1 = server.publish("b", "tick", json!(2)).await;

    let first = sse.next_data().await;
    let first = first.id.as_deref().unwrap();
    assert_eq!(position(first, "a"), position(cursor(&a1), "a"));
    assert_eq!(position(first, "b"), position(cursor(&b_before), "b"), "b where the stream started");

    let second = sse.next_data().await;
    let second = second.id.as_deref().unwrap();
    assert_eq!(position(second, "a"), position(cursor(&a1), "a"), "a where its last message left it");
    assert_eq!(position(second, "b"), position(cursor(&b1), "b"));
}

async fn last_event_id_resumes_exactly_after_the_last_message_seen() {
    let server = start().await;
    server.publish_n("a", 5).await;
    let mut first = server.sse("channel=a&last=5", &[]).await;
    assert_eq!(n(&first.next_data().await), 1);
    let seen = first.next_data().await;
    assert_eq!(n(&seen), 2);
    drop(first);

    // A browser reconnects to the same URL, with the id of the last event it dispatched.
    let mut again = server.sse("channel=a&last=5", &[("Last-Event-ID", seen.id.as_deref().unwrap())]).await;
    assert_eq!(next_numbers(&mut again, 3).await, [3, 4, 5]);
    assert_caught_up(&server, &mut again, "a", 6).await;
}

async fn last_event_id_wins_over_since() {
    let server = start().await;
    let published = server.publish_n("a", 5).await;
    let query = format!("channel=a&since={}", cursor(&published[0]));
    let mut sse = server.sse(&query, &[("Last-Event-ID", cursor(&published[2]))]).await;
    assert_eq!(next_numbers(&mut sse, 2).await, [4, 5]);
    assert_caught_up(&server, &mut sse, "a", 6).await;
}

async fn since_starts_after_the_cursor() {
    let server = start().await;
    let published = server.publish_n("a", 5).await;
    let mut sse = server.sse(&format!("channel=a&since={}", cursor(&published[1])), &[]).await;
    assert_eq!(next_numbers(&mut sse, 3).await, [3, 4, 5]);
    assert_caught_up(&server, &mut sse, "a", 6).await;
}

async fn a_cursor_wins_over_last() {
    let server = start().await;
    let published = server.publish_n("a", 5).await;
    let mut sse = server.sse(&format!("channel=a&last=3&since={}", cursor(&published[3])), &[]).await;
    assert_eq!(next_numbers(&mut sse, 1).await, [5]);
    assert_caught_up(&server, &mut sse, "a", 6).await;
}

async fn last_n_replays_the_newest_n_messages() {
    let server = start().await;
    server.publish_n("a", 5).await;
    let mut sse = server.sse("channel=a&last=2", &[]).await;
    assert_eq!(next_numbers(&mut sse, 2).await, [4, 5]);
    assert_caught_up(&server, &mut sse, "a", 6).await;
}

async fn without_since_last_event_id_or_last_only_new_messages_come() {
    let server = start().await;
    server.publish_n("a", 3).await;
    let mut sse = server.sse("channel=a", &[]).await;
    assert_caught_up(&server, &mut sse, "a", 4).await;
}

async fn the_opening_id_alone_resumes_without_a_gap() {
    let server = start().await;
    server.publish_n("a", 2).await;
    let mut first = server.sse("channel=a", &[]).await;
    let opening = first.next().await.unwrap().id.unwrap();
    drop(first);
    server.publish("a", "tick", json!({ "n": 3 })).await;

    let mut again = server.sse("channel=a", &[("Last-Event-ID", &opening)]).await;
    assert_eq!(next_numbers(&mut again, 1).await, [3]);
    assert_caught_up(&server, &mut again, "a", 4).await;
}

async fn the_opening_id_of_a_channel_that_never_had_a_message_resumes_from_its_first() {
    let server = start().await;
    let mut first = server.sse("channel=a", &[]).await;
    let opening = first.next().await.unwrap().id.unwrap();
    assert_eq!(position(&opening, "a"), Position::default());
    drop(first);
    server.publish_n("a", 2).await;

    let mut again = server.sse("channel=a", &[("Last-Event-ID", &opening)]).await;
    assert_eq!(next_numbers(&mut again, 2).await, [1, 2]);
    assert_caught_up(&server, &mut again, "a", 3).await;
}

async fn a_position_older_than_the_history_gets_herald_reset_then_what_is_retained() {
    let mut config = config();
    config.default_namespace.history_size = 2;
    let server = spawn(config).await;
    let published = server.publish_n("a", 5).await;
    let mut sse = server.sse(&format!("channel=a&since={}", cursor(&published[0])), &[]).await;
    let opening = sse.next().await.unwrap();
    let reset = Event {
        retry: Some("2000".into()),
        id: opening.id.clone(),
        event: Some("herald.reset".into()),
        data: Some(r#"{"channels":["a"]}"#.into()),
        ..Event::default()
    };
    assert_eq!(opening, reset, "the reset is in the opening block, with the id of the position after it");
    assert_eq!(position(opening.id.as_deref().unwrap(), "a"), position(cursor(&published[2]), "a"));
    assert_eq!(next_numbers(&mut sse, 2).await, [4, 5]);
    assert_caught_up(&server, &mut sse, "a", 6).await;
}

async fn an_idle_stream_gets_a_ping_comment_every_heartbeat() {
    let server = start().await;
    let mut sse = server.sse("channel=a", &[]).await;
    sse.next().await.unwrap();
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(sse.next().await.unwrap(), Event { comment: Some("ping".into()), ..Event::default() });
}

/// A stream subscribed with a queue of 2, then 50 messages published while its task cannot run.
async fn overflowed_stream() -> (TestServer, Sse) {
    let mut config = config();
    config.connection_queue = 2;
    // The burst overflows the queue only when it goes through it: with direct writes the socket takes it all.
    // (tests/direct_writes.rs overflows a stream that writes directly by not reading it.)
    config.direct_writes = false;
    let server = spawn(config).await;
    let sse = server.sse("channel=a", &[]).await;
    server.publish_burst("a", 50).await;
    (server, sse)
}

async fn a_stream_too_slow_for_its_queue_ends_and_is_counted() {
    let (server, mut sse) = overflowed_stream().await;
    while sse.next().await.is_some() {}
    assert_eq!(server.metric(r#"herald_slow_consumer_disconnects_total{transport="sse"}"#).await, 1);
}

async fn a_slow_stream_does_not_hold_up_publishing_or_lose_history() {
    let (server, _sse) = overflowed_stream().await;
    let history = server.get("/v1/channels/a/messages").await.json();
    assert_eq!(history["messages"].as_array().unwrap().len(), 50);
}

async fn a_slow_stream_resumes_from_its_last_id_without_a_gap() {
    let (server, mut sse) = overflowed_stream().await;
    let mut last_id = None;
    let mut seen = Vec::new();
    while let Some(event) = sse.next().await {
        if event.data.is_some() {
            seen.push(n(&event));
        }
        last_id = event.id.or(last_id);
    }
    let mut again = server.sse("channel=a", &[("Last-Event-ID", &last_id.unwrap())]).await;
    let rest = next_numbers(&mut again, 50 - seen.len()).await;
    assert_eq!(seen.into_iter().chain(rest).collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>());
}

/// The JSON error a request is refused with, before any stream starts.
async fn refusal(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let r = server.get_with(&format!("/v1/sse?{query}"), headers).await;
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{}", r.text());
    (r.status, r.error_code())
}

#[tokio::test]
async fn a_stream_without_a_channel_is_refused() {
    let server = start().await;
    assert_eq!(refusal(&server, "", &[]).await, (400, "invalid_parameter".into()));
}

#[tokio::test]
async fn an_invalid_channel_name_is_refused() {
    let server = start().await;
    assert_eq!(refusal(&server, "channel=a%20b", &[]).await, (400, "invalid_channel".into()));
}

#[tokio::test]
async fn an_unreadable_since_is_refused() {
    let server = start().await;
    assert_eq!(refusal(&server, "channel=a&since=%21%21", &[]).await, (400, "invalid_cursor".into()));
}

#[tokio::test]
async fn an_unreadable_last_event_id_is_refused() {
    let server = start().await;
    assert_eq!(refusal(&server, "channel=a", &[("Last-Event-ID", "!!")]).await, (400, "invalid_cursor".into()));
}

#[tokio::test]
async fn a_last_event_id_naming_more_channels_than_a_request_may_is_refused_unread() {
    let mut config = config();
    config.max_channels_per_request = 2;
    let server = spawn(config).await;
    let names = ["a", "b", "c"].map(|n| herald_proto::ChannelName::new(n).unwrap());
    let cursor: herald_proto::Cursor = names.into_iter().map(|c| (c, Position::new(1, 1))).collect();
    let id = cursor.encode();
    assert_eq!(refusal(&server, "channel=a", &[("Last-Event-ID", &id)]).await, (400, "invalid_cursor".into()));
}

async fn more_channels_than_max_channels_per_request_are_refused() {
    let mut config = config();
    config.max_channels_per_request = 2;
    let server = spawn(config).await;
    assert_eq!(server.sse("channel=a&channel=b", &[]).await.status, 200);
    assert_eq!(refusal(&server, "channel=a&channel=b&channel=c", &[]).await, (400, "too_many_channels".into()));
}

/// Reads from `stream` until `buffer` holds `needle`; panics after `PATIENCE`.
async fn read_until(stream: &mut TcpStream, buffer: &mut Vec<u8>, needle: &str) {
    tokio::time::timeout(PATIENCE, async {
        while !String::from_utf8_lossy(buffer).contains(needle) {
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before {needle:?} in {:?}", String::from_utf8_lossy(buffer));
            buffer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(buffer)));
}

async fn a_subscriber_that_goes_away_is_forgotten_at_once_not_at_the_next_heartbeat() {
    let server = start().await;
    let sse = server.sse("channel=a", &[]).await;
    server.until_metric(r#"herald_connections{transport="sse"}"#, 1).await;
    drop(sse);
    // The heartbeat (15 s) is longer than the test's patience (10 s): only reading the socket notices.
    server.until_metric(r#"herald_connections{transport="sse"}"#, 0).await;
}

#[tokio::test]
async fn an_http11_stream_is_delimited_by_the_close_of_its_connection() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /v1/sse?channel=a HTTP/1.1\r\nHost: herald.test\r\n\r\n").await.unwrap();
    let mut buffer = Vec::new();
    read_until(&mut stream, &mut buffer, "retry: ").await;
    let head = String::from_utf8_lossy(&buffer).to_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n") && head.contains("\r\ndate: "), "{head}");
    assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "{head}");
    server.publish("a", "tick", json!({ "n": 1 })).await;
    read_until(&mut stream, &mut buffer, "data: {\"n\":1}\n\n").await;
}

#[tokio::test]
async fn a_stream_after_other_requests_on_a_kept_alive_connection_works_the_same() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut buffer = Vec::new();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald.test\r\n\r\n").await.unwrap();
    read_until(&mut stream, &mut buffer, "\"ok\"").await;
    buffer.clear();
    stream.write_all(b"GET /v1/sse?channel=a HTTP/1.1\r\nHost: herald.test\r\n\r\n").await.unwrap();
    read_until(&mut stream, &mut buffer, "retry: ").await;
    server.publish("a", "tick", json!({ "n": 1 })).await;
    read_until(&mut stream, &mut buffer, "data: {\"n\":1}\n\n").await;
}

#[tokio::test]
async fn a_refused_stream_is_a_whole_json_answer_and_the_connection_closes() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /v1/sse?channel=a%20b HTTP/1.1\r\nHost: herald.test\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer)).await.expect("closed").unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert!(head.contains(&format!("content-length: {}\r\n", body.len())), "{head}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(body).unwrap()["error"]["code"], "invalid_channel");
}

/// Publishes `count` 60 KB messages on `a` (400 are more than loopback's socket buffers hold) while the
/// streams' tasks can run between them: their writes block on subscribers that read nothing.
async fn publish_large(server: &TestServer, count: usize) {
    let data = bytes::Bytes::from(format!("\"{}\"", "x".repeat(60_000)));
    let channel = herald_proto::ChannelName::new("a").unwrap();
    for _ in 0..count {
        server.hub.publish(channel.clone(), herald_proto::EventName::default_event(), data.clone()).await.unwrap();
        tokio::task::yield_now().await;
    }
}

/// Opens a stream of `a` whose request head is longer than the server looks at before choosing its path, so
/// hyper serves it, and reads its opening.
async fn stream_served_by_hyper(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let padding = "p".repeat(5000);
    let head = format!("GET /v1/sse?channel=a HTTP/1.1\r\nHost: herald.test\r\nX-Padding: {padding}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    read_until(&mut stream, &mut Vec::new(), "retry: ").await;
    stream
}

/// A server whose streams may queue 4 messages.
async fn small_queue_server() -> TestServer {
    let mut config = config();
    config.connection_queue = 4;
    spawn(config).await
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_disconnected_once_its_queue_overflows() {
    let server = small_queue_server().await;
    let stalled = server.sse("channel=a", &[]).await;
    server.until_metric(r#"herald_connections{transport="sse"}"#, 1).await;
    // The queue (4) overflows behind the blocked writes.
    publish_large(&server, 400).await;
    server.until_metric(r#"herald_slow_consumer_disconnects_total{transport="sse"}"#, 1).await;
    // Not held forever by a write the peer will never take.
    server.until_metric(r#"herald_connections{transport="sse"}"#, 0).await;
    // Reset, not closed: the server kept none of the bytes it could not send.
    let mut stream = stalled.into_stream();
    let end = tokio::time::timeout(PATIENCE, async {
        let mut chunk = vec![0; 1 << 16];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.kind()),
            }
        }
    })
    .await
    .expect("the connection ends");
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn a_stream_whose_head_came_in_pieces_is_disconnected_the_same_when_it_stops_reading() {
    let server = small_queue_server().await;
    let _stalled = stream_served_by_hyper(&server).await;
    publish_large(&server, 400).await;
    server.until_metric(r#"herald_slow_consumer_disconnects_total{transport="sse"}"#, 1).await;
    server.until_metric(r#"herald_connections{transport="sse"}"#, 0).await;
}

#[tokio::test]
async fn shutdown_does_not_wait_on_subscribers_that_stopped_reading_on_either_path() {
    let server = start().await;
    let _direct = server.sse("channel=a", &[]).await;
    let _pieces = stream_served_by_hyper(&server).await;
    // More than the sockets' buffers hold, far less than a queue (1,024): both writers are stuck, nobody is slow.
    publish_large(&server, 200).await;
    assert_eq!(server.metric(r#"herald_slow_consumer_disconnects_total{transport="sse"}"#).await, 0);
    assert!(server.stop().await, "drained at once, not after the grace period");
}

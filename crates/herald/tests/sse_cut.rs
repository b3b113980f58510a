//! No prefix of an SSE stream moves a client's position past a reset it was not told about. A stream that opens
//! with a reset is cut after every byte of its opening (its first kilobyte at most), on both of the server's SSE
//! paths, and resumed with the last event id a browser would have recorded (the bytes parsed by the
//! EventSource algorithm); the client must have been told of the reset by one of the two connections, and must
//! have received nothing twice.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, spawn, start, TestServer};
use herald_client::sse_parser::SseParser;
use serde_json::json;

/// How far into a stream the cuts go.
const FIRST_KILOBYTE: usize = 1024;

/// Which of the server's two SSE writers serves the stream.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// A one-piece head: written straight to the socket.
    Direct,
    /// A head longer than the server looks at before choosing: served by hyper.
    Hyper,
}

/// What a browser made of the bytes it got.
#[derive(Debug, Default)]
struct Seen {
    told_reset: bool,
    numbers: Vec<u64>,
    last_event_id: String,
}

fn browse(bytes: &[u8]) -> Seen {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.feed(bytes, &mut events).unwrap();
    let mut seen = Seen { last_event_id: parser.last_event_id().to_string(), ..Seen::default() };
    for event in events {
        match event.event.as_str() {
            "herald.reset" => seen.told_reset = true,
            _ => seen
                .numbers
                .push(serde_json::from_str::<serde_json::Value>(&event.data).unwrap()["n"].as_u64().unwrap()),
        }
    }
    seen
}

/// Opens a stream of `a` resuming from `last_event_id` on `path`, and reads its body until `enough`.
async fn body(server: &TestServer, path: Path, last_event_id: &str, enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    if let Path::Hyper = path {
        common::sse_via_hyper();
    }
    let mut sse = server.sse("channel=a", &[("Last-Event-ID", last_event_id)]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("Transfer-Encoding"), None, "the body is the stream, as the browser parses it");
    sse.body_until(enough).await.to_vec()
}

/// Whether a browser given `bytes` has seen the message `{"n": last}`.
fn delivered(last: u64) -> impl Fn(&[u8]) -> bool {
    move |bytes| browse(bytes).numbers.contains(&last)
}

/// Cuts the stream resuming from `stale` (a position the server can no longer honour) after every byte of its
/// opening, resumes each cut as a browser would, and checks what the client ends up knowing.
async fn assert_no_prefix_hides_the_reset(server: &TestServer, path: Path, stale: &str, last: u64) {
    let opening = body(server, path, stale, delivered(last)).await;
    assert!(browse(&opening).told_reset, "the scenario starts with a reset");
    for cut in 0..=opening.len().min(FIRST_KILOBYTE) {
        let first = browse(&body(server, path, stale, |b| b.len() >= cut).await[..cut]);
        let resume = if first.last_event_id.is_empty() { stale } else { &first.last_event_id };
        let second = match first.numbers.contains(&last) {
            true => Seen::default(),
            false => browse(&body(server, path, resume, delivered(last)).await),
        };
        assert!(
            first.told_reset || second.told_reset,
            "{path:?}: cut after {cut} bytes, the browser resumed from {resume} and was never told of the reset"
        );
        let mut numbers = first.numbers.clone();
        numbers.extend(&second.numbers);
        let mut unique = numbers.clone();
        unique.dedup();
        assert_eq!(numbers, unique, "{path:?}: cut after {cut} bytes, something came twice");
    }
}

/// Ten messages on a channel that keeps three, and the cursor of the second: offsets 3 to 7 are gone.
async fn fell_out_of_history(path: Path) {
    let mut config = config();
    config.default_namespace.history_size = 3;
    let server = spawn(config).await;
    let mut stale = String::new();
    for n in 1..=10 {
        let published = server.publish("a", "tick", json!({ "n": n })).await;
        if n == 2 {
            stale = published["cursor"].as_str().unwrap().to_string();
        }
    }
    assert_no_prefix_hides_the_reset(&server, path, &stale, 10).await;
}

/// A cursor from a node's previous life (a memory node that restarted: a new epoch).
async fn from_another_epoch(path: Path) {
    let old = start().await;
    let published = old.publish("a", "tick", json!({ "n": 1 })).await;
    old.stop().await;
    let server = start().await;
    for n in 1..=10 {
        server.publish("a", "tick", json!({ "n": n })).await;
    }
    assert_no_prefix_hides_the_reset(&server, path, published["cursor"].as_str().unwrap(), 10).await;
}

#[tokio::test]
async fn a_cut_opening_never_hides_a_reset_of_a_cursor_older_than_the_history_direct() {
    fell_out_of_history(Path::Direct).await;
}

#[tokio::test]
async fn a_cut_opening_never_hides_a_reset_of_a_cursor_older_than_the_history_hyper() {
    fell_out_of_history(Path::Hyper).await;
}

#[tokio::test]
async fn a_cut_opening_never_hides_a_reset_of_a_cursor_from_another_epoch_direct() {
    from_another_epoch(Path::Direct).await;
}

#[tokio::test]
async fn a_cut_opening_never_hides_a_reset_of_a_cursor_from_another_epoch_hyper() {
    from_another_epoch(Path::Hyper).await;
}

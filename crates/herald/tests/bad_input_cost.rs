//! One request of each costly shape, at the largest size the server reads, costs time linear in its
//! size and bounded by the limits: many channels in a poll, many cursors in `since`, many ETags in
//! `If-None-Match`. Each test measures the CPU time of its own thread, which runs both the server and the client
//! (a current-thread runtime), over a few requests, against a bound far under what quadratic parsing costs in a
//! debug build (seconds) and far over what linear parsing does (milliseconds). The release-build figures are
//! `benches/bad_input.rs`'s.

#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

mod common;
#[path = "common/costly.rs"]
mod costly;

use std::time::Duration;

use common::tokens::{self};
use common::{config, spawn, start, Client};

/// What one request of a shape may cost in a debug build, on average: linear parsing took 6 to 18 ms when this
/// was written, quadratic parsing 140 to 570 ms.
const BOUND: Duration = Duration::from_millis(60);
const REQUESTS: u32 = 5;

/// CPU time of this thread so far (user and system), from `/proc/thread-self/stat`, in clock ticks of 10 ms.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The fields after the command name (which may hold spaces) in parentheses; utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The average CPU time of one request to `path` with `headers`, each answered with `status`.
async fn cost(client: Client, path: &str, headers: &[(&str, &str)], status: u16) -> Duration {
    let before = thread_cpu();
    for _ in 0..REQUESTS {
        let r = client.get_with(path, headers).await;
        assert_eq!(r.status, status, "{}", r.text());
    }
    (thread_cpu() - before) / REQUESTS
}

#[tokio::test]
async fn a_poll_naming_as_many_channels_as_a_url_holds_is_refused_in_linear_time_before_its_token_is_read() {
    let server = spawn(tokens::secured()).await;
    let path = costly::many_channels("orders:");
    let spent = cost(server.client, &path, &[], 400).await;
    assert!(spent < BOUND, "{spent:?} a request");
}

#[tokio::test]
async fn since_cursors_of_more_channels_than_a_request_may_name_are_refused_in_linear_time() {
    let server = start().await;
    let r = server.get(&costly::many_cursors(1024)).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_cursor"));
    let spent = cost(server.client, &costly::many_cursors(1024), &[], 400).await;
    assert!(spent < BOUND, "{spent:?} a request");
}

#[tokio::test]
async fn as_many_since_cursors_as_a_url_holds_are_merged_in_linear_time() {
    let server = start().await;
    let max = config().max_channels_per_request;
    let spent = cost(server.client, &costly::many_cursors(max), &[], 200).await;
    assert!(spent < BOUND, "{spent:?} a request");
}

#[tokio::test]
async fn fifty_crafted_etags_are_read_in_linear_time() {
    let server = start().await;
    server.publish("a", "e", serde_json::json!(1)).await;
    let etags = costly::many_etags();
    let spent = cost(server.client, "/v1/channels/a/latest", &[("If-None-Match", &etags)], 200).await;
    assert!(spent < BOUND, "{spent:?} a request");
}

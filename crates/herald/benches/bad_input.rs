//! The costliest request of each shape an attacker can send before any credential is checked, at the largest size
//! the server accepts (a 65,534-byte URL, 400 KiB of headers), through the router as the server answers it:
//!
//! - `channels`: an anonymous `GET /v1/poll` naming as many distinct channels as the URL holds;
//! - `cursors_refused`: a public poll whose `since` cursors name 1,024 distinct channels each, as many as fit;
//! - `cursors_accepted`: the same with cursors of `max_channels_per_request` channels, the largest accepted;
//! - `etags`: `If-None-Match` with 50 crafted ETags of 1,024 channels each on a public `latest`.
//!
//! Each must cost well under a millisecond (docs/SECURITY.md, bad-input table). `cargo bench -p herald --bench
//! bad_input`; `cargo test` runs each case once, as a smoke test.

// criterion's macros generate undocumented items, and a failed unwrap here is a failed benchmark.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion};
use herald::http::AppState;
use herald::hub::Hub;
use herald::server::router;
use herald::shutdown::Shutdown;
use herald::Config;
use herald_proto::{ChannelName, EventName};
use tower::ServiceExt;

#[path = "../tests/common/costly.rs"]
mod costly;

fn cases() -> Vec<(&'static str, Request<()>, u16)> {
    let get = |uri: &str| Request::get(uri).body(()).unwrap();
    let max_channels = Config::default().max_channels_per_request;
    let etags = Request::get("/v1/channels/a/latest").header("if-none-match", costly::many_etags()).body(()).unwrap();
    vec![
        ("channels", get(&costly::many_channels("")), 400),
        ("cursors_refused", get(&costly::many_cursors(1024)), 400),
        ("cursors_accepted", get(&costly::many_cursors(max_channels)), 200),
        ("etags", etags, 200),
    ]
}

fn bad_input(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = Arc::new(Config::default());
    let start = Hub::new(config.clone(), |deliver, metrics| herald::engine::start(config, deliver, metrics));
    let hub = runtime.block_on(start).unwrap();
    runtime.block_on(hub.publish(ChannelName::new("a").unwrap(), EventName::new("e").unwrap(), "1".into())).unwrap();
    let pusher = herald::pusher::Pusher::new(hub.config());
    let app = router(AppState::new(hub, Shutdown::new()).unwrap(), pusher);
    let mut group = c.benchmark_group("bad_input");
    for (shape, request, status) in cases() {
        let (parts, ()) = request.into_parts();
        let request = move || Request::from_parts(parts.clone(), Body::empty());
        let answer = runtime.block_on(app.clone().oneshot(request())).unwrap();
        assert_eq!(answer.status().as_u16(), status, "{shape}");
        group.bench_function(shape, |b| {
            b.iter(|| black_box(runtime.block_on(app.clone().oneshot(request())).unwrap().status()));
        });
    }
    group.finish();
}

criterion_group!(benches, bad_input);
criterion_main!(benches);

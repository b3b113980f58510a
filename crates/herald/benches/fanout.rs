//! The hot path without sockets: one publish through the hub into every subscriber's queue, then each
//! subscription following its message (the tracker's judgement) and taking the shared WebSocket frame (or SSE
//! body), as a transport does before writing, then timing its delivery lag as a transport does once it wrote it. A
//! regression in fan-out shows here in seconds, without a full `bench/compare.sh`.
//!
//! `cargo bench -p herald --bench fanout`; `cargo test` runs each case once, as a smoke test.

// criterion's macros generate undocumented items, and a failed unwrap here is a failed benchmark.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald::hub::{Hub, Item, Start, Subscription};
use herald::metrics::{Lag, Transport};
use herald::Config;
use herald_proto::{ChannelName, EventName};

/// A 100-byte JSON payload, the size of the end-to-end scenarios.
const PAYLOAD: &[u8] =
    br#""0:0:1:1764297108123456:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx""#;

fn subscribed(runtime: &tokio::runtime::Runtime, hub: &Arc<Hub>, channel: &ChannelName, n: usize) -> Vec<Subscription> {
    runtime.block_on(async {
        let mut connections = Vec::with_capacity(n);
        for _ in 0..n {
            let mut connection = hub.subscription(Transport::WebSocket);
            connection.subscribe(channel, Start::Now, 0).await.unwrap();
            connections.push(connection);
        }
        connections
    })
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let channel = ChannelName::new("bench").unwrap();
    let event = EventName::new("message").unwrap();
    let data = Bytes::from_static(PAYLOAD);
    let mut group = c.benchmark_group("fanout");
    for subscribers in [1usize, 100, 10_000] {
        let config = Arc::new(Config::default());
        let start = Hub::new(config.clone(), |deliver, metrics| herald::engine::start(config, deliver, metrics));
        let hub = runtime.block_on(start).unwrap();
        let mut connections = subscribed(&runtime, &hub, &channel, subscribers);
        group.throughput(Throughput::Elements(subscribers as u64));
        for (format, sse) in [("ws", false), ("sse", true)] {
            group.bench_function(BenchmarkId::new(format!("publish_to_queues_{format}"), subscribers), |b| {
                let mut lag = Lag::default();
                b.iter(|| {
                    runtime.block_on(async {
                        hub.publish(channel.clone(), event.clone(), data.clone()).await.unwrap();
                        for connection in &mut connections {
                            let live = connection.recv().await;
                            let Some(Item::Message(message)) = connection.follow(live, 64).await.items.pop() else {
                                panic!("the message was not delivered");
                            };
                            match sse {
                                // As transport/ws.rs sends it: the shared bytes checked as UTF-8 text.
                                false => black_box(Utf8Bytes::try_from(message.ws_frame()).unwrap().len()),
                                true => black_box(message.sse_body(true).len()),
                            };
                            lag.push(message.stored_at);
                            lag.written(hub.metrics(), Transport::WebSocket);
                        }
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);

//! The scenarios Herald is compared with Nchan on (throughput, fan-out latency, memory, publishing), sized so
//! that `bench/compare.sh` runs all of them against both servers in about ten minutes on a 2-core machine that
//! also runs the load generator. Where a scenario is smaller than
//! the target it measures asks, its `cut` says how and why, and the report repeats it.

use serde::Serialize;

use crate::load::{LoadReport, LoadSpec, StepPlan};
use crate::spec::{Generator, Layout, Target, Transport};

/// Which way a scenario's headline figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Better {
    Higher,
    Lower,
}

/// Which servers a scenario compares: Herald's own API against Nchan (`bench/compare.sh`), the Pusher
/// Channels protocol, Herald's against Soketi's (`bench/pusher.sh`), or Herald's disk engine against its memory
/// engine (`bench/disk.sh`, which runs each against a Herald of each engine and divides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Family {
    Native,
    Pusher,
    Disk,
}

impl Family {
    /// The two targets the summary compares, Herald's first.
    pub(crate) fn pair(self) -> (Target, Target) {
        match self {
            Self::Native => (Target::Herald, Target::Nchan),
            Self::Pusher => (Target::HeraldPusher, Target::Soketi),
            // Both sides are Herald: bench/disk.sh names the result files by engine and makes its own table.
            Self::Disk => (Target::Herald, Target::Herald),
        }
    }
}

/// A named load and the figure it is judged by.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) family: Family,
    pub(crate) description: &'static str,
    /// How it is smaller than its target asks, if it is.
    pub(crate) cut: Option<&'static str>,
    pub(crate) metric: &'static str,
    pub(crate) better: Better,
    /// Also run against `herald-bench floor`, so its figure can be read as "× floor".
    pub(crate) floor: bool,
    build: fn(&mut LoadSpec),
    headline: fn(&LoadReport) -> Option<f64>,
}

/// A warm-up second at the first rate, then rising rates, 2.5 seconds each (a ramp stops at its first step
/// that does not hold).
fn ramp(rates: &[f64]) -> Vec<StepPlan> {
    let warmup = StepPlan { rate: Some(rates[0]), secs: 1.0 };
    std::iter::once(warmup).chain(rates.iter().map(|&r| StepPlan { rate: Some(r), secs: 2.5 })).collect()
}

fn peak_deliveries(report: &LoadReport) -> Option<f64> {
    report.peak_step().map(|s| s.deliveries_per_sec)
}

fn held_deliveries(report: &LoadReport) -> Option<f64> {
    report.best_step().map(|s| s.deliveries_per_sec)
}

fn rss_per_connection(report: &LoadReport) -> Option<f64> {
    report.memory.as_ref().map(|m| m.rss_per_connection_bytes / 1024.0)
}

fn publish_rate(report: &LoadReport) -> Option<f64> {
    report.steps.first().map(|s| s.publish_rate)
}

/// Microseconds of server CPU per delivery in the first judged step: the same rate asked of every server, so the
/// figure does not depend on how far each one would ramp. A server that falls behind the rate is still judged by
/// what it spent on what it delivered (its latency and "kept up" are in the report beside it).
fn cpu_per_delivery(report: &LoadReport) -> Option<f64> {
    let step = report.steps.iter().find(|s| !s.warmup)?;
    (step.deliveries_per_sec > 0.0).then(|| step.server_cpu / step.deliveries_per_sec * 1e6)
}

/// Four loads judged by server CPU per delivery at one fixed rate, the same 40,000 deliveries/s asked of
/// Herald, Nchan and the floor: the figure does not depend on how fast the load generator is.
const fn cpu(name: &'static str, description: &'static str, build: fn(&mut LoadSpec)) -> Scenario {
    Scenario {
        family: Family::Native,
        name,
        description,
        cut: None,
        metric: "µs of server CPU per delivery at 40,000 deliveries/s",
        better: Better::Lower,
        floor: true,
        build,
        headline: cpu_per_delivery,
    }
}

/// A second of warm-up, then `rate` for 5 s (500 clock ticks of CPU time to read, at most).
fn fixed(spec: &mut LoadSpec, transport: Transport, subscribers: u32, rate: f64) {
    spec.transport = transport;
    spec.subscribers = subscribers;
    spec.ramp = false;
    spec.steps = vec![StepPlan { rate: Some(rate), secs: 1.0 }, StepPlan { rate: Some(rate), secs: 5.0 }];
}

/// Every scenario, in the order they run.
pub(crate) const ALL: &[Scenario] = &[
    cpu("cpu-ws-2k", "2,000 WebSocket subscribers on one channel, 20 msg/s of 100 bytes", |s| {
        fixed(s, Transport::Ws, 2_000, 20.0)
    }),
    cpu("cpu-ws-10k", "10,000 WebSocket subscribers on one channel, 4 msg/s of 100 bytes", |s| {
        fixed(s, Transport::Ws, 10_000, 4.0)
    }),
    cpu("cpu-sse-2k", "2,000 SSE subscribers on one channel, 20 msg/s of 100 bytes", |s| {
        fixed(s, Transport::Sse, 2_000, 20.0)
    }),
    cpu("cpu-sse-10k", "10,000 SSE subscribers on one channel, 4 msg/s of 100 bytes", |s| {
        fixed(s, Transport::Sse, 10_000, 4.0)
    }),
    Scenario {
        family: Family::Native,
        name: "fanout-ws",
        description: "10,000 WebSocket subscribers on one channel, 100-byte messages at rising rates",
        cut: None,
        metric: "deliveries/s, highest rate kept up",
        better: Better::Higher,
        floor: false,
        build: |s| {
            s.transport = Transport::Ws;
            s.subscribers = 10_000;
            s.steps = ramp(&[2.0, 3.0, 4.0, 6.0, 8.0, 11.0, 16.0, 22.0, 32.0]);
        },
        headline: peak_deliveries,
    },
    Scenario {
        family: Family::Native,
        name: "fanout-sse",
        description: "10,000 SSE subscribers on one channel, 100-byte messages at rising rates",
        cut: None,
        metric: "deliveries/s, highest rate kept up",
        better: Better::Higher,
        floor: false,
        build: |s| {
            s.transport = Transport::Sse;
            s.subscribers = 10_000;
            s.steps = ramp(&[2.0, 3.0, 4.0, 6.0, 8.0, 11.0, 16.0, 22.0, 32.0]);
        },
        headline: peak_deliveries,
    },
    Scenario {
        family: Family::Native,
        name: "channels",
        description: "10,000 WebSocket subscribers each on its own channel, publishes spread evenly, rising rates",
        cut: None,
        metric: "deliveries/s, highest rate kept up",
        better: Better::Higher,
        floor: false,
        build: |s| {
            s.transport = Transport::Ws;
            s.subscribers = 10_000;
            s.layout = Layout::Each;
            s.publishers = 4;
            s.steps = ramp(&[1_000.0, 2_000.0, 3_000.0, 4_500.0, 6_500.0, 9_000.0, 13_000.0, 18_000.0]);
        },
        headline: peak_deliveries,
    },
    Scenario {
        family: Family::Native,
        name: "mixed",
        description: "15,000 WebSocket subscribers on 150 channels (Zipf), publishes spread evenly, rising rates up to 100,000 deliveries/s",
        cut: None,
        metric: "deliveries/s, highest rate held with p99 < 100 ms",
        better: Better::Higher,
        floor: false,
        build: |s| {
            // The latency target: 15,000 connections in one process, p99 < 100 ms at 100,000 deliveries/s.
            // About 100 subscribers per channel on average (the most popular about 2,700), so 1,000 msg/s is
            // about 100,000 deliveries/s.
            s.transport = Transport::Ws;
            s.subscribers = 15_000;
            s.layout = Layout::Zipf { channels: 150 };
            s.publishers = 4;
            s.steps = ramp(&[100.0, 250.0, 500.0, 750.0, 1_000.0, 1_250.0]);
        },
        headline: held_deliveries,
    },
    Scenario {
        family: Family::Native,
        name: "long-poll",
        description: "2,000 long-pollers on one channel, each re-polling (on a new connection) after every answer",
        cut: None,
        metric: "deliveries/s, highest rate kept up",
        better: Better::Higher,
        floor: false,
        build: |s| {
            s.transport = Transport::LongPoll;
            s.subscribers = 2_000;
            s.settle_secs = 2.0;
            s.steps = ramp(&[2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0]);
        },
        headline: peak_deliveries,
    },
    Scenario {
        family: Family::Native,
        name: "idle-ws",
        description: "15,000 WebSocket connections on one channel doing nothing but heartbeats for 20 s",
        cut: Some("20 s at rest instead of minutes, to fit the run in 10 minutes: one heartbeat round"),
        metric: "server RSS per connection, KiB",
        better: Better::Lower,
        floor: false,
        build: |s| {
            s.transport = Transport::Ws;
            s.subscribers = 15_000;
            s.settle_secs = 2.0;
            s.idle_secs = 20.0;
            s.steps = Vec::new();
        },
        headline: rss_per_connection,
    },
    Scenario {
        family: Family::Native,
        name: "idle-sse",
        description: "15,000 SSE connections on one channel doing nothing but heartbeats for 20 s",
        cut: Some("20 s at rest instead of minutes, to fit the run in 10 minutes: one heartbeat round"),
        metric: "server RSS per connection, KiB",
        better: Better::Lower,
        floor: false,
        build: |s| {
            s.transport = Transport::Sse;
            s.subscribers = 15_000;
            s.settle_secs = 2.0;
            s.idle_secs = 20.0;
            s.steps = Vec::new();
        },
        headline: rss_per_connection,
    },
    Scenario {
        family: Family::Native,
        name: "publish-alone",
        description: "HTTP publishes flat out for 5 s, 4 kept-alive connections, nobody subscribed",
        cut: None,
        metric: "acknowledged publishes/s",
        better: Better::Higher,
        floor: false,
        build: |s| publish_flat_out(s, 4),
        headline: publish_rate,
    },
    Scenario {
        family: Family::Native,
        name: "publish-1000",
        description: "HTTP publishes flat out for 5 s, 4 connections, spread over 1,000 channels with one WebSocket subscriber each",
        cut: None,
        metric: "acknowledged publishes/s",
        better: Better::Higher,
        floor: false,
        build: |s| {
            s.transport = Transport::Ws;
            s.subscribers = 1_000;
            s.layout = Layout::Each;
            s.publishers = 4;
            s.warmup = false;
            s.steps = vec![StepPlan { rate: None, secs: 5.0 }];
        },
        headline: publish_rate,
    },
    publish_disk("publish-disk-1", "HTTP publishes flat out for 5 s, 1 connection, 100 channels, nobody subscribed", |s| {
        publish_flat_out(s, 1)
    }),
    publish_disk("publish-disk-4", "HTTP publishes flat out for 5 s, 4 connections, 100 channels, nobody subscribed", |s| {
        publish_flat_out(s, 4)
    }),
    publish_disk(
        "publish-disk-32",
        "HTTP publishes flat out for 5 s, 32 connections, 100 channels, nobody subscribed",
        |s| publish_flat_out(s, 32),
    ),
    Scenario {
        family: Family::Pusher,
        name: "pusher-fanout",
        description: "5,000 pusher-js-style WebSocket subscribers on one public channel, signed POST /apps/{id}/events at 4 then 8 msg/s",
        cut: None,
        metric: "µs of server CPU per delivery at 4 msg/s (20,000 deliveries/s)",
        better: Better::Lower,
        floor: false,
        build: |s| {
            s.transport = Transport::Ws;
            s.subscribers = 5_000;
            s.steps = ramp(&[4.0, 8.0]);
            s.ramp = false;
            s.steps.iter_mut().skip(1).for_each(|step| step.secs = 5.0);
        },
        headline: cpu_per_delivery,
    },
    Scenario {
        family: Family::Pusher,
        name: "pusher-idle",
        description: "10,000 pusher-js-style WebSocket connections subscribed to one public channel, at rest for 10 s",
        cut: Some("10 s at rest: Pusher clients ping only after 120 s of silence, so nothing else happens in minutes"),
        metric: "server RSS per connection, KiB",
        better: Better::Lower,
        floor: false,
        build: |s| {
            s.transport = Transport::Ws;
            s.subscribers = 10_000;
            s.settle_secs = 2.0;
            s.idle_secs = 10.0;
            s.steps = Vec::new();
        },
        headline: rss_per_connection,
    },
];

/// A publish-disk scenario, to be run against a Herald on each engine and fsync policy (`bench/disk.sh`): the
/// disk engine's cost, and whether group commit lets `always` grow with concurrency.
const fn publish_disk(name: &'static str, description: &'static str, build: fn(&mut LoadSpec)) -> Scenario {
    Scenario {
        family: Family::Disk,
        name,
        description,
        cut: None,
        metric: "acknowledged publishes/s",
        better: Better::Higher,
        floor: false,
        build,
        headline: publish_rate,
    }
}

/// Publishing flat out with `publishers` connections for 5 s to 100 channels, nobody subscribed: `publish-alone`,
/// and the `publish-disk-*` family at 1, 4 and 32 publishers.
fn publish_flat_out(s: &mut LoadSpec, publishers: u32) {
    s.subscribers = 0;
    s.layout = Layout::Zipf { channels: 100 };
    s.publishers = publishers;
    s.warmup = false;
    s.steps = vec![StepPlan { rate: None, secs: 5.0 }];
}

/// The scenario called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

impl Scenario {
    /// The load of this scenario against `target`.
    pub(crate) fn spec(&self, target: Target, urls: &[String], server_pids: &[u32], generator: Generator) -> LoadSpec {
        let mut spec = LoadSpec {
            target,
            urls: urls.to_vec(),
            server_pids: server_pids.to_vec(),
            generator,
            transport: Transport::Ws,
            subscribers: 0,
            layout: Layout::One,
            payload_bytes: 100,
            publishers: 1,
            steps: Vec::new(),
            ramp: true,
            warmup: true,
            max_p99_ms: 100.0,
            drain_secs: 3.0,
            settle_secs: 1.0,
            idle_secs: 0.0,
            workers: 0,
            connect_concurrency: 256,
            poll_interval_ms: 1000,
        };
        (self.build)(&mut spec);
        spec
    }

    /// The figure the scenario is judged by.
    pub(crate) fn headline(&self, report: &LoadReport) -> Option<f64> {
        (self.headline)(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_unique_and_found() {
        for scenario in ALL {
            assert_eq!(find(scenario.name).map(|s| s.name), Some(scenario.name));
        }
        assert!(find("nope").is_none());
    }

    #[test]
    fn every_load_is_bounded_in_time_and_stays_under_the_open_files_limit_per_worker() {
        for scenario in ALL {
            let urls = ["http://127.0.0.1:7070".to_string()];
            let spec = scenario.spec(Target::Herald, &urls, &[], Generator::HeraldClient);
            let secs: f64 = spec.steps.iter().map(|s| s.secs + spec.drain_secs).sum::<f64>() + spec.idle_secs;
            assert!(secs < 80.0, "{} may take {secs} s", scenario.name);
            let workers = spec.subscribers.div_ceil(crate::load::MAX_PER_WORKER).max(2);
            assert!(spec.subscribers / workers <= 15_000, "{}", scenario.name);
        }
    }
}

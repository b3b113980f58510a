//! `herald-bench redis-blip`: what a short Redis fault costs a node's subscribers, for a Herald that runs
//! `--engine redis`.
//!
//! The channels first get a history (published before anyone subscribes, so it costs no delivery); then the
//! subscribers open, spread evenly over the channels, and resume from their cursor whenever they are dropped,
//! as herald.js does. Publishing goes on at a low steady rate while the coordinator runs a command that does
//! something to Redis (`--blip-command`: kill Herald's Pub/Sub connection, restart Redis …) and returns once
//! Redis is back. From then on it watches when every subscriber has received a message published after that
//! moment: *everyone is live again*. Herald's counters (slow-consumer disconnects, history and catch-up reads)
//! are read before and after, and every subscriber checks its sequence numbers for gaps and duplicates.
//!
//! Publishes are numbered in steps: 0 is the history, 1 the steady traffic before the blip, 2 from the blip on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::load::{self, ConnectReport, Latency, LoadSpec, Worker};
use crate::payload::now_us;
use crate::publisher::{published_table, Published, Publisher};
use crate::recovery::{live_again, LiveAgain};
use crate::server_metrics::Counters;
use crate::spec::{Generator, Layout, Target, Transport};
use crate::worker::Command;

/// How the steady publishing is cut: each publisher checks for the end this often.
const SLICE: Duration = Duration::from_millis(200);
/// How often the coordinator asks the workers who is live again.
const RECOVERY_POLL: Duration = Duration::from_millis(200);
/// The longest the history may take to publish.
const FILL_LIMIT: Duration = Duration::from_secs(90);

/// Everything that defines a blip run.
#[derive(Debug, Clone)]
pub(crate) struct BlipSpec {
    /// A name for the kind of blip, carried into the report.
    pub(crate) label: String,
    pub(crate) url: String,
    pub(crate) subscribers: u32,
    pub(crate) channels: u32,
    pub(crate) publishers: u32,
    /// Messages published to each channel before the subscribers open: its retained history.
    pub(crate) history: u64,
    /// The steady publish rate over all channels, messages/s.
    pub(crate) rate: f64,
    /// Seconds of steady traffic before the blip.
    pub(crate) before_secs: f64,
    /// A shell command that does the blip and returns once Redis is back.
    pub(crate) blip_command: String,
    /// How long to wait for everyone to be live again after the command returned.
    pub(crate) max_recovery_secs: f64,
    /// Seconds of steady traffic once everyone is live again (or the wait is over).
    pub(crate) after_secs: f64,
    /// How long the last deliveries may take once publishing stopped.
    pub(crate) drain_secs: f64,
    pub(crate) workers: u32,
    pub(crate) connect_concurrency: u32,
}

/// Publishing in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct PublishReport {
    pub(crate) published: u64,
    pub(crate) errors: u64,
    pub(crate) secs: f64,
    pub(crate) error_samples: Vec<String>,
}

impl PublishReport {
    fn add(&mut self, done: Published) {
        self.published += done.ok;
        self.errors += done.errors;
        for sample in done.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(sample);
            }
        }
    }
}

/// The result of a blip run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BlipReport {
    pub(crate) label: String,
    pub(crate) blip_command: String,
    pub(crate) subscribers: u32,
    pub(crate) channels: u32,
    pub(crate) history_per_channel: u64,
    pub(crate) rate: f64,
    pub(crate) history: PublishReport,
    pub(crate) connect: ConnectReport,
    /// The steady publishing, before and from the blip on.
    pub(crate) steady: PublishReport,
    /// How long the blip command took.
    pub(crate) blip_secs: f64,
    /// Herald's counters from the start (history published, nobody subscribed) to just before the blip, and
    /// from then to the end.
    pub(crate) counters_before: Counters,
    pub(crate) counters_after: Counters,
    pub(crate) live_again: LiveAgain,
    /// Subscribers dropped at least once, and their reconnects in all.
    pub(crate) subscribers_reconnected: u64,
    pub(crate) reconnects: u64,
    /// Why subscriptions ended, with how many times each.
    pub(crate) drops: BTreeMap<String, u64>,
    pub(crate) latency_before_ms: Latency,
    pub(crate) latency_after_ms: Latency,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) errors: u64,
    pub(crate) error_samples: Vec<String>,
}

/// The load behind a blip run: its subscribers and publishers, as `load.rs` opens them.
fn load_spec(spec: &BlipSpec) -> LoadSpec {
    LoadSpec {
        target: Target::Herald,
        urls: vec![spec.url.clone()],
        server_pids: Vec::new(),
        generator: Generator::HeraldClient,
        transport: Transport::Ws,
        subscribers: spec.subscribers,
        layout: Layout::Even { channels: spec.channels },
        payload_bytes: 100,
        publishers: spec.publishers,
        steps: Vec::new(),
        ramp: false,
        warmup: false,
        max_p99_ms: 100.0,
        drain_secs: spec.drain_secs,
        settle_secs: 1.0,
        idle_secs: 0.0,
        workers: spec.workers,
        connect_concurrency: spec.connect_concurrency,
        poll_interval_ms: 1000,
    }
}

/// Publishes the history of every channel, all publishers at once.
async fn publish_history(publishers: &mut Vec<Publisher>, per_channel: u64) -> anyhow::Result<PublishReport> {
    let start = Instant::now();
    let until = start + FILL_LIMIT;
    let mut tasks = Vec::new();
    for mut publisher in publishers.drain(..) {
        tasks.push(tokio::spawn(async move {
            let done = publisher.fill(0, per_channel, until).await;
            (publisher, done)
        }));
    }
    let mut report = PublishReport::default();
    for task in tasks {
        let (publisher, done) = task.await?;
        publishers.push(publisher);
        report.add(done);
    }
    report.secs = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Publishes at `rate` (over all publishers) in the step `step` says, until `stop`.
fn publish_steadily(
    publishers: Vec<Publisher>,
    rate: f64,
    step: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Publisher, Published)>> {
    let period = Duration::from_secs_f64(publishers.len() as f64 / rate);
    publishers
        .into_iter()
        .map(|mut publisher| {
            let (step, stop) = (step.clone(), stop.clone());
            tokio::spawn(async move {
                let mut total = Published::default();
                while !stop.load(Ordering::Relaxed) {
                    let done =
                        publisher.publish(step.load(Ordering::Relaxed), Instant::now() + SLICE, Some(period)).await;
                    total.ok += done.ok;
                    total.errors += done.errors;
                    total.error_samples.extend(done.error_samples);
                    total.error_samples.truncate(3);
                }
                (publisher, total)
            })
        })
        .collect()
}

/// Runs `command` with `sh -c`; fails unless it succeeds.
async fn run_blip(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("cannot run the blip command {command:?}"))?;
    if !status.success() {
        bail!("the blip command {command:?} failed ({status})");
    }
    Ok(())
}

/// Every subscriber's time of being live again after `since_us`, and its reconnects, in subscriber order.
async fn recovery(workers: &mut [Worker], since_us: u64) -> anyhow::Result<(Vec<Option<u64>>, Vec<u32>)> {
    let (mut live_at, mut reconnects) = (Vec::new(), Vec::new());
    for worker in workers {
        let (l, r) = worker.recovery(since_us).await?;
        live_at.extend(l);
        reconnects.extend(r);
    }
    Ok((live_at, reconnects))
}

/// Runs a blip to the end.
pub(crate) async fn run(spec: &BlipSpec) -> anyhow::Result<BlipReport> {
    if spec.rate <= 0.0 || spec.channels == 0 || spec.publishers == 0 {
        bail!("a blip needs a positive rate, channels and publishers");
    }
    let run = load::run_id();
    let client = crate::https::client(&spec.url)?;
    let load = load_spec(spec);
    let mut publishers: Vec<Publisher> = (0..spec.publishers)
        .map(|p| Publisher::new(&client, Target::Herald, &run, p, spec.publishers, spec.channels, 100))
        .collect();
    let counters_start = Counters::fetch(&client).await.map_err(anyhow::Error::msg)?;

    eprintln!("herald-bench: publishing {} messages to each of {} channels", spec.history, spec.channels);
    let history = publish_history(&mut publishers, spec.history).await?;
    let baseline = published_table(&publishers, spec.channels);
    eprintln!("herald-bench: opening {} subscribers", spec.subscribers);
    let (mut workers, connect) = load::open_subscribers(&load, &run, true, &baseline).await?;
    tokio::time::sleep(Duration::from_secs_f64(load.settle_secs)).await;

    let step = Arc::new(AtomicU32::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = publish_steadily(publishers, spec.rate, step.clone(), stop.clone());
    let steady_start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(spec.before_secs)).await;

    let counters_blip = Counters::fetch(&client).await.map_err(anyhow::Error::msg)?;
    // Publishers read the step at the start of each slice: wait one, so that step 1 ends before the blip.
    step.store(2, Ordering::Relaxed);
    tokio::time::sleep(SLICE).await;
    eprintln!("herald-bench: blip: {}", spec.blip_command);
    let blip_start = Instant::now();
    let blip = run_blip(&spec.blip_command).await;
    let back_us = now_us();
    let blip_secs = blip_start.elapsed().as_secs_f64();
    if let Err(err) = blip {
        stop.store(true, Ordering::Relaxed);
        return Err(err);
    }

    let deadline = Instant::now() + Duration::from_secs_f64(spec.max_recovery_secs);
    while Instant::now() < deadline {
        let (live_at, _) = recovery(&mut workers, back_us).await?;
        if live_again(back_us, &live_at).all_ms.is_some() {
            break;
        }
        tokio::time::sleep(RECOVERY_POLL).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(spec.after_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut publishers = Vec::new();
    let mut steady = PublishReport::default();
    for task in tasks {
        let (publisher, done) = task.await?;
        publishers.push(publisher);
        steady.add(done);
    }
    steady.secs = steady_start.elapsed().as_secs_f64();

    // What the steady publishing should have delivered: every channel's new messages to its audience.
    let published = published_table(&publishers, spec.channels);
    let mut audience = vec![0u64; spec.channels as usize];
    for channel in load.layout.assign(spec.subscribers) {
        audience[channel as usize] += 1;
    }
    let expected: u64 = published
        .iter()
        .zip(&baseline)
        .zip(&audience)
        .map(|((now, before), &subscribers)| subscribers * (now.iter().sum::<u64>() - before.iter().sum::<u64>()))
        .sum();
    let drain_until = Instant::now() + Duration::from_secs_f64(spec.drain_secs);
    loop {
        let (tally, _) = load::gather(&mut workers, &Command::Report).await?;
        if tally.delivered(1) + tally.delivered(2) >= expected || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let counters_end = Counters::fetch(&client).await.map_err(anyhow::Error::msg)?;
    let (live_at, reconnects) = recovery(&mut workers, back_us).await?;
    let tally = load::finish(workers, published).await?;
    Ok(BlipReport {
        label: spec.label.clone(),
        blip_command: spec.blip_command.clone(),
        subscribers: spec.subscribers,
        channels: spec.channels,
        history_per_channel: spec.history,
        rate: spec.rate,
        history,
        connect,
        steady,
        blip_secs,
        counters_before: counters_blip - counters_start,
        counters_after: counters_end - counters_blip,
        live_again: live_again(back_us, &live_at),
        subscribers_reconnected: reconnects.iter().filter(|&&n| n > 0).count() as u64,
        reconnects: tally.reconnects,
        drops: tally.drops.clone(),
        latency_before_ms: load::percentiles(&tally.latency(1)),
        latency_after_ms: load::percentiles(&tally.latency(2)),
        expected,
        delivered: tally.delivered(1) + tally.delivered(2),
        gaps: tally.gaps,
        duplicates: tally.duplicates,
        errors: tally.errors,
        error_samples: tally.error_samples,
    })
}

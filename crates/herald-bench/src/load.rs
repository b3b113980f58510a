//! One load, from the coordinating process: spawn the workers that hold the subscribers, measure the server
//! at rest, publish step after step, wait for each step's deliveries, and gather everything into a
//! [`LoadReport`].
//!
//! A step publishes at a fixed rate (or flat out) for a few seconds, then waits until every subscriber has
//! every message or the drain time is over. It *keeps up* when everything arrived, nothing failed and the
//! publishers kept 90% of the asked rate; it *holds* when it also kept p99 latency under the limit. A ramp
//! stops at the first step that does not keep up.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::payload::now_us;
use crate::procfs::{usage, Usage};
use crate::publisher::{published_table, Publisher};
use crate::spec::{node_of, Generator, Layout, Target, Transport, WorkerSpec};
use crate::tally::TallyReport;
use crate::worker::{Command, Reply};

/// Subscriber connections one worker process holds at most (the open-files limit is 20,000 per process).
pub(crate) const MAX_PER_WORKER: u32 = 10_000;

/// One step of publishing.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct StepPlan {
    /// Messages per second over all publishers; `None`: as fast as the server acknowledges.
    pub(crate) rate: Option<f64>,
    pub(crate) secs: f64,
}

/// Everything that defines a load.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    pub(crate) target: Target,
    /// The server's base URL; several for the nodes of one cluster, which subscribers and publishers take in
    /// turn (`spec::node_of`).
    pub(crate) urls: Vec<String>,
    /// The server's processes (each with its descendants), for RSS and CPU time, summed.
    pub(crate) server_pids: Vec<u32>,
    /// Which client the subscribers are.
    pub(crate) generator: Generator,
    pub(crate) transport: Transport,
    pub(crate) subscribers: u32,
    pub(crate) layout: Layout,
    pub(crate) payload_bytes: usize,
    pub(crate) publishers: u32,
    pub(crate) steps: Vec<StepPlan>,
    /// Stop at the first step that does not hold.
    pub(crate) ramp: bool,
    /// The first step only warms the server and the subscribers up (first writes allocate buffers, first
    /// frames are encoded): it is reported but never judged.
    pub(crate) warmup: bool,
    /// The p99 latency a step must stay under to hold.
    pub(crate) max_p99_ms: f64,
    /// How long after a step's last publish its deliveries may still arrive.
    pub(crate) drain_secs: f64,
    /// Time left between opening the subscriptions and measuring, for the server to settle.
    pub(crate) settle_secs: f64,
    /// How long to measure the server at rest, with every subscriber connected (0: not at all).
    pub(crate) idle_secs: f64,
    /// Worker processes (0: one per 10,000 subscribers, at least 2).
    pub(crate) workers: u32,
    pub(crate) connect_concurrency: u32,
    pub(crate) poll_interval_ms: u64,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepResult {
    pub(crate) rate: Option<f64>,
    pub(crate) published: u64,
    pub(crate) publish_errors: u64,
    /// Acknowledged publishes per second.
    pub(crate) publish_rate: f64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    /// Deliveries over the time from the step's start to its last delivery.
    pub(crate) deliveries_per_sec: f64,
    pub(crate) latency_ms: Latency,
    /// Server CPU seconds per second during the step and its drain.
    pub(crate) server_cpu: f64,
    /// This process and the workers, CPU seconds per second.
    pub(crate) bench_cpu: f64,
    /// Everything arrived within the drain time, nothing failed, the publishers kept 90% of the rate.
    pub(crate) kept_up: bool,
    /// Kept up, with p99 under the limit.
    pub(crate) held: bool,
    pub(crate) warmup: bool,
}

/// Opening the subscriptions.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ConnectReport {
    pub(crate) opened: u32,
    pub(crate) failed: u32,
    pub(crate) secs: f64,
    pub(crate) per_sec: f64,
    pub(crate) error_samples: Vec<String>,
}

/// The server's memory before and after the subscriptions opened.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct MemoryReport {
    pub(crate) before: Usage,
    pub(crate) after: Usage,
    pub(crate) rss_per_connection_bytes: f64,
    pub(crate) pss_per_connection_bytes: f64,
}

/// The whole result of a load.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadReport {
    pub(crate) target: Target,
    /// Which client the subscribers were.
    pub(crate) generator: Generator,
    /// How many nodes of the server were loaded.
    pub(crate) nodes: usize,
    pub(crate) transport: Transport,
    pub(crate) layout: String,
    pub(crate) subscribers: u32,
    pub(crate) workers: u32,
    pub(crate) publishers: u32,
    pub(crate) payload_bytes: usize,
    pub(crate) connect: ConnectReport,
    pub(crate) memory: Option<MemoryReport>,
    /// Server CPU seconds per second at rest, all subscribers connected.
    pub(crate) idle_server_cpu: Option<f64>,
    pub(crate) steps: Vec<StepResult>,
    /// The last step that held.
    pub(crate) best: Option<usize>,
    /// The last step that kept up, whatever its latency.
    pub(crate) peak: Option<usize>,
    pub(crate) gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) errors: u64,
    pub(crate) publish_errors: u64,
    pub(crate) error_samples: Vec<String>,
}

impl LoadReport {
    /// The last step that held.
    pub(crate) fn best_step(&self) -> Option<&StepResult> {
        self.best.map(|i| &self.steps[i])
    }

    /// The last step that kept up.
    pub(crate) fn peak_step(&self) -> Option<&StepResult> {
        self.peak.map(|i| &self.steps[i])
    }
}

/// A worker process and its pipes.
pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn spawn(spec: &WorkerSpec) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program to start workers")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("worker")
            .arg("--spec")
            .arg(serde_json::to_string(spec)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a worker")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        Ok(Self { child, stdin, stdout })
    }

    async fn read(&mut self) -> anyhow::Result<Reply> {
        let line = self.stdout.next_line().await?.context("a worker ended early (see its errors above)")?;
        Ok(serde_json::from_str(&line)?)
    }

    async fn send(&mut self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn ask(&mut self, command: &Command) -> anyhow::Result<(TallyReport, f64)> {
        self.send(command).await?;
        match self.read().await? {
            Reply::Report { tally, cpu_secs } => Ok((tally, cpu_secs)),
            _ => bail!("a worker answered out of turn"),
        }
    }

    /// Per subscriber of this worker: when it first received a message sent at or after `since_us`, and how
    /// often it reconnected.
    pub(crate) async fn recovery(&mut self, since_us: u64) -> anyhow::Result<(Vec<Option<u64>>, Vec<u32>)> {
        self.send(&Command::Recovery { since_us }).await?;
        match self.read().await? {
            Reply::Recovery { live_at_us, reconnects } => Ok((live_at_us, reconnects)),
            _ => bail!("a worker answered out of turn"),
        }
    }
}

/// Asks every worker for its tally; returns the merged tally and the workers' CPU seconds.
pub(crate) async fn gather(workers: &mut [Worker], command: &Command) -> anyhow::Result<(TallyReport, f64)> {
    let mut merged = TallyReport::default();
    let mut cpu = 0.0;
    for worker in workers {
        let (tally, secs) = worker.ask(command).await?;
        merged.merge(&tally);
        cpu += secs;
    }
    Ok((merged, cpu))
}

/// The servers' resource use, summed over their processes.
fn server_usage(pids: &[u32]) -> Usage {
    let mut sum = Usage::default();
    for one in pids.iter().filter_map(|&pid| usage(pid).ok()) {
        sum.rss_bytes += one.rss_bytes;
        sum.pss_bytes += one.pss_bytes;
        sum.cpu_secs += one.cpu_secs;
        sum.processes += one.processes;
    }
    sum
}

pub(crate) fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Latency {
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    Latency {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// A run id unique enough for channel names: the time in base 36.
pub(crate) fn run_id() -> String {
    let mut n = now_us();
    let mut id = Vec::new();
    while n > 0 {
        id.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    id.reverse();
    String::from_utf8_lossy(&id).into_owned()
}

/// Starts the workers of `spec` (channels named after `run`) and waits until every subscription is open
/// or failed. `resume` and `baseline` are passed on to each worker (see [`WorkerSpec`]).
pub(crate) async fn open_subscribers(
    spec: &LoadSpec,
    run: &str,
    resume: bool,
    baseline: &[Vec<u64>],
) -> anyhow::Result<(Vec<Worker>, ConnectReport)> {
    // Open the subscriptions, split over the workers.
    let wanted = match spec.workers {
        0 => spec.subscribers.div_ceil(MAX_PER_WORKER).max(2),
        n => n,
    };
    let count = wanted.min(spec.subscribers);
    let mut workers = Vec::new();
    let mut connect = ConnectReport::default();
    let mut first = 0;
    for w in 0..count {
        let share = spec.subscribers / count + u32::from(w < spec.subscribers % count);
        let worker_spec = WorkerSpec {
            target: spec.target,
            urls: spec.urls.clone(),
            generator: spec.generator,
            transport: spec.transport,
            poll_interval_ms: spec.poll_interval_ms,
            run: run.to_string(),
            layout: spec.layout,
            subscribers: spec.subscribers,
            first,
            count: share,
            publishers: spec.publishers,
            connect_concurrency: spec.connect_concurrency.div_ceil(count),
            resume,
            baseline: baseline.to_vec(),
        };
        first += share;
        workers.push(Worker::spawn(&worker_spec).await?);
    }
    for worker in &mut workers {
        match worker.read().await? {
            Reply::Ready { opened, failed, secs, error_samples } => {
                connect.opened += opened;
                connect.failed += failed;
                connect.secs = connect.secs.max(secs);
                connect.error_samples.extend(error_samples);
            }
            _ => bail!("a worker reported before it was ready"),
        }
    }
    connect.per_sec = if connect.secs > 0.0 { f64::from(connect.opened) / connect.secs } else { 0.0 };
    Ok((workers, connect))
}

/// Tells the workers that publishing is over (`published`: see [`Command::Finish`]), and returns their final
/// tally once they have exited.
pub(crate) async fn finish(mut workers: Vec<Worker>, published: Vec<Vec<u64>>) -> anyhow::Result<TallyReport> {
    let (tally, _) = gather(&mut workers, &Command::Finish { published }).await?;
    for mut worker in workers {
        let _ = worker.child.wait().await;
    }
    Ok(tally)
}

/// Runs a load to the end.
pub(crate) async fn run(spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    let run = run_id();
    let clients = spec.urls.iter().map(|url| crate::https::client(url)).collect::<anyhow::Result<Vec<_>>>()?;
    let channels = spec.layout.channels(spec.subscribers);
    let audience = {
        let mut audience = vec![0u64; channels as usize];
        for channel in spec.layout.assign(spec.subscribers) {
            audience[channel as usize] += 1;
        }
        audience
    };
    let before = server_usage(&spec.server_pids);

    let (mut workers, connect) = open_subscribers(spec, &run, false, &[]).await?;
    let count = workers.len() as u32;
    tokio::time::sleep(Duration::from_secs_f64(spec.settle_secs)).await;

    let memory = (!spec.server_pids.is_empty()).then(|| {
        let after = server_usage(&spec.server_pids);
        let per = |a: u64, b: u64| (a as f64 - b as f64) / f64::from(connect.opened.max(1));
        MemoryReport {
            before,
            after,
            rss_per_connection_bytes: per(after.rss_bytes, before.rss_bytes),
            pss_per_connection_bytes: per(after.pss_bytes, before.pss_bytes),
        }
    });
    let idle_server_cpu = match (spec.server_pids.is_empty(), spec.idle_secs > 0.0) {
        (false, true) => {
            let cpu0 = server_usage(&spec.server_pids).cpu_secs;
            tokio::time::sleep(Duration::from_secs_f64(spec.idle_secs)).await;
            Some((server_usage(&spec.server_pids).cpu_secs - cpu0) / spec.idle_secs)
        }
        _ => None,
    };

    // Publish, step by step.
    let mut publishers: Vec<Publisher> = (0..spec.publishers)
        .map(|p| {
            let client = &clients[node_of(p, clients.len())];
            Publisher::new(client, spec.target, &run, p, spec.publishers, channels, spec.payload_bytes)
        })
        .collect();
    let mut steps = Vec::new();
    let mut best = None;
    let mut peak = None;
    let mut publish_errors = 0;
    let mut last_errors = 0;
    let mut bench_cpu_before = own_cpu() + gather(&mut workers, &Command::Report).await?.1;
    for (k, plan) in spec.steps.iter().enumerate() {
        let step = k as u32;
        let warmup = spec.warmup && k == 0;
        let table_before = published_table(&publishers, channels);
        let cpu_before = server_usage(&spec.server_pids).cpu_secs;
        let start = Instant::now();
        let start_us = now_us();
        let until = start + Duration::from_secs_f64(plan.secs);
        let period = plan.rate.map(|r| Duration::from_secs_f64(f64::from(spec.publishers) / r));
        let mut tasks = Vec::new();
        for mut publisher in publishers.drain(..) {
            tasks.push(tokio::spawn(async move {
                let done = publisher.publish(step, until, period).await;
                (publisher, done)
            }));
        }
        let (mut ok, mut errors) = (0, 0);
        let mut samples = Vec::new();
        for task in tasks {
            let (publisher, done) = task.await?;
            publishers.push(publisher);
            ok += done.ok;
            errors += done.errors;
            samples.extend(done.error_samples);
        }
        let publish_secs = start.elapsed().as_secs_f64();
        let table_after = published_table(&publishers, channels);
        let expected: u64 = table_after
            .iter()
            .zip(&table_before)
            .zip(&audience)
            .map(|((after, before), &subs)| subs * (after.iter().sum::<u64>() - before.iter().sum::<u64>()))
            .sum();
        // Wait for the deliveries.
        let drain_until = Instant::now() + Duration::from_secs_f64(spec.drain_secs);
        let (tally, workers_cpu) = loop {
            let (tally, cpu) = gather(&mut workers, &Command::Report).await?;
            if tally.delivered(k) >= expected || Instant::now() >= drain_until {
                break (tally, cpu);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let elapsed = start.elapsed().as_secs_f64();
        let delivered = tally.delivered(k);
        let last_at = tally.steps.get(k).map_or(start_us, |s| s.last_at_us);
        let span = (last_at.saturating_sub(start_us) as f64 / 1e6).max(1e-3);
        let latency = percentiles(&tally.latency(k));
        let publish_rate = ok as f64 / publish_secs.max(plan.secs);
        let kept_rate = plan.rate.map_or(true, |r| publish_rate >= 0.9 * r);
        let kept_up = delivered >= expected && errors == 0 && tally.errors == last_errors && kept_rate;
        let held = kept_up && (expected == 0 || latency.p99 < spec.max_p99_ms);
        last_errors = tally.errors;
        publish_errors += errors;
        let bench_cpu_now = own_cpu() + workers_cpu;
        steps.push(StepResult {
            rate: plan.rate,
            published: ok,
            publish_errors: errors,
            publish_rate,
            expected,
            delivered,
            deliveries_per_sec: if delivered > 0 { delivered as f64 / span } else { 0.0 },
            latency_ms: latency,
            server_cpu: (server_usage(&spec.server_pids).cpu_secs - cpu_before) / elapsed,
            bench_cpu: (bench_cpu_now - bench_cpu_before) / elapsed,
            kept_up,
            held,
            warmup,
        });
        bench_cpu_before = bench_cpu_now;
        if !samples.is_empty() {
            eprintln!("herald-bench: publish errors in step {k}: {samples:?}");
        }
        if warmup {
            continue;
        }
        if held {
            best = Some(k);
        }
        if kept_up {
            peak = Some(k);
        } else if spec.ramp {
            break;
        }
    }

    // Count what never arrived, and end the workers.
    let tally = finish(workers, published_table(&publishers, channels)).await?;
    Ok(LoadReport {
        target: spec.target,
        generator: spec.generator,
        nodes: spec.urls.len(),
        transport: spec.transport,
        layout: spec.layout.describe(),
        subscribers: spec.subscribers,
        workers: count,
        publishers: spec.publishers,
        payload_bytes: spec.payload_bytes,
        connect,
        memory,
        idle_server_cpu,
        steps,
        best,
        peak,
        gaps: tally.gaps,
        duplicates: tally.duplicates,
        errors: tally.errors,
        publish_errors,
        error_samples: tally.error_samples,
    })
}

fn own_cpu() -> f64 {
    crate::procfs::cpu_secs(std::process::id()).unwrap_or(0.0)
}

//! A worker process: opens its share of the subscribers, counts what they receive, and answers the
//! coordinator over stdin/stdout, one JSON line per command and per reply.
//!
//! Workers exist because one process may hold at most 20,000 open files here, and because two processes use
//! both cores. Each runs a single-threaded runtime: its subscribers share one [`Tally`] without contention.
//!
//! When the load resumes subscriptions (`WorkerSpec::resume`), a subscription that ends is opened again from
//! its cursor after herald.js's backoff, and every arrival is kept so that the coordinator can ask when each
//! subscriber was live again after a fault ([`Command::Recovery`]).

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use herald_client::Client;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

use crate::feed::Feed;
use crate::payload::{decode, now_us};
use crate::plain_ws::PlainWebSocket;
use crate::recovery::{backoff_ms, Arrivals, MAX_RECONNECT_DELAY_MS, RECONNECT_DELAY_MS};
use crate::spec::{channel_name, local_ip, node_of, Generator, Transport, WorkerSpec};
use crate::tally::{Sequence, Tally, TallyReport};

/// What the coordinator asks a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Command {
    /// Send the tally so far.
    Report,
    /// Say, for each subscriber, when it first received a message sent at or after `since_us`, and how often
    /// it reconnected (loads that resume subscriptions only).
    Recovery { since_us: u64 },
    /// Publishing is over: `published[channel][publisher]` is the last sequence number acknowledged. Count
    /// what never arrived, send the final tally and exit.
    Finish { published: Vec<Vec<u64>> },
}

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
    /// Every subscription of the worker is open (or failed).
    Ready { opened: u32, failed: u32, secs: f64, error_samples: Vec<String> },
    /// The tally, and the worker's own CPU time so far.
    Report { tally: TallyReport, cpu_secs: f64 },
    /// Per subscriber of the worker, in order: when it was live again (µs since the Unix epoch), and its
    /// reconnects.
    Recovery { live_at_us: Vec<Option<u64>>, reconnects: Vec<u32> },
}

struct State {
    tally: Tally,
    sequences: Vec<Sequence>,
    /// Per subscriber, what arrived when (only when resuming).
    arrivals: Vec<Arrivals>,
    reconnects: Vec<u32>,
}

/// What a subscriber needs to open its subscription again.
struct Resume {
    client: Client,
    transport: Transport,
    channel: String,
    interval: Duration,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a worker for `spec` until the coordinator says `finish` or closes stdin.
pub(crate) fn run(spec: WorkerSpec) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(spec))
}

async fn serve(spec: WorkerSpec) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    let channels = spec.layout.assign(spec.subscribers);
    let mine: Vec<u32> = (spec.first..spec.first + spec.count).collect();
    let sequences = mine
        .iter()
        .map(|&index| match spec.baseline.get(channels[index as usize] as usize) {
            Some(published) => Sequence::starting_after(published),
            None => Sequence::default(),
        })
        .collect();
    let arrivals = vec![Arrivals::default(); if spec.resume { mine.len() } else { 0 }];
    let reconnects = vec![0; mine.len()];
    let state = Arc::new(Mutex::new(State { tally: Tally::default(), sequences, arrivals, reconnects }));

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(spec.connect_concurrency.max(1) as usize));
    // One client per node for all of this worker's subscribers, so that shared HTTP/2 connections are shared
    // among them.
    let bases: Vec<Result<Client, String>> =
        spec.urls.iter().map(|url| crate::https::subscriber_client(url).map_err(|e| e.to_string())).collect();
    let mut opening = Vec::with_capacity(mine.len());
    for (local, &index) in mine.iter().enumerate() {
        let spec = spec.clone();
        let channel = channel_name(&spec.run, channels[index as usize]);
        let node = node_of(index, bases.len());
        let (gate, state, base) = (gate.clone(), state.clone(), bases[node].clone());
        opening.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let client = base?.with_local_ip(local_ip(1, index));
            let interval = Duration::from_millis(spec.poll_interval_ms);
            let feed = match spec.generator {
                Generator::HeraldClient => Feed::open(&client, spec.target, spec.transport, &channel, interval).await,
                Generator::Plain if spec.transport == Transport::Ws => {
                    PlainWebSocket::subscribe(&spec.urls[node], local_ip(1, index), spec.target, &channel)
                        .await
                        .map(Feed::Plain)
                }
                Generator::Plain => Err(format!("the plain client speaks WebSocket, not {}", spec.transport.name())),
            };
            drop(permit);
            let feed = feed?;
            let resume = spec.resume.then_some(Resume { client, transport: spec.transport, channel, interval });
            tokio::spawn(follow(feed, local, state, resume));
            Ok::<(), String>(())
        }));
    }
    let (mut opened, mut failed, mut error_samples) = (0, 0, Vec::new());
    for task in opening {
        match task.await {
            Ok(Ok(())) => opened += 1,
            Ok(Err(err)) => {
                failed += 1;
                if error_samples.len() < 5 {
                    error_samples.push(err);
                }
            }
            Err(err) => {
                failed += 1;
                error_samples.push(err.to_string());
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    write(&mut stdout, &Reply::Ready { opened, failed, secs, error_samples }).await?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Command>(&line)? {
            Command::Report => {
                let tally = lock(&state).tally.report();
                write(&mut stdout, &Reply::Report { tally, cpu_secs: own_cpu_secs() }).await?;
            }
            Command::Recovery { since_us } => {
                let reply = {
                    let guard = lock(&state);
                    let live_at_us = guard.arrivals.iter().map(|a| a.live_at(since_us)).collect();
                    Reply::Recovery { live_at_us, reconnects: guard.reconnects.clone() }
                };
                write(&mut stdout, &reply).await?;
            }
            Command::Finish { published } => {
                let tally = {
                    let mut guard = lock(&state);
                    let State { tally, sequences, .. } = &mut *guard;
                    for (sequence, &index) in sequences.iter().zip(&mine) {
                        let channel = channels[index as usize] as usize;
                        tally.gaps += sequence.missing(published.get(channel).map_or(&[][..], Vec::as_slice));
                    }
                    tally.report()
                };
                write(&mut stdout, &Reply::Report { tally, cpu_secs: own_cpu_secs() }).await?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Reads one subscriber's feed, into the shared tally, until it ends; with `resume`, opens it again each time.
async fn follow(mut feed: Feed, local: usize, state: Arc<Mutex<State>>, resume: Option<Resume>) {
    loop {
        let ended = read(&mut feed, local, &state).await;
        let (Some(resume), Some(cursor)) = (&resume, feed.cursor()) else {
            let mut guard = lock(&state);
            if let Err(err) = ended {
                guard.tally.error(err);
            }
            guard.tally.ended += 1;
            return;
        };
        lock(&state).tally.dropped(&ended.err().unwrap_or_else(|| "ended by the server".into()));
        drop(feed);
        feed = reopen(resume, &cursor, local, &state).await;
        let mut guard = lock(&state);
        guard.tally.reconnects += 1;
        guard.reconnects[local] += 1;
    }
}

/// Reads a feed until it ends: `Ok` when the server ended it, `Err` with why otherwise.
async fn read(feed: &mut Feed, local: usize, state: &Mutex<State>) -> Result<(), String> {
    while let Some(item) = feed.next().await {
        let payload = item?;
        let now = now_us();
        let mut guard = lock(state);
        let State { tally, sequences, arrivals, .. } = &mut *guard;
        match decode(&payload) {
            Some(stamp) => {
                tally.receive(&mut sequences[local], stamp, now);
                if let Some(arrivals) = arrivals.get_mut(local) {
                    arrivals.record(stamp.sent_us, now);
                }
            }
            None => tally.error(format!("not a bench payload: {:?}", String::from_utf8_lossy(&payload))),
        }
    }
    Ok(())
}

/// Subscribes again from `cursor` after herald.js's backoff, until it works (the worker ends with the load);
/// each failed attempt is an error.
async fn reopen(resume: &Resume, cursor: &str, local: usize, state: &Mutex<State>) -> Feed {
    let Resume { client, transport, channel, interval } = resume;
    let random = std::collections::hash_map::RandomState::new();
    let mut attempt = 0u32;
    loop {
        let jitter = random.hash_one((local, attempt)) as f64 / u64::MAX as f64;
        let wait = backoff_ms(attempt, RECONNECT_DELAY_MS, MAX_RECONNECT_DELAY_MS, jitter);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        match Feed::resume(client, *transport, channel, cursor, *interval).await {
            Ok(feed) => return feed,
            Err(err) => lock(state).tally.error(format!("resuming: {err}")),
        }
        attempt = attempt.saturating_add(1);
    }
}

async fn write(stdout: &mut tokio::io::Stdout, reply: &Reply) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    stdout.write_all(&line).await?;
    stdout.flush().await?;
    Ok(())
}

fn own_cpu_secs() -> f64 {
    crate::procfs::cpu_secs(std::process::id()).unwrap_or(0.0)
}

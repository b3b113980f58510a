//! A worker process: opens its share of the subscribers, counts what they receive, and answers the
//! coordinator over stdin/stdout, one JSON line per command and per reply.
//!
//! Workers exist because one process may hold at most 20,000 open files here, and because two processes use
//! both cores. Each runs a single-threaded runtime: its subscribers share one [`Tally`] without contention.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use herald_client::Client;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

use crate::feed::Feed;
use crate::payload::{decode, now_us};
use crate::spec::{channel_name, local_ip, WorkerSpec};
use crate::tally::{Sequence, Tally, TallyReport};

/// What the coordinator asks a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Command {
    /// Send the tally so far.
    Report,
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
}

struct State {
    tally: Tally,
    sequences: Vec<Sequence>,
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
    let state =
        Arc::new(Mutex::new(State { tally: Tally::default(), sequences: vec![Sequence::default(); mine.len()] }));

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(spec.connect_concurrency.max(1) as usize));
    let mut opening = Vec::with_capacity(mine.len());
    for (local, &index) in mine.iter().enumerate() {
        let spec = spec.clone();
        let channel = channel_name(&spec.run, channels[index as usize]);
        let (gate, state) = (gate.clone(), state.clone());
        opening.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let client = Client::new(&spec.url).map_err(crate::feed::show)?.with_local_ip(local_ip(1, index));
            let interval = Duration::from_millis(spec.poll_interval_ms);
            let feed = Feed::open(&client, spec.target, spec.transport, &channel, interval).await;
            drop(permit);
            let feed = feed?;
            tokio::spawn(follow(feed, local, state));
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
            Command::Finish { published } => {
                let tally = {
                    let mut guard = lock(&state);
                    let State { tally, sequences } = &mut *guard;
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

/// Reads one subscriber's feed until it ends, into the shared tally.
async fn follow(mut feed: Feed, local: usize, state: Arc<Mutex<State>>) {
    while let Some(item) = feed.next().await {
        let now = now_us();
        let mut guard = lock(&state);
        let State { tally, sequences } = &mut *guard;
        match item.map(|payload| decode(&payload).ok_or(payload)) {
            Ok(Ok(stamp)) => tally.receive(&mut sequences[local], stamp, now),
            Ok(Err(payload)) => tally.error(format!("not a bench payload: {:?}", String::from_utf8_lossy(&payload))),
            Err(err) => {
                tally.error(err);
                tally.ended += 1;
                return;
            }
        }
    }
    lock(&state).tally.ended += 1;
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

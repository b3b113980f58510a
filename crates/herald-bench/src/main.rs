//! `herald-bench`: Herald's load generator, built on `herald-client`.
//!
//! - `run` drives one load with every knob on the command line;
//! - `scenario NAME` runs one of the comparison scenarios (`scenarios.rs`) against Herald or Nchan and writes its JSON result;
//! - `summarize DIR` turns a directory of results into the Herald/Nchan ratio table;
//! - `redis-blip` measures what a short Redis fault costs the subscribers of a Herald on `--engine redis`
//!   (`bench/redis-blip.sh` sets it up);
//! - `worker` is this program re-executed by the others to hold a share of the subscribers.
//!
//! Every load is bounded in connections and time and only targets loopback addresses (127.0.0.0/8).

mod blip;
mod feed;
mod floor;
mod https;
mod load;
mod payload;
mod plain_ws;
mod procfs;
mod publisher;
mod pusher;
mod recovery;
mod report;
mod scenarios;
mod server_metrics;
mod spec;
mod tally;
mod worker;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::load::{LoadSpec, StepPlan};
use crate::spec::{Generator, Layout, Target, Transport};

#[derive(Parser)]
#[command(name = "herald-bench", about = "Load generator for Herald (and Nchan, side by side)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one load.
    Run(RunArgs),
    /// Run one named scenario (see `scenarios`) and write its result.
    Scenario(ScenarioArgs),
    /// List the scenarios of one family.
    Scenarios {
        /// `native`: Herald's API against Nchan; `pusher`: the Pusher protocol, Herald against Soketi.
        #[arg(long, value_enum, default_value = "native")]
        family: scenarios::Family,
        /// Only those also measured against `herald-bench floor`.
        #[arg(long)]
        floor: bool,
    },
    /// Subscribers through a Redis fault: who was dropped, what was read again, when everyone was live again.
    RedisBlip(BlipArgs),
    /// Print the ratio table of the results in a directory: Herald/Nchan, or Herald/Soketi for `--family pusher`.
    Summarize {
        /// The directory of `<scenario>.<target>.json` files.
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "native")]
        family: scenarios::Family,
    },
    /// Serve the machine's floor: Herald's API with nothing but one blocking write per subscriber socket, to
    /// read a server's CPU per delivery as "× floor" (`bench/compare.sh` runs it beside Herald and Nchan).
    Floor {
        /// Where to listen (loopback only).
        #[arg(long, default_value = "127.0.0.1:7095")]
        listen: std::net::SocketAddr,
    },
    /// Hold a share of the subscribers for a coordinating process (internal).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        spec: String,
    },
}

/// Where the server is, and who subscribes to it.
#[derive(clap::Args)]
struct ServerArgs {
    /// The server's base URL (loopback only); comma-separated for the nodes of one cluster, which subscribers
    /// and publishers take in turn.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:7070")]
    url: Vec<String>,
    /// Which server speaks there.
    #[arg(long, value_enum, default_value = "herald")]
    target: Target,
    /// The server's process ids (comma-separated): their RSS and CPU time (with their children's) are read
    /// from /proc and summed.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Which client the subscribers are: `herald-client`, or `plain` (bare WebSocket frames, WebSocket only),
    /// the cross-check that the figures do not depend on the generator.
    #[arg(long, value_enum, default_value = "herald-client")]
    client: Generator,
}

impl ServerArgs {
    fn check(&self) -> anyhow::Result<()> {
        self.url.iter().try_for_each(|url| check_loopback(url))
    }
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long, value_enum, default_value = "ws")]
    transport: Transport,
    /// Subscribers to open.
    #[arg(long, default_value_t = 1000)]
    subscribers: u32,
    /// Channels: `one` (fan-out), `each` (one per subscriber), `zipf:<channels>` or `even:<channels>`.
    #[arg(long, default_value = "one")]
    layout: Layout,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// Publish rates in messages/s, one step each, comma-separated; `max` publishes flat out.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    rate: Vec<String>,
    /// Seconds per step.
    #[arg(long, default_value_t = 3.0)]
    step_secs: f64,
    /// Stop at the first step that does not hold.
    #[arg(long)]
    ramp: bool,
    /// The first step only warms up: reported, never judged.
    #[arg(long)]
    warmup: bool,
    /// p99 a step must stay under to hold, ms.
    #[arg(long, default_value_t = 100.0)]
    max_p99_ms: f64,
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    #[arg(long, default_value_t = 1.0)]
    settle_secs: f64,
    /// Seconds to measure the server at rest before publishing.
    #[arg(long, default_value_t = 0.0)]
    idle_secs: f64,
    /// Worker processes (0: one per 10,000 subscribers, at least 2).
    #[arg(long, default_value_t = 0)]
    workers: u32,
    #[arg(long, default_value_t = 256)]
    connect_concurrency: u32,
    #[arg(long, default_value_t = 1000)]
    poll_interval_ms: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ScenarioArgs {
    /// The scenario's name.
    name: String,
    #[command(flatten)]
    server: ServerArgs,
    /// Write `<name>.<target>.json` and `.md` into this directory.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct BlipArgs {
    /// Herald's base URL (loopback only); it must run `--engine redis`.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// A shell command that does something to Redis and returns once Redis is back.
    #[arg(long)]
    blip_command: String,
    /// A name for this kind of blip, in the report.
    #[arg(long, default_value = "blip")]
    label: String,
    #[arg(long, default_value_t = 5000)]
    subscribers: u32,
    /// Channels, with the same number of subscribers each.
    #[arg(long, default_value_t = 50)]
    channels: u32,
    /// Messages published to each channel before anyone subscribes (keep it above Herald's
    /// `connection_queue`, and the namespace's `history_size` above it, to see a replayed history overflow).
    #[arg(long, default_value_t = 1500)]
    history: u64,
    #[arg(long, default_value_t = 4)]
    publishers: u32,
    /// Steady publish rate over all channels, messages/s.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of steady publishing before the blip.
    #[arg(long, default_value_t = 3.0)]
    before_secs: f64,
    /// Seconds to wait, after the command returned, for every subscriber to be live again.
    #[arg(long, default_value_t = 30.0)]
    max_recovery_secs: f64,
    /// Seconds of steady publishing once everyone is live again.
    #[arg(long, default_value_t = 2.0)]
    after_secs: f64,
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// Worker processes (0: one per 10,000 subscribers, at least 2).
    #[arg(long, default_value_t = 0)]
    workers: u32,
    #[arg(long, default_value_t = 256)]
    connect_concurrency: u32,
    /// Also write the report as JSON to this file, and as markdown next to it.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Refuses any server that is not on this machine's loopback.
fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .context("the URL must start with http:// or https://")?;
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => rest.split(['/', ':']).next().unwrap_or_default(),
    };
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("herald-bench only loads servers on loopback (127.0.0.0/8), not {host:?}");
    }
    Ok(())
}

fn steps(rates: &[String], secs: f64) -> anyhow::Result<Vec<StepPlan>> {
    rates
        .iter()
        .map(|r| match r.as_str() {
            "max" => Ok(StepPlan { rate: None, secs }),
            r => Ok(StepPlan { rate: Some(r.parse().with_context(|| format!("bad rate {r:?}"))?), secs }),
        })
        .collect()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Worker { spec } => worker::run(serde_json::from_str(&spec)?),
        Command::Floor { listen } => floor::serve(listen),
        Command::Scenarios { family, floor } => {
            for s in scenarios::ALL.iter().filter(|s| s.family == family && (s.floor || !floor)) {
                println!("{:<14} {}", s.name, s.description);
            }
            Ok(())
        }
        Command::RedisBlip(args) => {
            check_loopback(&args.url)?;
            let spec = blip::BlipSpec {
                label: args.label,
                url: args.url,
                subscribers: args.subscribers,
                channels: args.channels,
                publishers: args.publishers,
                history: args.history,
                rate: args.rate,
                before_secs: args.before_secs,
                blip_command: args.blip_command,
                max_recovery_secs: args.max_recovery_secs,
                after_secs: args.after_secs,
                drain_secs: args.drain_secs,
                workers: args.workers,
                connect_concurrency: args.connect_concurrency,
            };
            let report = runtime()?.block_on(blip::run(&spec))?;
            let markdown = report::blip_markdown(&report);
            println!("{markdown}");
            if let Some(path) = args.json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
                std::fs::write(path.with_extension("md"), markdown)?;
            }
            Ok(())
        }
        Command::Summarize { dir, family } => {
            print!("{}", report::summary_markdown(&report::read_results(&dir)?, family.pair()));
            Ok(())
        }
        Command::Run(args) => {
            args.server.check()?;
            let spec = LoadSpec {
                target: args.server.target,
                urls: args.server.url,
                server_pids: args.server.server_pid,
                generator: args.server.client,
                transport: args.transport,
                subscribers: args.subscribers,
                layout: args.layout,
                payload_bytes: args.payload_bytes,
                publishers: args.publishers.max(1),
                steps: steps(&args.rate, args.step_secs)?,
                ramp: args.ramp,
                warmup: args.warmup,
                max_p99_ms: args.max_p99_ms,
                drain_secs: args.drain_secs,
                settle_secs: args.settle_secs,
                idle_secs: args.idle_secs,
                workers: args.workers,
                connect_concurrency: args.connect_concurrency,
                poll_interval_ms: args.poll_interval_ms,
            };
            let report = runtime()?.block_on(load::run(&spec))?;
            println!("{}", report::load_markdown(&report));
            if let Some(path) = args.json {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
            }
            Ok(())
        }
        Command::Scenario(args) => {
            args.server.check()?;
            let scenario = scenarios::find(&args.name).with_context(|| format!("no scenario {:?}", args.name))?;
            let server = &args.server;
            let spec = scenario.spec(server.target, &server.url, &server.server_pid, server.client);
            let report = runtime()?.block_on(load::run(&spec))?;
            let markdown =
                format!("### {}: {}\n\n{}", scenario.name, scenario.description, report::load_markdown(&report));
            println!("{markdown}");
            let result = report::ScenarioResult::new(scenario, args.server.target, &report)?;
            std::fs::create_dir_all(&args.out)?;
            let stem = format!("{}.{}", scenario.name, args.server.target.name());
            std::fs::write(args.out.join(format!("{stem}.json")), serde_json::to_vec_pretty(&result)?)?;
            std::fs::write(args.out.join(format!("{stem}.md")), markdown)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_loaded() {
        for url in ["http://127.0.0.1:7070", "http://127.9.8.7", "http://localhost:8091/x", "http://[::1]:80"] {
            assert!(check_loopback(url).is_ok(), "{url}");
        }
        assert!(check_loopback("https://localhost:7172").is_ok(), "HTTPS on loopback too");
        for url in ["http://10.0.0.1:7070", "http://example.com", "https://example.com", "ws://127.0.0.1"] {
            assert!(check_loopback(url).is_err(), "{url}");
        }
    }
}

//! `herald subscribe CHANNEL…`: watch channels from a shell over any of the four transports, one envelope
//! per line on stdout (so the output pipes into `jq` or a file), resets and the end of the stream on stderr.
//!
//! Like the client library, it does not reconnect: when the subscription ends (server shutdown, slow
//! consumer, network), it exits non-zero with the cursor to pass as `--since` to resume without a gap.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use herald_client::{Client, Event, SubscribeOptions, Transport};

/// Watch channels and print every message as one JSON line.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SubscribeArgs {
    /// The channels to watch.
    #[arg(required = true, num_args = 1..)]
    channels: Vec<String>,
    /// How messages travel.
    #[arg(long, value_enum, default_value = "ws")]
    transport: TransportArg,
    /// Resume after this cursor (printed when a previous subscription ended).
    #[arg(long)]
    since: Option<String>,
    /// Replay the newest N retained messages of each channel first.
    #[arg(long)]
    last: Option<u32>,
    /// With `--transport poll`: milliseconds between two polls.
    #[arg(long, default_value_t = 3000)]
    poll_interval_ms: u64,
    /// Herald's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7070", env = "HERALD_URL")]
    url: String,
    /// A subscriber token (JWT) for private channels, sent as `Authorization: Bearer`.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The `--transport` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum TransportArg {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// Long polling.
    LongPoll,
    /// Short polling, every `--poll-interval-ms`.
    Poll,
}

/// Subscribes and prints until the subscription ends (an error, with the cursor to resume from) or stdout is
/// closed (success).
pub(crate) async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    let transport = match args.transport {
        TransportArg::Ws => Transport::WebSocket,
        TransportArg::Sse => Transport::Sse,
        TransportArg::LongPoll => Transport::LongPoll,
        TransportArg::Poll => Transport::Poll { interval: Duration::from_millis(args.poll_interval_ms) },
    };
    let options = SubscribeOptions { channels: args.channels.clone(), transport, since: args.since, last: args.last };
    let mut client = Client::new(&args.url)?;
    if let Some(token) = &args.token {
        client = client.with_bearer(token);
    }
    let mut subscription = client
        .subscribe(options)
        .await
        .with_context(|| format!("subscribing to {} at {}", args.channels.join(", "), args.url))?;

    while let Some(event) = subscription.next().await {
        match event {
            Ok(Event::Message(envelope)) => {
                let line = serde_json::to_string(&envelope)?;
                let mut stdout = std::io::stdout().lock();
                let written = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
                // `herald subscribe … | head -3` closes stdout: that is how such a pipeline stops.
                if matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
                    return Ok(());
                }
                written?;
            }
            Ok(Event::Reset { channels }) => {
                eprintln!("herald: reset on channels {}: messages were lost", channels.join(", "));
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("the subscription ended; resume with --since {}", subscription.cursor()));
            }
        }
    }
    // `subscribe` runs until interrupted, so a stream that ends is worth a non-zero exit, like a closed WebSocket.
    anyhow::bail!("the server ended the subscription; resume with --since {}", subscription.cursor())
}

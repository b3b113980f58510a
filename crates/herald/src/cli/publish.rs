//! `herald publish CHANNEL JSON`: publish one message from a shell, through the same client library the
//! tests and benchmarks use, and print Herald's answer as one JSON line.

use anyhow::Context;
use herald_client::Client;
use serde_json::value::RawValue;

/// Publish one message.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct PublishArgs {
    /// The channel, e.g. `dashboard` or `chat:room1`.
    channel: String,
    /// The data: any JSON value, sent as written (quote strings: '"hello"').
    json: String,
    /// The event name [default: message].
    #[arg(long)]
    event: Option<String>,
    /// Herald's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7070", env = "HERALD_URL")]
    url: String,
    /// The publisher key, sent as `Authorization: Bearer` (prefer the environment: a flag shows in `ps`).
    #[arg(long, env = "HERALD_KEY", hide_env_values = true)]
    key: Option<String>,
}

/// Publishes and prints `{"channel":…,"offset":…,"cursor":…,"time":…}` on stdout.
pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let data: Box<RawValue> = serde_json::from_str(&args.json)
        .with_context(|| format!("the data must be valid JSON (a string is written '\"text\"'): {}", args.json))?;
    let mut client = Client::new(&args.url)?;
    if let Some(key) = &args.key {
        client = client.with_bearer(key);
    }
    let published = client
        .publish(&args.channel, args.event.as_deref(), &*data)
        .await
        .with_context(|| format!("publishing on {:?} at {}", args.channel, args.url))?;
    println!("{}", serde_json::to_string(&published)?);
    Ok(())
}

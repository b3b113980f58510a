//! The `herald` command: `serve`, `demo`, `publish` and `subscribe`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Herald: real-time delivery over short polling, long polling, Server-Sent Events and WebSocket.
#[derive(Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(cli::serve::ServeArgs),
    /// Run the server with a demo publisher and the demo page at `/`.
    Demo(cli::demo::DemoArgs),
    /// Publish one message.
    Publish(cli::publish::PublishArgs),
    /// Print every message of channels, one JSON envelope per line.
    Subscribe(cli::subscribe::SubscribeArgs),
}

/// A configuration or start-up error is a message for a person: its reason and causes on one line, never the
/// backtrace `anyhow` captures when `RUST_BACKTRACE` is set (a panic still prints its own).
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(args).await,
            Command::Demo(args) => cli::demo::run(args).await,
            Command::Publish(args) => cli::publish::run(args).await,
            Command::Subscribe(args) => cli::subscribe::run(args).await,
        }
    })
}

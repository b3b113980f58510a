//! The `herald` command: `serve`, `demo`, `check`, `publish` and `subscribe`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use herald::config::LogFormat;

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
    /// Check a configuration as `serve` would read it (file, environment, flags), then exit.
    Check(cli::check::CheckArgs),
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
    // The server's log format is a setting: the configuration is read before the first line is logged.
    let format = match &cli.command {
        Command::Serve(args) => args.load()?.log_format,
        Command::Demo(args) => args.serve.load()?.log_format,
        _ => LogFormat::Text,
    };
    init_logging(format);
    if let Command::Check(args) = cli.command {
        return cli::check::run(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(args).await,
            Command::Demo(args) => cli::demo::run(args).await,
            Command::Check(_) => Ok(()),
            Command::Publish(args) => cli::publish::run(args).await,
            Command::Subscribe(args) => cli::subscribe::run(args).await,
        }
    })
}

/// Logs to stderr, filtered by `HERALD_LOG` (default `info`): text, or one JSON object a line with the event's
/// fields (`connection`, `transport`, `channel`, `reason` …) at its top level.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
    }
}

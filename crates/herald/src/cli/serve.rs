//! `herald serve`: run the server until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use herald::config::{Config, Overrides};
use herald::Server;

/// Options shared by `serve` and `demo`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    /// A TOML configuration file (see docs/API.md, Configuration).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Enabled transports, comma-separated: ws, sse, poll [default: all].
    #[arg(long)]
    pub(crate) transports: Option<String>,
}

impl ServeArgs {
    /// Loads the configuration: flags > HERALD_* environment > file > defaults.
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
        let flags = Overrides { listen: self.listen.clone(), transports: self.transports.clone() };
        Ok(Config::load(self.config.as_deref(), std::env::vars(), &flags)?)
    }
}

/// Stops the server on SIGTERM or SIGINT.
pub(crate) fn stop_on_signal(server: &Server) {
    let shutdown = server.shutdown().clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
        tracing::info!("shutting down: closing connections, draining requests");
        shutdown.trigger();
    });
}

/// Runs `herald serve`.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let server = Server::bind(config.clone()).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(addr = %server.local_addr()?, engine = server.hub().engine_name(), "herald listening");
    stop_on_signal(&server);
    finish(server.run().await?);
    Ok(())
}

/// Logs how shutdown ended.
pub(crate) fn finish(drained: bool) {
    if drained {
        tracing::info!("stopped");
    } else {
        tracing::warn!("stopped with requests still in flight after the grace period");
    }
}

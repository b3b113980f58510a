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
    /// Where history lives: memory (one node), disk (one node, kept across restarts) or redis (several nodes)
    /// [default: memory].
    #[arg(long)]
    pub(crate) engine: Option<String>,
    /// The directory of --engine disk's file (one process at a time).
    #[arg(long)]
    pub(crate) data_dir: Option<String>,
    /// Redis for --engine redis [default: redis://127.0.0.1:6379].
    #[arg(long)]
    pub(crate) redis_url: Option<String>,
    /// Listen beyond loopback even without a publisher key: anyone who reaches the server may publish.
    #[arg(long, env = "HERALD_INSECURE")]
    pub(crate) insecure: bool,
}

impl ServeArgs {
    /// Loads the configuration: flags > HERALD_* environment > file > defaults.
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
        let flags = Overrides {
            listen: self.listen.clone(),
            transports: self.transports.clone(),
            engine: self.engine.clone(),
            redis_url: self.redis_url.clone(),
            data_dir: self.data_dir.clone(),
            insecure: self.insecure,
        };
        Ok(Config::load(self.config.as_deref(), std::env::vars(), &flags)?)
    }
}

/// Says at start who may publish and subscribe, and shouts when anyone on the network may publish.
pub(crate) fn log_security(server: &Server) {
    let config = server.hub().config();
    let (publisher_keys, token_keys) = server.auth().key_counts();
    let exposed = !config.listen.ip().is_loopback();
    if publisher_keys == 0 && exposed {
        tracing::warn!(
            listen = %config.listen,
            "INSECURE: --insecure given and no publisher key configured: anyone who can reach {} may publish \
             to any channel",
            config.listen
        );
    }
    tracing::info!(
        publisher_keys,
        token_keys,
        namespaces_by_default = if token_keys == 0 { "public" } else { "private" },
        "security"
    );
}

/// Stops the server on SIGTERM or SIGINT. The handlers are installed before this returns, so a signal sent
/// as soon as the server says it listens is never the default one that kills the process.
pub(crate) fn stop_on_signal(server: &Server) -> anyhow::Result<()> {
    let shutdown = server.shutdown().clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down: closing connections, draining requests");
            shutdown.trigger();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("shutting down: closing connections, draining requests");
            shutdown.trigger();
        }
    });
    Ok(())
}

/// Reads the TLS certificate files again on SIGHUP (they are also read again when they change on disk).
pub(crate) fn reload_on_hangup(server: &Server) -> anyhow::Result<()> {
    let Some(tls) = server.tls().cloned() else { return Ok(()) };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reading the TLS certificate files again");
                tls.reload();
            }
        });
    }
    #[cfg(not(unix))]
    let _ = tls;
    Ok(())
}

/// Runs `herald serve`.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let server = Server::bind(config).await?;
    log_security(&server);
    stop_on_signal(&server)?;
    reload_on_hangup(&server)?;
    let scheme = if server.tls().is_some() { "https" } else { "http" };
    tracing::info!(addr = %server.local_addr()?, scheme, engine = server.hub().engine_name(), "herald listening");
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

//! `herald demo`: the server on the embedded engine plus a publisher playing a food-ordering app, and a page at
//! `/` that shows the same live data arriving by all four techniques.

use std::time::Duration;

use herald::Server;

use super::serve::{finish, log_security, reload_on_hangup, stop_on_signal, ServeArgs};

/// Options of `herald demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Milliseconds between two top sellers; the other scenarios follow this pace.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(50..))]
    interval_ms: u64,
}

/// Runs `herald demo`.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut config = args.serve.load()?;
    herald::demo::configure(&mut config);
    let mut server = Server::bind(config).await?;
    server.add_routes(herald::demo::routes());
    log_security(&server);
    let addr = server.local_addr()?;
    stop_on_signal(&server)?;
    reload_on_hangup(&server)?;
    let publisher =
        herald::demo::run(server.hub().clone(), Duration::from_millis(args.interval_ms), server.shutdown().clone());
    server.shutdown().tracker().spawn(publisher);
    let scheme = if server.tls().is_some() { "https" } else { "http" };
    println!("Herald demo running: open {scheme}://{addr}/");
    finish(server.run().await?);
    Ok(())
}

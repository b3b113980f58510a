//! The load generator over HTTPS: a server at an `https://` URL is trusted through the CA of
//! `BENCH_CA_FILE` (a test CA, PEM), is offered HTTP/2 unless `BENCH_HTTP2=off`, and with
//! `BENCH_HTTP2_STREAMS=N` every worker sends N subscriptions over each HTTP/2 connection, as a browser
//! carries its tabs' streams on one. Variables rather than flags: the workers are processes of their own and
//! inherit them, and a plain-HTTP run needs none of it. Not `HERALD_…`: a Herald started from the same shell
//! would refuse a variable of its prefix that is not one of its settings.

use anyhow::Context;
use herald_client::Client;

/// A client for `url`, with the HTTPS settings of the environment.
pub(crate) fn client(url: &str) -> anyhow::Result<Client> {
    let client = Client::new(url)?;
    let Some(ca_file) = std::env::var_os("BENCH_CA_FILE") else { return Ok(client) };
    let pem = std::fs::read(&ca_file).with_context(|| format!("reading BENCH_CA_FILE {ca_file:?}"))?;
    let http2 = std::env::var("BENCH_HTTP2").map_or(true, |v| v != "off");
    Ok(client.with_tls_roots(&pem, http2)?)
}

/// [`client`], sharing HTTP/2 connections among subscriptions when `BENCH_HTTP2_STREAMS` says so.
pub(crate) fn subscriber_client(url: &str) -> anyhow::Result<Client> {
    let client = client(url)?;
    match std::env::var("BENCH_HTTP2_STREAMS").ok().and_then(|n| n.parse::<usize>().ok()) {
        Some(streams) if streams > 1 => Ok(client.with_http2_sharing(streams)),
        _ => Ok(client),
    }
}

//! One webhook request: a POST over HTTP/1.1 on a connection of its own, bounded by a timeout, in the clear
//! (`http://`) or over TLS (`https://`).
//!
//! A connection per request keeps this small and a hung receiver's connection short-lived (dropped with the
//! request at its timeout); requests are batches, so there are few of them. TLS is rustls on the `ring` provider,
//! as the listener's: the receiver's certificate must chain to the system's roots or to `webhook_ca_file`'s, and
//! name the URL's host. A handshake that fails (an unknown issuer, another name, an expired certificate) is a
//! failed request like any other, retried, and told apart in the metrics and the log by [`SendError::Tls`].

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{Config, ConfigError};
use crate::tls::{roots, TlsError};

/// Where requests go, read from an `http[s]://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    host: String,
    port: u16,
    /// `https://`: the request goes over TLS, and the certificate must name `host`.
    tls: bool,
    /// `host[:port]`, the `Host` header.
    authority: String,
    /// The path and query.
    path: String,
}

impl Target {
    /// Reads `url`; an error says what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err("the URL must start with http:// or https://".into()),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err("the URL needs a host (and no user info)".into());
        }
        let (host, port) = match authority.rsplit_once(':').filter(|(_, port)| !port.contains(']')) {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| "the port is not a number")?),
            None => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err("the URL needs a host".into());
        }
        if tls && ServerName::try_from(host.as_str()).is_err() {
            return Err("the host is not a name or address a certificate can be checked against".into());
        }
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
        Ok(Self { host, port, tls, authority: authority.to_owned(), path })
    }
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("{0}")]
    Connection(String),
    /// The TLS handshake failed: most often a certificate that is not trusted or does not name the host.
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls {
        /// The URL's host.
        host: String,
        /// rustls's reason.
        reason: String,
    },
}

/// What requests over TLS trust: the system's roots and `webhook_ca_file`'s certificates. The system's roots are
/// read on the first `https://` request (most servers have none), the file at start (so a bad one stops it).
pub(crate) struct Trust {
    extra: Vec<CertificateDer<'static>>,
    connector: OnceLock<TlsConnector>,
}

impl Trust {
    /// The trust `config` asks for; an unreadable `webhook_ca_file` is refused naming it.
    pub(crate) fn new(config: &Config) -> Result<Self, ConfigError> {
        let extra = match &config.webhook_ca_file {
            Some(path) => read_ca_file(config, path)?,
            None => Vec::new(),
        };
        Ok(Self { extra, connector: OnceLock::new() })
    }

    fn connector(&self) -> TlsConnector {
        self.connector
            .get_or_init(|| {
                let mut roots = roots::system();
                // Each was checked to be a root rustls accepts when the file was read.
                roots.add_parsable_certificates(self.extra.iter().cloned());
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
                // The ring provider supports the default versions: building cannot fail.
                let config = config.unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
                TlsConnector::from(Arc::new(config))
            })
            .clone()
    }
}

/// The certificates of `webhook_ca_file`, or why they cannot be used (naming the setting as it was given).
fn read_ca_file(config: &Config, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    roots::read_pem("webhook_ca_file", path).map_err(|err| {
        let message = match err {
            TlsError::Read { path, source, .. } => format!("cannot read {path}: {source}"),
            other => other.to_string(),
        };
        ConfigError::invalid(config.source("webhook_ca_file"), message)
    })
}

/// POSTs `body` (JSON) with `headers`; the answer's status.
pub(crate) async fn post(
    target: &Target,
    trust: &Trust,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<u16, SendError> {
    let exchange = async {
        let failed = |err: &dyn std::fmt::Display| SendError::Connection(err.to_string());
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| failed(&e))?;
        let _ = stream.set_nodelay(true);
        if !target.tls {
            return exchange(stream, target, headers, body).await;
        }
        // Checked when the URL was read.
        let name = ServerName::try_from(target.host.clone()).map_err(|e| failed(&e))?;
        let stream = trust.connector().connect(name, stream).await.map_err(|err| SendError::Tls {
            host: target.host.clone(),
            // rustls's error is inside the io::Error; its text says why (an unknown issuer, another name…).
            reason: err.into_inner().map_or_else(|| "the connection closed".to_string(), |e| e.to_string()),
        })?;
        exchange(stream, target, headers, body).await
    };
    // Dropped at the timeout, the connection closes: a hung receiver holds nothing of ours.
    tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(SendError::Timeout(timeout)))
}

/// The HTTP/1.1 exchange over a connected `stream`.
async fn exchange<S>(
    stream: S,
    target: &Target,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<u16, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |err: &dyn std::fmt::Display| SendError::Connection(err.to_string());
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| failed(&e))?;
    let mut request = Request::post(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(&e))?;
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).map_err(|e| failed(&e))?;
        request.headers_mut().insert(HeaderName::from_static(name), value);
    }
    let answer = async {
        let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
        Ok(response.status().as_u16())
    };
    tokio::pin!(connection, answer);
    tokio::select! {
        biased;
        answered = &mut answer => answered,
        // A receiver that answers and closes ends the connection as the answer arrives: take the answer.
        ended = &mut connection => match ended {
            Ok(()) => answer.await,
            Err(err) => Err(failed(&err)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_into_host_port_and_path() {
        let t = Target::parse("http://backend:8080/hooks/herald?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str(), t.path.as_str()),
            ("backend", 8080, "backend:8080", "/hooks/herald?x=1")
        );
        let t = Target::parse("http://127.0.0.1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 80, "/"));
        let t = Target::parse("http://[::1]:9000/h").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        let t = Target::parse("https://hooks.example.com/h").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls, t.authority.as_str()),
            ("hooks.example.com", 443, true, "hooks.example.com")
        );
        let t = Target::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!((t.port, t.tls, t.path.as_str()), (8443, true, "/"));
        assert!(!Target::parse("http://x/").unwrap().tls);
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("https://bad_name!/").is_err());
        assert!(Target::parse("http://:80/").is_err());
        assert!(Target::parse("http://h:port/").is_err());
        assert!(Target::parse("http://user@h/").is_err());
    }

    /// A CA, and a TLS server on 127.0.0.1 presenting a certificate it signed for `names`, that accepts one
    /// handshake after another (and answers nothing). Returns the CA's PEM file and the port.
    async fn server(test: &str, names: &[&str]) -> (std::path::PathBuf, u16) {
        use rustls::pki_types::PrivateKeyDer;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], PrivateKeyDer::try_from(key.serialize_der()).unwrap())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = acceptor.accept(stream).await;
            }
        });
        let file = std::env::temp_dir().join(format!("herald-client-{}-{test}.pem", std::process::id()));
        std::fs::write(&file, ca_cert.pem()).unwrap();
        (file, port)
    }

    async fn send(url: &str, ca_file: Option<std::path::PathBuf>) -> SendError {
        let config = Config { webhook_ca_file: ca_file, ..Config::default() };
        let trust = Trust::new(&config).unwrap();
        let target = Target::parse(url).unwrap();
        post(&target, &trust, &[], b"{}".to_vec(), Duration::from_secs(5)).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_certificate_nobody_trusted_signed_fails_the_handshake_saying_so() {
        let (ca_file, port) = server("untrusted", &["localhost"]).await;
        let err = send(&format!("https://localhost:{port}/hooks"), None).await;
        let text = err.to_string();
        assert!(matches!(err, SendError::Tls { .. }), "{text}");
        assert!(text.starts_with("TLS handshake with localhost failed: invalid peer certificate"), "{text}");
        assert!(text.contains("UnknownIssuer"), "{text}");
        let _ = std::fs::remove_file(ca_file);
    }

    #[tokio::test]
    async fn a_trusted_certificate_for_another_name_fails_the_handshake_saying_so() {
        let (ca_file, port) = server("other-name", &["hooks.example.com"]).await;
        let err = send(&format!("https://localhost:{port}/hooks"), Some(ca_file.clone())).await;
        let text = err.to_string();
        assert!(matches!(err, SendError::Tls { .. }) && text.contains("not valid for name \"localhost\""), "{text}");
        let _ = std::fs::remove_file(ca_file);
    }
}

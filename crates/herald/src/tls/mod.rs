//! HTTPS: the rustls configuration of the listener, and where its certificate comes from — files
//! (`tls_cert_file`, `tls_key_file`, read again when they change) or an ACME server (`acme_domains`).
//!
//! rustls on the `ring` provider, TLS 1.2 and 1.3 only, with rustls's default cipher suites (all AEAD, all
//! forward-secret). ALPN offers `h2` (unless `http2 = false`) and `http/1.1`; the server serves the protocol the
//! handshake agreed on (`server/secure.rs`). A handshake asking for `acme-tls/1` is an ACME server
//! validating a name: it gets the challenge certificate, and the connection ends there. Nothing here knows HTTP:
//! the server owns the sockets, this module only decides what the handshake presents.

pub mod acme;
mod files;
pub(crate) mod roots;
pub mod validity;

use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use acme::{Acme, AcmeCertificates, Challenges, ACME_TLS_ALPN};
use files::CertificateFiles;

/// Why HTTPS could not be set up, or a certificate not obtained.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        /// The setting that names the file.
        key: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file of the ACME cache could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key that cannot be served.
    #[error("{file}: {message}")]
    Certificate {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The ACME server refused an order, or could not be reached.
    #[error("ACME: {0}")]
    Acme(String),
}

/// The protocol a TLS connection settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// HTTP/1.1 (also when the client offered no ALPN).
    Http1,
    /// HTTP/2.
    Http2,
    /// An ACME server's TLS-ALPN-01 validation: nothing is served.
    AcmeValidation,
}

/// Where the certificate comes from.
#[derive(Debug)]
enum Certificates {
    Files(Arc<CertificateFiles>),
    Acme(Arc<AcmeCertificates>),
}

/// The listener's TLS side.
pub struct Tls {
    acceptor: TlsAcceptor,
    certificates: Certificates,
}

impl Tls {
    /// The TLS side `config` asks for (none without certificate files or ACME domains), and the ACME task to run
    /// when certificates come from ACME. Certificate files that do not load stop the start.
    pub(crate) fn from_config(config: &Config) -> Result<Option<(Self, Option<Acme>)>, TlsError> {
        if !config.tls() {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut alpn = Vec::new();
        if config.http2 {
            alpn.push(b"h2".to_vec());
        }
        alpn.push(b"http/1.1".to_vec());
        let (certificates, resolver, task): (_, Arc<dyn ResolvesServerCert>, _) =
            match (&config.tls_cert_file, &config.tls_key_file) {
                (Some(cert_file), Some(key_file)) => {
                    let files = Arc::new(CertificateFiles::load(cert_file, key_file, provider.clone())?);
                    (Certificates::Files(files.clone()), files, None)
                }
                _ => {
                    let acme = Acme::new(config, provider.clone())?;
                    if acme.answers_tls_alpn() {
                        alpn.push(ACME_TLS_ALPN.to_vec());
                    }
                    let served = acme.certificates().clone();
                    (Certificates::Acme(served.clone()), served, Some(acme))
                }
            };
        let mut server = server_config(provider, resolver);
        server.alpn_protocols = alpn;
        Ok(Some((Self { acceptor: TlsAcceptor::from(Arc::new(server)), certificates }, task)))
    }

    /// Performs handshakes.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the certificate files again (SIGHUP); nothing to do under ACME.
    pub fn reload(&self) {
        if let Certificates::Files(files) = &self.certificates {
            files.reload();
        }
    }

    /// The open ACME challenges, under ACME (the plain-HTTP listener answers HTTP-01 from them).
    pub fn challenges(&self) -> Option<&Arc<Challenges>> {
        match &self.certificates {
            Certificates::Acme(acme) => Some(acme.challenges()),
            Certificates::Files(_) => None,
        }
    }

    /// When the certificate served now stops being valid.
    pub fn not_after(&self) -> Option<SystemTime> {
        match &self.certificates {
            Certificates::Files(files) => files.current().cert.first().and_then(|leaf| validity::of(leaf)),
            Certificates::Acme(acme) => return acme.not_after(),
        }
        .map(|v| v.not_after)
    }
}

fn server_config(provider: Arc<CryptoProvider>, resolver: Arc<dyn ResolvesServerCert>) -> ServerConfig {
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    // The ring provider supports both versions: building cannot fail.
    let builder = builder.unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
    builder.with_no_client_auth().with_cert_resolver(resolver)
}

/// The protocol `alpn` (the one the handshake agreed on) stands for.
pub fn negotiated(alpn: Option<&[u8]>) -> Negotiated {
    match alpn {
        Some(b"h2") => Negotiated::Http2,
        Some(protocol) if protocol == ACME_TLS_ALPN => Negotiated::AcmeValidation,
        _ => Negotiated::Http1,
    }
}

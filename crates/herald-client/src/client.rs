//! The [`Client`] handle: where Herald is, and where connections leave from. Cheap to clone; holds no
//! connection, because every request and every subscription opens its own (a test or a benchmark then sees
//! exactly one connection per subscriber); [`Client::connect_http`] keeps one open for many requests.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::error::ClientError;
use crate::io::Stream;
use crate::url::BaseUrl;

/// The TLS side of an `https://` client: one configuration offering HTTP/2 and HTTP/1.1, one offering HTTP/1.1
/// only (WebSocket handshakes are HTTP/1.1 upgrades).
#[derive(Clone)]
struct Tls {
    any: tokio_rustls::TlsConnector,
    http1: tokio_rustls::TlsConnector,
}

impl Tls {
    fn new(roots: rustls::RootCertStore, http2: bool) -> Result<Self, ClientError> {
        let config = |alpn: &[&[u8]]| -> Result<tokio_rustls::TlsConnector, ClientError> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Tls(e.to_string()))?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        };
        let any = if http2 { config(&[b"h2", b"http/1.1"])? } else { config(&[b"http/1.1"])? };
        Ok(Self { any, http1: config(&[b"http/1.1"])? })
    }

    fn system(http2: bool) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        Self::new(roots, http2)
    }
}

/// A connection, and whether it speaks HTTP/2.
pub(crate) struct Connected {
    pub(crate) stream: Stream,
    pub(crate) http2: bool,
}

/// A handle on one Herald server. Publish with [`Client::publish`], subscribe with [`Client::subscribe`].
#[derive(Clone)]
pub struct Client {
    base: BaseUrl,
    local_ip: Option<IpAddr>,
    authorization: Option<Arc<str>>,
    tls: Option<Tls>,
    /// With HTTP/2, how many requests share one connection (`None`: a connection per request).
    pub(crate) http2_sharing: Option<Arc<crate::http::Http2Pool>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("local_ip", &self.local_ip)
            .field("tls", &self.tls.is_some())
            .field("authorization", &self.authorization.as_ref().map(|_| "Bearer …"))
            .finish()
    }
}

impl Client {
    /// A client for the Herald at `base_url`: `http://host[:port][/prefix]` (the port defaults to 80) or
    /// `https://…` (443; the system's roots are trusted, HTTP/2 or HTTP/1.1 as the server chooses). Nothing is
    /// connected yet.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = BaseUrl::parse(base_url)?;
        let tls = if base.tls() { Some(Tls::system(true)?) } else { None };
        Ok(Self { base, local_ip: None, authorization: None, tls, http2_sharing: None })
    }

    /// The same `https://` client, trusting the certificates of `pem` (a test or private CA) instead of the
    /// system's, and offering HTTP/2 only when `http2`.
    pub fn with_tls_roots(mut self, pem: &[u8], http2: bool) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("not a PEM certificate: {e}")))?;
            roots.add(cert).map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        self.tls = Some(Tls::new(roots, http2)?);
        Ok(self)
    }

    /// The same client, sending up to `streams` requests (SSE streams, polls, publishes) over each HTTP/2
    /// connection, as a browser shares one among its tabs; without it, every request has a connection of its
    /// own. No effect on HTTP/1.1.
    pub fn with_http2_sharing(mut self, streams: usize) -> Self {
        self.http2_sharing = Some(Arc::new(crate::http::Http2Pool::new(streams.max(1))));
        self
    }

    /// The same client, opening every connection from `ip` (the port is chosen by the system). A load
    /// generator spreads its connections over `127.0.0.0/8` this way so that the ephemeral ports of one
    /// source address never run out. `ip` must be an address of this machine, of the server's family.
    pub fn with_local_ip(mut self, ip: IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }

    /// The same client, sending `credential` as `Authorization: Bearer <credential>` on every request and
    /// WebSocket handshake: a publisher key to publish where keys are required, or a subscriber token (JWT) to
    /// subscribe to private channels. It is never printed, not even by `Debug`.
    pub fn with_bearer(mut self, credential: &str) -> Self {
        self.authorization = Some(Arc::from(format!("Bearer {credential}")));
        self
    }

    /// The `Authorization` header value, if a credential was set.
    pub(crate) fn authorization(&self) -> Option<&Arc<str>> {
        self.authorization.as_ref()
    }

    /// `host:port`, what the client connects to.
    pub fn authority(&self) -> &str {
        self.base.authority()
    }

    pub(crate) fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// A new connection to the server (TLS for `https://`), from the local address if one was set; HTTP/1.1
    /// only when `http1_only` (a WebSocket handshake).
    pub(crate) async fn connect(&self, http1_only: bool) -> Result<Connected, ClientError> {
        let tcp = crate::net::connect(self.base.authority(), self.local_ip).await?;
        let Some(tls) = &self.tls else { return Ok(Connected { stream: Stream::Plain(tcp), http2: false }) };
        let connector = if http1_only { &tls.http1 } else { &tls.any };
        let name = ServerName::try_from(self.base.host().to_string()).map_err(|e| ClientError::Tls(e.to_string()))?;
        let stream = connector.connect(name, tcp).await?;
        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Connected { stream: Stream::Tls(Box::new(stream)), http2 })
    }
}

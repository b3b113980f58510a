//! The HTTPS client that talks to the ACME server: one short HTTP/1.1 connection per request, over rustls with
//! the system's roots (or `acme_ca_file`'s). An order takes about ten requests, every few weeks; a pooled
//! client (and the platform verifier of instant-acme's default one) would only add crates.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The longest an ACME request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from the ACME server (a certificate chain is a few KiB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// An HTTPS client trusting `roots`.
pub(super) struct AcmeHttp {
    tls: TlsConnector,
}

impl AcmeHttp {
    pub(super) fn new(roots: rustls::RootCertStore, provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
        // The ring provider supports the default versions: building cannot fail.
        let config = config.unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
        Self { tls: TlsConnector::from(Arc::new(config)) }
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, send(tls, request)).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(error)) => Err(instant_acme::Error::Other(error)),
                Err(_) => Err(instant_acme::Error::Other("the ACME server did not answer within 30 s".into())),
            }
        })
    }
}

async fn send(tls: TlsConnector, mut request: Request<BodyWrapper<Bytes>>) -> Result<BytesResponse, Failure> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(format!("{uri} is not an https:// URL").into());
    }
    let host = uri.host().ok_or("a URL without a host")?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let stream = tls.connect(ServerName::try_from(host.clone())?, tcp).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or(host);
    request.headers_mut().insert(hyper::header::HOST, authority.parse()?);
    *request.uri_mut() = uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    let (parts, body) = sender.send_request(request).await?.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await?.to_bytes();
    Ok(BytesResponse { parts, body: Box::new(body) })
}

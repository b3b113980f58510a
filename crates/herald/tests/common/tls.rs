//! HTTPS for the tests: a test CA and certificates it signs, written to a temporary directory, and clients that
//! trust it and speak HTTP/1.1 or HTTP/2 over a real TLS connection, with the ALPN the test asks for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64ct::Encoding;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA trusted by the tests' clients, and a directory to write its certificates in.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    root: CertificateDer<'static>,
    pub dir: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("herald-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Herald test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let root = params.self_signed(&key).unwrap();
        Self { issuer: rcgen::Issuer::new(params, key), root: root.der().clone(), dir }
    }

    /// A certificate for `localhost` and 127.0.0.1 signed by the CA, written as `<name>.pem` and `<name>.key`;
    /// returns the two paths and the certificate's DER.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key")));
        write_whole(&cert_file, cert.pem().as_bytes());
        write_whole(&key_file, key.serialize_pem().as_bytes());
        (cert_file, key_file, cert.der().to_vec())
    }

    /// A server configuration presenting a certificate for `localhost` and 127.0.0.1 signed by the CA.
    pub fn server_config(&self, name: &str) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        let (cert_file, key_file, _) = self.issue(name);
        let chain = CertificateDer::pem_file_iter(&cert_file).unwrap().map(|c| c.unwrap()).collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key_file).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap()
    }

    /// The CA's certificate, written as `ca.pem`.
    pub fn root_file(&self) -> PathBuf {
        let path = self.dir.join("ca.pem");
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64ct::Base64::encode_string(&self.root)
        );
        write_whole(&path, pem.as_bytes());
        path
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        client_config(roots, alpn)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client configuration trusting `roots`, offering `alpn`.
pub fn client_config(roots: rustls::RootCertStore, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Writes a file whole: a temporary file renamed over it, as a certificate manager does.
pub fn write_whole(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A TLS connection to `addr` for `name`.
pub async fn connect(addr: std::net::SocketAddr, name: &str, config: rustls::ClientConfig) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from(name.to_string()).unwrap(), tcp).await.expect("TLS handshake")
}

/// The certificate the server presented.
pub fn served_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// An HTTP/2 client over `stream`.
pub async fn http2(stream: TlsStream<TcpStream>) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server chose HTTP/2");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// An HTTP/1.1 client over `stream`.
pub async fn http1(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection.with_upgrades());
    sender
}

/// A GET request for `path` (HTTP/2 takes the authority from the URI, HTTP/1.1 from `Host`).
pub fn get(path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(format!("https://localhost{path}")).header("host", "localhost").body(Empty::new()).unwrap()
}

/// Reads a response's whole body as text.
pub async fn text(response: hyper::Response<Incoming>) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Reads from an SSE body until `needle` has arrived; returns everything read.
pub async fn read_until(body: &mut Incoming, needle: &str) -> String {
    let mut seen = String::new();
    tokio::time::timeout(super::PATIENCE, async {
        while !seen.contains(needle) {
            let frame = body.frame().await.expect("the stream goes on").unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} never arrived; got {seen:?}"));
    seen
}

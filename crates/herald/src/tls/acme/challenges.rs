//! The answers an ACME server asks for while it validates a name, kept only for the length of an order: a
//! self-signed certificate carrying the key authorization's digest for TLS-ALPN-01 (RFC 8737), served to a
//! handshake that asks for the `acme-tls/1` protocol, and the key authorization itself for HTTP-01, served at
//! `/.well-known/acme-challenge/<token>` by the plain-HTTP listener.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The challenges being answered now.
#[derive(Debug, Default)]
pub struct Challenges {
    /// TLS-ALPN-01 certificates, by host name.
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations, by token.
    http: RwLock<HashMap<String, String>>,
}

impl Challenges {
    /// The TLS-ALPN-01 certificate for `name`, while its challenge is open.
    pub fn tls_alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn.read().unwrap_or_else(|p| p.into_inner()).get(&name.to_ascii_lowercase()).cloned()
    }

    /// The body to answer `GET /.well-known/acme-challenge/<token>` with, while its challenge is open.
    pub fn http(&self, token: &str) -> Option<String> {
        self.http.read().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    pub(super) fn open_tls_alpn(
        &self,
        name: &str,
        digest: &[u8],
        provider: &CryptoProvider,
    ) -> Result<(), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let certified = CertifiedKey::from_der(vec![cert.der().clone()], der, provider)
            .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
        self.tls_alpn.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_ascii_lowercase(), Arc::new(certified));
        Ok(())
    }

    pub(super) fn open_http(&self, token: &str, key_authorization: &str) {
        self.http.write().unwrap_or_else(|p| p.into_inner()).insert(token.to_string(), key_authorization.to_string());
    }

    /// Forgets every answer: the order is over.
    pub(super) fn close_all(&self) {
        self.tls_alpn.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.http.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

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

    pub(super) fn open_tls_alpn(&self, name: &str, digest: &[u8], provider: &CryptoProvider) -> Result<(), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        // Not `CertifiedKey::from_der`: its check that key and certificate match parses the certificate with
        // webpki, which refuses the critical acmeIdentifier extension. Both were made together just above.
        let signing_key = provider.key_provider.load_private_key(der).map_err(|e| e.to_string())?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing_key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_alpn_answer_is_served_for_its_name_until_the_order_ends() {
        let challenges = Challenges::default();
        let provider = rustls::crypto::ring::default_provider();
        challenges.open_tls_alpn("Herald.test", &[7; 32], &provider).unwrap();
        challenges.open_http("token", "token.thumbprint");
        let served = challenges.tls_alpn("herald.test").expect("served for its name, whatever its case");
        // RFC 8737: the acmeIdentifier extension (1.3.6.1.5.5.7.1.31), critical, holding the digest.
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        let leaf = served.cert[0].as_ref();
        assert!(leaf.windows(oid.len()).any(|w| w == oid), "the certificate carries acmeIdentifier");
        assert!(leaf.windows(32).any(|w| w == [7; 32]), "with the key authorization's digest");
        assert_eq!(challenges.http("token").as_deref(), Some("token.thumbprint"));
        assert!(challenges.tls_alpn("other.test").is_none());
        challenges.close_all();
        assert!(challenges.tls_alpn("herald.test").is_none() && challenges.http("token").is_none());
    }
}

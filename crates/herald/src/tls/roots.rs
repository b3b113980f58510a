//! The certificates Herald trusts when it is the client (the ACME server, webhook receivers): the system's
//! roots, and CA files (PEM) that a setting names.
//!
//! The system's roots are read with `rustls-native-certs`, already in the tree for ACME: on Debian it reads
//! `/etc/ssl/certs/ca-certificates.crt` (or `SSL_CERT_FILE` / `SSL_CERT_DIR`) with rustls-pki-types' PEM parser,
//! which is what reading the bundle by hand would be, plus the other platforms' and OpenSSL's places for free.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::TlsError;

/// The system's trusted roots; those that do not parse are left out (as every TLS client does).
pub(crate) fn system() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::debug!(%err, "a system root certificate could not be read");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// The certificates of the PEM file `path`, which the setting `key` names: at least one, each one a root rustls
/// accepts. A file that cannot be read, holds something else or no certificate at all is refused.
pub(crate) fn read_pem(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsError::Read { key, path: file.clone(), source })?;
    let refused = |message: &str| TlsError::Certificate { file: file.clone(), message: message.to_string() };
    let mut certificates = Vec::new();
    let mut check = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| refused("not a PEM certificate"))?;
        check.add(cert.clone()).map_err(|err| refused(&format!("a certificate rustls cannot trust: {err}")))?;
        certificates.push(cert);
    }
    if certificates.is_empty() {
        return Err(refused("no PEM certificate in it"));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("herald-roots-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_ca_file_that_is_missing_empty_or_not_pem_is_refused_naming_its_key() {
        let missing = read_pem("webhook_ca_file", Path::new("/nonexistent/ca.pem")).unwrap_err().to_string();
        assert!(missing.starts_with("webhook_ca_file: cannot read /nonexistent/ca.pem"), "{missing}");
        let empty = file("empty.pem", "");
        let refused = read_pem("webhook_ca_file", &empty).unwrap_err().to_string();
        assert!(refused.ends_with("empty.pem: no PEM certificate in it"), "{refused}");
        let garbage = file("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
        let refused = read_pem("webhook_ca_file", &garbage).unwrap_err().to_string();
        assert!(refused.ends_with("garbage.pem: not a PEM certificate"), "{refused}");
        let _ = std::fs::remove_file(empty);
        let _ = std::fs::remove_file(garbage);
    }

    #[test]
    fn a_ca_file_of_a_real_certificate_is_read() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = file("ca.pem", &ca.pem());
        assert_eq!(read_pem("webhook_ca_file", &path).unwrap().len(), 1);
        let _ = std::fs::remove_file(path);
    }
}

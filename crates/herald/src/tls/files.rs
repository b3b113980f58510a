//! A certificate and key read from files (`tls_cert_file`, `tls_key_file`), served to every handshake and read
//! again when either file changes on disk, so that a renewed certificate (certbot's, a secret rotated by an
//! orchestrator) is served to the next connection without a restart.
//!
//! Each handshake compares the files' modification time and size with those last read: two `stat` calls,
//! microseconds beside the handshake's own cryptography, and no watcher thread. A pair that does not load (a
//! certificate written but not yet its key, a key that does not match) is not served: the previous one stays,
//! and the refusal is logged once per change of the files. SIGHUP reads them again whatever their dates say.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// What identifies a version of a file: its modification time and size.
type Stamp = Option<(SystemTime, u64)>;

/// The certificate files and the pair last loaded from them.
#[derive(Debug)]
pub(crate) struct CertificateFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' stamps when `key` was read, or when a read last failed (so a failure is logged once).
    stamps: (Stamp, Stamp),
}

impl CertificateFiles {
    /// Reads the pair; a pair that does not load stops the start.
    pub(crate) fn load(cert_file: &Path, key_file: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamps = (stamp(cert_file), stamp(key_file));
        let key = Arc::new(read_pair(cert_file, key_file, &provider)?);
        let loaded = Mutex::new(Loaded { key, stamps });
        Ok(Self { cert_file: cert_file.to_path_buf(), key_file: key_file.to_path_buf(), provider, loaded })
    }

    /// The pair to serve: the files' current one when they changed and load, else the last one that did.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        let stamps = (stamp(&self.cert_file), stamp(&self.key_file));
        let mut loaded = self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if loaded.stamps != stamps {
            loaded.stamps = stamps;
            self.replace(&mut loaded);
        }
        loaded.key.clone()
    }

    /// Reads the files again now (SIGHUP).
    pub(crate) fn reload(&self) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loaded.stamps = (stamp(&self.cert_file), stamp(&self.key_file));
        self.replace(&mut loaded);
    }

    fn replace(&self, loaded: &mut Loaded) {
        match read_pair(&self.cert_file, &self.key_file, &self.provider) {
            Ok(key) => {
                loaded.key = Arc::new(key);
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate loaded");
            }
            Err(error) => tracing::warn!(%error, "keeping the previous TLS certificate"),
        }
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// A certificate chain and its private key from PEM files, checked to belong together.
pub(crate) fn read_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(cert_file, "tls_cert_file")?;
    let key_pem = read(key_file, "tls_key_file")?;
    certified_key(&cert_pem, &key_pem, provider)
        .map_err(|message| TlsError::Certificate { file: cert_file.display().to_string(), message })
}

fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { key, path: path.display().to_string(), source })
}

/// A chain (PEM, leaf first) and a key (PEM: PKCS#8, PKCS#1 or SEC1) as rustls serves them.
pub(crate) fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the file".to_string());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the key is not a PEM private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("the key cannot be used with the certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].to_vec()
    }

    #[test]
    fn a_changed_pair_is_served_and_a_broken_one_is_not() {
        let dir = std::env::temp_dir().join(format!("herald-tls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (first_cert, first_key) = pair("first.example");
        std::fs::write(&cert_file, &first_cert).unwrap();
        std::fs::write(&key_file, &first_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = CertificateFiles::load(&cert_file, &key_file, provider).unwrap();
        let first = leaf(&files.current());

        let (second_cert, second_key) = pair("second.example-with-a-longer-name");
        std::fs::write(&cert_file, &second_cert).unwrap(); // its key not yet written: the pair does not load
        assert_eq!(leaf(&files.current()), first, "a half-written pair is not served");
        std::fs::write(&key_file, &second_key).unwrap();
        let second = leaf(&files.current());
        assert_ne!(second, first, "the new pair is served without a restart");

        std::fs::write(&cert_file, "not a certificate").unwrap();
        assert_eq!(leaf(&files.current()), second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let provider = rustls::crypto::ring::default_provider();
        let (cert, _) = pair("a.example");
        let (_, other_key) = pair("b.example");
        let refused = certified_key(cert.as_bytes(), other_key.as_bytes(), &provider).unwrap_err();
        assert!(refused.contains("cannot be used"), "{refused}");
        assert!(certified_key(b"", other_key.as_bytes(), &provider).unwrap_err().contains("no certificate"));
    }
}

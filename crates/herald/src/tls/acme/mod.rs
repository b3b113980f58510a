//! Automatic certificates over ACME (RFC 8555): a task that keeps a certificate for `acme_domains`, obtained
//! from `acme_directory` (Let's Encrypt by default) and renewed once two thirds of its life have passed.
//!
//! Why instant-acme: it is a small, maintained protocol client that leaves the transport, the challenges and
//! the storage to its user, so it fits Herald's own accept loop (the TLS-ALPN-01 answer is one more case of the
//! certificate resolver, the HTTP-01 answer one more path of the redirect listener) and its tokio runtime;
//! rustls-acme brings its own acceptor and a second async ecosystem.
//!
//! What is kept in `acme_cache_dir`, so that a restart neither creates an account nor orders a certificate
//! again: `account.json` (the account's key and URL, per directory), `certificate.pem` and `key.pem` (the
//! certificate served, with the names and directory it was ordered for in `order.json`). A failed order is
//! logged and tried again after a minute, doubling up to six hours; the certificate served meanwhile stays.

mod challenges;
mod client;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

pub use challenges::{Challenges, ACME_TLS_ALPN};

use super::{files, validity, TlsError};
use crate::config::Config;
use crate::shutdown::Shutdown;

/// The first pause after a failed order; it doubles after each failure in a row.
const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest pause between two failed orders.
const RETRY_MOST: Duration = Duration::from_secs(6 * 3600);
/// The longest sleep between two looks at the certificate's renewal date (a clock can jump).
const LOOK_EVERY: Duration = Duration::from_secs(12 * 3600);
/// How long the ACME server gets to validate the names, then to issue the certificate.
const ORDER_PATIENCE: Duration = Duration::from_secs(120);

/// The certificate served under ACME, and the challenge answers given while an order is open.
#[derive(Debug)]
pub(crate) struct AcmeCertificates {
    current: RwLock<Option<Issued>>,
    challenges: Arc<Challenges>,
}

#[derive(Debug, Clone)]
struct Issued {
    key: Arc<CertifiedKey>,
    validity: Option<validity::Validity>,
}

impl AcmeCertificates {
    pub(crate) fn challenges(&self) -> &Arc<Challenges> {
        &self.challenges
    }

    /// When the certificate served ends, if there is one.
    pub(crate) fn not_after(&self) -> Option<SystemTime> {
        self.issued().and_then(|issued| issued.validity).map(|v| v.not_after)
    }

    fn issued(&self) -> Option<Issued> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn serve(&self, issued: Issued) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(issued);
    }
}

impl ResolvesServerCert for AcmeCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN)) {
            return hello.server_name().and_then(|name| self.challenges.tls_alpn(name));
        }
        // Before the first certificate is issued a handshake fails: there is nothing to present.
        self.issued().map(|issued| issued.key)
    }
}

/// Which challenge the ACME server is asked to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    TlsAlpn01,
    Http01,
}

/// `order.json`: what the cached certificate was ordered for.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Ordered {
    directory: String,
    domains: Vec<String>,
}

/// `account.json`.
#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The task that keeps the certificate.
pub(crate) struct Acme {
    ordered: Ordered,
    email: Option<String>,
    cache_dir: PathBuf,
    challenge: Challenge,
    roots_file: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
    certificates: Arc<AcmeCertificates>,
}

impl Acme {
    /// Reads the settings and the cached certificate (served at once when it was ordered for the same names).
    pub(crate) fn new(config: &Config, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let cache_dir = config.acme_cache_dir.clone().unwrap_or_else(|| PathBuf::from("acme"));
        std::fs::create_dir_all(&cache_dir).map_err(|source| TlsError::Read {
            key: "acme_cache_dir",
            path: cache_dir.display().to_string(),
            source,
        })?;
        let mut domains = config.acme_domains.iter().map(|d| d.to_ascii_lowercase()).collect::<Vec<_>>();
        domains.sort();
        domains.dedup();
        let challenge = if config.acme_challenge == "http-01" { Challenge::Http01 } else { Challenge::TlsAlpn01 };
        let acme = Self {
            ordered: Ordered { directory: config.acme_directory.clone(), domains },
            email: config.acme_email.clone(),
            cache_dir,
            challenge,
            roots_file: config.acme_ca_file.clone(),
            provider,
            certificates: Arc::new(AcmeCertificates { current: RwLock::new(None), challenges: Arc::default() }),
        };
        // Checked now, so that a bad file stops the start rather than the first order.
        acme.roots()?;
        if let Some(issued) = acme.cached() {
            acme.certificates.serve(issued);
        }
        Ok(acme)
    }

    pub(crate) fn certificates(&self) -> &Arc<AcmeCertificates> {
        &self.certificates
    }

    /// Whether ACME servers should be offered the `acme-tls/1` protocol on the TLS listener.
    pub(crate) fn answers_tls_alpn(&self) -> bool {
        self.challenge == Challenge::TlsAlpn01
    }

    /// Orders a certificate when there is none or it is due, until shutdown.
    pub(crate) async fn run(self, shutdown: Shutdown) {
        let mut failures = 0u32;
        loop {
            let due =
                self.certificates.issued().and_then(|i| i.validity).map_or(SystemTime::UNIX_EPOCH, |v| v.renew_at());
            let wait = due.duration_since(SystemTime::now()).unwrap_or_default().min(LOOK_EVERY);
            if !wait.is_zero() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.order() => result,
            };
            self.certificates.challenges.close_all();
            match result {
                Ok(issued) => {
                    failures = 0;
                    tracing::info!(domains = ?self.ordered.domains, "ACME certificate issued");
                    self.certificates.serve(issued);
                }
                Err(error) => {
                    let pause = RETRY_FIRST.saturating_mul(1 << failures.min(12)).min(RETRY_MOST);
                    failures += 1;
                    tracing::error!(%error, domains = ?self.ordered.domains, "ACME order failed; trying again in {pause:?}");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// One order, from the account to the certificate, stored in the cache.
    async fn order(&self) -> Result<Issued, TlsError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self.ordered.domains.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(acme)?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(acme)?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(TlsError::Acme(format!("an authorization is {other:?}"))),
            }
            let kind = match self.challenge {
                Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                Challenge::Http01 => ChallengeType::Http01,
            };
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| TlsError::Acme(format!("the ACME server does not offer {kind:?}")))?;
            let key_authorization = challenge.key_authorization();
            match self.challenge {
                Challenge::TlsAlpn01 => {
                    let name = challenge.identifier().to_string();
                    let digest = key_authorization.digest();
                    self.certificates
                        .challenges
                        .open_tls_alpn(&name, digest.as_ref(), &self.provider)
                        .map_err(|e| TlsError::Acme(format!("cannot make the TLS-ALPN-01 certificate: {e}")))?;
                }
                Challenge::Http01 => {
                    self.certificates.challenges.open_http(&challenge.token, key_authorization.as_str())
                }
            }
            challenge.set_ready().await.map_err(acme)?;
        }
        let patience = RetryPolicy::new().timeout(ORDER_PATIENCE);
        let status = order.poll_ready(&patience).await.map_err(acme)?;
        if status != OrderStatus::Ready {
            return Err(TlsError::Acme(format!("the order is {status:?}: a name could not be validated")));
        }
        let key_pem = order.finalize().await.map_err(acme)?;
        let chain_pem = order.poll_certificate(&patience).await.map_err(acme)?;
        let issued = self.issued(chain_pem.as_bytes(), key_pem.as_bytes())?;
        self.store(&chain_pem, &key_pem)?;
        Ok(issued)
    }

    /// The account of the cache for this directory, or a new one (then cached).
    async fn account(&self) -> Result<Account, TlsError> {
        let file = self.cache_dir.join("account.json");
        let roots = self.roots()?;
        let http = || Box::new(client::AcmeHttp::new(roots.clone(), self.provider.clone()));
        if let Some(saved) = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice::<SavedAccount>(&b).ok()) {
            if saved.directory == self.ordered.directory {
                return Account::builder_with_http(http()).from_credentials(saved.credentials).await.map_err(acme);
            }
        }
        let contact = self.email.as_ref().map(|email| format!("mailto:{email}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = Account::builder_with_http(http())
            .create(&new, self.ordered.directory.clone(), None)
            .await
            .map_err(acme)?;
        let saved = SavedAccount { directory: self.ordered.directory.clone(), credentials };
        let json = serde_json::to_vec(&saved).map_err(|e| TlsError::Acme(e.to_string()))?;
        self.write(&file, &json, true)?;
        Ok(account)
    }

    /// The roots trusted for the ACME server: `acme_ca_file`'s, or the system's.
    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        match &self.roots_file {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                // Each certificate was checked to be a root rustls accepts.
                roots.add_parsable_certificates(super::roots::read_pem("acme_ca_file", path)?);
                Ok(roots)
            }
            None => Ok(super::roots::system()),
        }
    }

    /// The cached certificate, when it was ordered for these names from this directory and still loads.
    fn cached(&self) -> Option<Issued> {
        let ordered: Ordered = serde_json::from_slice(&std::fs::read(self.cache_dir.join("order.json")).ok()?).ok()?;
        if ordered != self.ordered {
            return None;
        }
        let chain = std::fs::read(self.cache_dir.join("certificate.pem")).ok()?;
        let key = std::fs::read(self.cache_dir.join("key.pem")).ok()?;
        self.issued(&chain, &key).ok()
    }

    fn issued(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<Issued, TlsError> {
        let key = files::certified_key(chain_pem, key_pem, &self.provider)
            .map_err(|message| TlsError::Acme(format!("the issued certificate: {message}")))?;
        let validity = key.cert.first().and_then(|leaf| validity::of(leaf));
        Ok(Issued { key: Arc::new(key), validity })
    }

    fn store(&self, chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        self.write(&self.cache_dir.join("key.pem"), key_pem.as_bytes(), true)?;
        self.write(&self.cache_dir.join("certificate.pem"), chain_pem.as_bytes(), false)?;
        let ordered = serde_json::to_vec(&self.ordered).map_err(|e| TlsError::Acme(e.to_string()))?;
        self.write(&self.cache_dir.join("order.json"), &ordered, false)
    }

    /// Writes a cache file whole (a temporary file renamed over it), readable by the owner only when `secret`.
    fn write(&self, path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
        let failed = |source| TlsError::Write { path: path.display().to_string(), source };
        let temporary = path.with_extension("new");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut file = options.open(&temporary).map_err(failed)?;
        std::io::Write::write_all(&mut file, bytes).map_err(failed)?;
        std::fs::rename(&temporary, path).map_err(failed)
    }
}

fn acme(error: instant_acme::Error) -> TlsError {
    TlsError::Acme(error.to_string())
}

//! Automatic certificates against a real ACME server: Debian's `pebble` on loopback, validating Herald's names
//! for real (TLS-ALPN-01 on Herald's HTTPS listener, HTTP-01 on its redirect listener), with names resolved to
//! 127.0.0.1 by `pebble-challtestsrv`'s DNS server (pebble's `-dnsserver`). Nothing is faked: Herald's order
//! goes through account creation, authorization, validation, finalization and download.
//!
//! Needs `pebble` and `pebble-challtestsrv` on the PATH; runs when `HERALD_TEST_PEBBLE` is set (scripts/test.sh
//! installs the package and sets it), and says it skipped otherwise.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::tls::{client_config, connect, get, http2, TestCa};
use herald::config::Config;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// How long an order may take: pebble validates at once (`PEBBLE_VA_NOSLEEP`), but a busy machine is slow.
const ORDER_PATIENCE: Duration = Duration::from_secs(90);
const DOMAIN: &str = "herald.test";

fn wanted() -> bool {
    if std::env::var_os("HERALD_TEST_PEBBLE").is_some() {
        return true;
    }
    eprintln!("skipped: set HERALD_TEST_PEBBLE=1 with pebble installed (scripts/test.sh does both)");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pebble and its DNS server, validating on `http_port` and `tls_port` of 127.0.0.1.
struct Pebble {
    directory: String,
    management: SocketAddr,
    _dns: Running,
    _pebble: Running,
}

async fn start_pebble(ca: &TestCa, http_port: u16, tls_port: u16) -> Pebble {
    let (listen, management, dns, dns_management) = (free_port(), free_port(), free_port(), free_port());
    let (cert_file, key_file, _) = ca.issue("pebble");
    let config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{listen}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": cert_file, "privateKey": key_file,
        "httpPort": http_port, "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": false,
    }});
    let config_file = ca.dir.join("pebble.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let log = |name: &str| Stdio::from(std::fs::File::create(ca.dir.join(name)).unwrap());
    let dns_server = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-management", &format!("127.0.0.1:{dns_management}")])
        .stdout(log("challtestsrv.log"))
        .stderr(log("challtestsrv.err"))
        .spawn()
        .expect("pebble-challtestsrv (apt-get install pebble)");
    let dns_server = Running(dns_server);
    let pebble = Command::new("pebble")
        .args(["-config", config_file.to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(log("pebble.log"))
        .stderr(log("pebble.err"))
        .spawn()
        .expect("pebble (apt-get install pebble)");
    let pebble = Running(pebble);
    for port in [listen, management, dns_management] {
        tokio::time::timeout(common::PATIENCE, async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("pebble did not listen on {port}: {}", logs(&ca.dir)));
    }
    Pebble {
        directory: format!("https://localhost:{listen}/dir"),
        management: ([127, 0, 0, 1], management).into(),
        _dns: dns_server,
        _pebble: pebble,
    }
}

fn logs(dir: &Path) -> String {
    ["pebble.log", "pebble.err", "challtestsrv.err"]
        .iter()
        .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(dir.join(f)).unwrap_or_default()))
        .collect()
}

impl Pebble {
    /// The root that signs what pebble issues (it makes a new one at every start).
    async fn issuing_root(&self, ca: &TestCa) -> rustls::RootCertStore {
        let stream = connect(self.management, "localhost", ca.client_config(&[b"http/1.1"])).await;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let answer = sender.send_request(get("/roots/0")).await.unwrap();
        let pem = answer.into_body().collect().await.unwrap().to_bytes();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    }
}

/// A Herald configuration for ACME against `pebble`.
fn acme_config(ca: &TestCa, cache: &Path, directory: &str) -> Config {
    Config {
        acme_domains: vec![DOMAIN.to_string()],
        acme_email: Some("ops@herald.test".to_string()),
        acme_directory: directory.to_string(),
        acme_cache_dir: Some(cache.to_path_buf()),
        acme_ca_file: Some(ca.root_file()),
        ..common::config()
    }
}

/// Waits until `addr` presents a certificate for [`DOMAIN`] that `roots` (pebble's) vouch for, then asks it for
/// `/healthz` over HTTP/2.
async fn until_issued(addr: SocketAddr, roots: rustls::RootCertStore, dir: &Path) {
    let config = client_config(roots, &[b"h2"]);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let stream = tokio::time::timeout(ORDER_PATIENCE, async {
        loop {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
            match connector.connect(name, tcp).await {
                Ok(stream) => return stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no certificate from pebble within {ORDER_PATIENCE:?}: {}", logs(dir)));
    let mut h2 = http2(stream).await;
    let answer = h2.send_request(get("/healthz")).await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_the_certificate_over_tls_alpn_01_and_a_restart_serves_it_from_the_cache() {
    if !wanted() {
        return;
    }
    let ca = TestCa::new("acme-tls-alpn");
    let cache = ca.dir.join("cache");
    // pebble validates on the port Herald will listen on.
    let port = free_port();
    let pebble = start_pebble(&ca, free_port(), port).await;
    let config = Config { listen: ([127, 0, 0, 1], port).into(), ..acme_config(&ca, &cache, &pebble.directory) };
    let server = common::spawn(config.clone()).await;
    let roots = pebble.issuing_root(&ca).await;
    until_issued(server.addr, roots.clone(), &ca.dir).await;
    for file in ["account.json", "certificate.pem", "key.pem", "order.json"] {
        assert!(cache.join(file).exists(), "{file} is kept in the cache");
    }
    server.stop().await;

    // Without pebble, a restart serves the cached certificate at once.
    drop(pebble);
    let server = common::spawn(config).await;
    until_issued(server.addr, roots, &ca.dir).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_the_certificate_over_http_01_on_the_redirect_listener() {
    if !wanted() {
        return;
    }
    let ca = TestCa::new("acme-http");
    let (port, redirect_port) = (free_port(), free_port());
    let pebble = start_pebble(&ca, redirect_port, free_port()).await;
    let config = Config {
        listen: ([127, 0, 0, 1], port).into(),
        redirect_listen: Some(([127, 0, 0, 1], redirect_port).into()),
        acme_challenge: "http-01".to_string(),
        ..acme_config(&ca, &ca.dir.join("cache"), &pebble.directory)
    };
    let server = common::spawn(config).await;
    let roots = pebble.issuing_root(&ca).await;
    until_issued(server.addr, roots, &ca.dir).await;
    server.stop().await;
}

//! A webhook receiver for the tests: a real HTTP server on 127.0.0.1:0 (or HTTPS, with the certificate a test
//! gives it) that records every request and answers as told (a list of statuses to give first, then 200), or
//! never answers at all. Over HTTPS it also counts the handshakes that failed (the client refused the
//! certificate).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::PATIENCE;

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Answers {
    /// These statuses first, one per request, then 200.
    First(Vec<u16>),
    /// Never: the request hangs until the sender gives up.
    Never,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with (`None`: never answered).
    pub status: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The events of the body.
    pub fn events(&self) -> Vec<Value> {
        self.json()["events"].as_array().unwrap().clone()
    }
}

struct Shared {
    answers: Mutex<Answers>,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    /// TLS handshakes that failed.
    refused: AtomicUsize,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    shared: Arc<Shared>,
    pub port: u16,
    tls: bool,
}

impl Receiver {
    pub async fn start(answers: Answers) -> Receiver {
        Self::serve(answers, None).await
    }

    /// An HTTPS receiver presenting `certificate` (its chain and key).
    pub async fn start_tls(answers: Answers, certificate: rustls::ServerConfig) -> Receiver {
        Self::serve(answers, Some(tokio_rustls::TlsAcceptor::from(Arc::new(certificate)))).await
    }

    async fn serve(answers: Answers, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            answers: Mutex::new(answers),
            received: Mutex::default(),
            arrived: Notify::new(),
            refused: AtomicUsize::new(0),
        });
        let serving = shared.clone();
        let secure = tls.is_some();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                match tls.clone() {
                    None => drop(tokio::spawn(serve(stream, shared))),
                    Some(acceptor) => drop(tokio::spawn(async move {
                        match acceptor.accept(stream).await {
                            Ok(stream) => serve(stream, shared).await,
                            Err(_) => {
                                shared.refused.fetch_add(1, Ordering::Relaxed);
                                shared.arrived.notify_waiters();
                            }
                        }
                    })),
                }
            }
        });
        Receiver { shared, port, tls: secure }
    }

    /// Its URL, `https://localhost:…` over TLS (the name its test certificates carry).
    pub fn url(&self) -> String {
        match self.tls {
            true => format!("https://localhost:{}/hooks", self.port),
            false => format!("http://127.0.0.1:{}/hooks", self.port),
        }
    }

    /// Waits until at least `n` TLS handshakes failed.
    pub async fn until_refused(&self, n: usize) {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                if self.shared.refused.load(Ordering::Relaxed) >= n {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), arrived).await;
            }
        };
        tokio::time::timeout(PATIENCE * 3, wait).await.unwrap_or_else(|_| panic!("fewer than {n} refused handshakes"))
    }

    /// From now on, answers as told.
    pub fn answer(&self, answers: Answers) {
        *self.shared.answers.lock().unwrap() = answers;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The events of the requests answered 2xx, in order, each once (by id for Herald's format).
    pub fn delivered(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for request in self.received().iter().filter(|r| r.status.is_some_and(|s| (200..300).contains(&s))) {
            for event in request.events() {
                let id = event["id"].as_str().map(str::to_owned);
                if id.is_none() || seen.insert(id) {
                    out.push(event);
                }
            }
        }
        out
    }

    /// Waits until `enough` holds of the delivered events, and returns them.
    pub async fn until(&self, what: &str, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                let delivered = self.delivered();
                if enough(&delivered) {
                    return delivered;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), arrived).await;
            }
        };
        match tokio::time::timeout(PATIENCE * 2, wait).await {
            Ok(delivered) => delivered,
            Err(_) => {
                let seen: Vec<String> = self
                    .received()
                    .iter()
                    .map(|r| format!("{:?} {}", r.status, String::from_utf8_lossy(&r.body)))
                    .collect();
                panic!("webhook receiver: never {what}; received {seen:#?}")
            }
        }
    }

    /// Waits until at least `n` requests arrived (answered or not).
    pub async fn until_requests(&self, n: usize) -> Vec<Received> {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                let received = self.received();
                if received.len() >= n {
                    return received;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), arrived).await;
            }
        };
        tokio::time::timeout(PATIENCE * 3, wait).await.unwrap_or_else(|_| panic!("fewer than {n} webhook requests"))
    }
}

/// Reads one request, records it, answers it (or not).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Shared>) {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&chunk[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0usize);
            break (end + 4, length);
        }
    };
    while raw.len() < head_end + length {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end - 4]).to_string();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string())))
        .collect();
    let status = {
        let mut answers = shared.answers.lock().unwrap();
        match &mut *answers {
            Answers::Never => None,
            Answers::First(list) if list.is_empty() => Some(200),
            Answers::First(list) => Some(list.remove(0)),
        }
    };
    let body = raw[head_end..head_end + length].to_vec();
    shared.received.lock().unwrap().push(Received { headers, body, status });
    shared.arrived.notify_waiters();
    match status {
        Some(status) => {
            let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
        None => {
            // Hold the connection until the sender gives up.
            let _ = stream.read(&mut chunk).await;
        }
    }
}

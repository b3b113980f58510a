//! The binary's security defaults: `herald serve` refuses to listen beyond loopback without a publisher key,
//! says so loudly when told `--insecure`, and `herald publish` / `subscribe` send a key and a token.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::tokens::{self, SECRET};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const PATIENCE: Duration = Duration::from_secs(20);
const KEY: &str = "cli-test-key-0123456789";

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for var in ["HERALD_LISTEN", "HERALD_PUBLISHER_KEYS", "HERALD_KEY", "HERALD_TOKEN", "HERALD_INSECURE"] {
        command.env_remove(var);
    }
    command.env("NO_COLOR", "1").kill_on_drop(true);
    command
}

/// Starts `herald serve` with `args` and `env`; returns it with its URL and the log lines up to "listening".
async fn serve(args: &[&str], env: &[(&str, &str)]) -> (tokio::process::Child, String, Vec<String>) {
    let mut child = herald().arg("serve").args(args).envs(env.iter().copied()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let url = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push(line.clone());
            if let Some(addr) = line.split("addr=").nth(1) {
                let port = addr.split_whitespace().next().unwrap().rsplit(':').next().unwrap().to_string();
                return format!("http://127.0.0.1:{port}");
            }
        }
        panic!("herald serve exited before listening:\n{}", log.join("\n"));
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url, log)
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_a_publisher_key() {
    let out = herald().args(["serve", "--listen", "0.0.0.0:0"]).output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("publisher_keys") && stderr.contains("--insecure"), "{stderr}");
}

#[tokio::test]
async fn serve_insecure_listens_and_says_so_loudly() {
    let (_child, _url, log) = serve(&["--listen", "0.0.0.0:0", "--insecure"], &[]).await;
    assert!(log.iter().any(|l| l.contains("WARN") && l.contains("INSECURE")), "{log:?}");
}

#[tokio::test]
async fn serve_listens_publicly_once_a_publisher_key_is_configured() {
    serve(&["--listen", "0.0.0.0:0"], &[("HERALD_PUBLISHER_KEYS", KEY)]).await;
}

#[tokio::test]
async fn publish_sends_the_key_from_the_flag_or_the_environment() {
    let (_child, url, _) = serve(&["--listen", "127.0.0.1:0"], &[("HERALD_PUBLISHER_KEYS", KEY)]).await;
    let run = |args: Vec<String>, env: Vec<(&'static str, &'static str)>| async move {
        tokio::time::timeout(PATIENCE, herald().args(args).envs(env).output()).await.unwrap().unwrap()
    };
    let base = |extra: &[&str]| {
        let mut args: Vec<String> =
            ["publish", "dashboard", "1", "--url", &url].iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let without = run(base(&[]), vec![]).await;
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("key_required"));
    assert!(run(base(&["--key", KEY]), vec![]).await.status.success());
    assert!(run(base(&[]), vec![("HERALD_KEY", KEY)]).await.status.success());
}

#[tokio::test]
async fn subscribe_sends_the_token() {
    let (_child, url, _) = serve(&["--listen", "127.0.0.1:0"], &[("HERALD_JWT_SECRET", SECRET)]).await;
    let token = tokens::hs256(&tokens::claims("u42", &[]));
    let mut child = herald()
        .args(["subscribe", "user:u42", "--url", &url, "--transport", "sse", "--token", &token])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused subscription would exit at once; an accepted one waits for messages.
    let early = tokio::time::timeout(Duration::from_millis(500), child.wait()).await;
    assert!(early.is_err(), "herald subscribe ended: {early:?}");
    let refused = herald().args(["subscribe", "user:u42", "--url", &url, "--transport", "sse"]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("token_required"));
}

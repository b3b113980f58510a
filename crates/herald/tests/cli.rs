//! The `herald` binary as a newcomer uses it: `serve`, `publish`, `subscribe` over each transport, a refused
//! configuration, and a clean stop on SIGTERM.
#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(20);

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env_remove("HERALD_LISTEN").kill_on_drop(true);
    command
}

/// Starts `herald serve` on a free port and returns it with its base URL, read from its log.
async fn serve(args: &[&str]) -> (Child, String) {
    let mut child = herald()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("HERALD_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.split("addr=").nth(1) {
                return format!("http://{}", addr.split_whitespace().next().unwrap());
            }
        }
        panic!("herald serve exited before listening");
    })
    .await
    .expect("herald serve starts");
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

async fn run(args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(PATIENCE, herald().args(args).output()).await.expect("in time").expect("runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The first line `herald subscribe` prints.
async fn first_envelope(url: &str, transport: &str) -> Value {
    let mut child = herald()
        .args(["subscribe", "dashboard", "--url", url, "--transport", transport, "--last", "1"])
        .args(["--poll-interval-ms", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn subscribe");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("a line in time").unwrap().unwrap();
    child.kill().await.ok();
    serde_json::from_str(&line).expect("one JSON envelope per line")
}

#[tokio::test]
async fn a_published_message_arrives_on_all_four_transports() {
    let (_server, url) = serve(&[]).await;
    let (ok, stdout, stderr) =
        run(&["publish", "dashboard", r#"{"top_seller":"Hassan"}"#, "--event", "newTopSeller", "--url", &url]).await;
    assert!(ok, "{stderr}");
    let published: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(published["offset"], 1);
    for transport in ["ws", "sse", "long-poll", "poll"] {
        let envelope = first_envelope(&url, transport).await;
        assert_eq!(envelope["data"]["top_seller"], "Hassan", "{transport}");
        assert_eq!(envelope["event"], "newTopSeller", "{transport}");
        assert_eq!(envelope["cursor"], published["cursor"], "{transport}");
    }
}

#[tokio::test]
async fn publishing_bad_json_fails_with_a_message() {
    let (_server, url) = serve(&[]).await;
    let (ok, _, stderr) = run(&["publish", "dashboard", "{oops", "--url", &url]).await;
    assert!(!ok);
    assert!(stderr.contains("valid JSON"), "{stderr}");
}

#[tokio::test]
async fn a_bad_configuration_is_refused_at_start_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("herald-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "max_wait_secs = \"soon\"\n").unwrap();
    let (ok, _, stderr) = run(&["serve", "--listen", "127.0.0.1:0", "--config", file.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(stderr.contains("max_wait_secs"), "{stderr}");

    let out = tokio::time::timeout(
        PATIENCE,
        herald().args(["serve", "--listen", "127.0.0.1:0"]).env("HERALD_CONNECTION_QUEUE", "0").output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("connection_queue"));
}

#[tokio::test]
async fn a_bad_configuration_prints_its_reason_without_a_backtrace_even_when_backtraces_are_asked_for() {
    let out = tokio::time::timeout(
        PATIENCE,
        herald()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("HERALD_CONNECTION_QUEUE", "0")
            .env("RUST_BACKTRACE", "1")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("connection_queue"), "{stderr}");
    assert!(!stderr.contains("backtrace") && !stderr.contains("main"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line, the reason: {stderr}");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let (mut server, _url) = serve(&[]).await;
    let pid = server.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(PATIENCE, server.wait()).await.expect("stops in time").unwrap();
    assert!(status.success(), "{status:?}");
}

/// A file `name` in a directory of this test run, holding `text`.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test]
async fn check_accepts_a_good_configuration_and_exits_without_serving() {
    let file = config_file("good.toml", "listen = \"127.0.0.1:7999\"\nlog_format = \"json\"\n");
    let (ok, stdout, stderr) = run(&["check", "--config", file.to_str().unwrap()]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("configuration OK") && stdout.contains("127.0.0.1:7999"), "{stdout}");
}

#[tokio::test]
async fn check_refuses_what_serve_would_refuse_naming_the_key() {
    for (name, text, key) in [
        ("bad-value.toml", "max_wait_secs = \"soon\"\n", "max_wait_secs"),
        ("weak-key.toml", "[[publisher_keys]]\nname = \"a\"\nkey = \"short\"\n", "publisher_keys[0]"),
        ("exposed.toml", "listen = \"0.0.0.0:7070\"\n", "--insecure"),
        ("no-file.toml", "[jwt]\npublic_key_file = \"missing.pem\"\n", "missing.pem"),
        ("no-ca.toml", "webhook_ca_file = \"missing-ca.pem\"\n", "webhook_ca_file: cannot read"),
        ("not-ca.toml", "webhook_ca_file = \"not-ca.toml\"\n", "no PEM certificate"),
    ] {
        let file = config_file(name, text);
        let (ok, _, stderr) = run(&["check", "--config", file.to_str().unwrap()]).await;
        assert!(!ok, "{name} was accepted");
        assert!(stderr.contains(key), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn check_names_the_variable_that_gave_an_unreadable_webhook_ca_file() {
    let out = tokio::time::timeout(
        PATIENCE,
        herald().arg("check").env("HERALD_WEBHOOK_CA_FILE", "/nonexistent/private-ca.pem").output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HERALD_WEBHOOK_CA_FILE: cannot read /nonexistent/private-ca.pem"), "{stderr}");
}

/// The next line of a JSON log, parsed.
async fn next_json_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>) -> Value {
    let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("a line in time").unwrap();
    let line = line.expect("herald serve is still running");
    serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_fields_an_operator_filters_on() {
    let mut child = herald()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_LOG_FORMAT", "json")
        .env("HERALD_PUBLISHER_KEYS", "a-publisher-key-0123456789")
        .env("HERALD_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let event = next_json_line(&mut lines).await;
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{event}");
        if event["message"] == "herald listening" {
            break format!("http://{}", event["addr"].as_str().unwrap());
        }
    };
    let (ok, _, _) = run(&["publish", "orders", "1", "--url", &url]).await;
    assert!(!ok, "a publish without the key is refused");
    let refused = loop {
        let event = next_json_line(&mut lines).await;
        if event["reason"].is_string() {
            break event;
        }
    };
    assert_eq!((refused["reason"].as_str(), refused["level"].as_str()), (Some("key_required"), Some("INFO")));
    child.kill().await.ok();
}

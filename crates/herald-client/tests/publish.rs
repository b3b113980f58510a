//! Publishing against a scripted server: the request the client sends and how it reads the answers.

#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod fake;

use fake::{answer, http_server};
use herald_client::{Client, ClientError, Published};
use serde_json::json;

#[tokio::test]
async fn publish_posts_the_documented_body_to_the_percent_encoded_route() {
    let ok = r#"{"channel":"orders/42","offset":7,"cursor":"AQ","time":"2026-11-28T02:31:48.123Z"}"#;
    let (url, server) = http_server(vec![vec![answer("201 Created", "application/json", ok)]]).await;

    let published = Client::new(&url).unwrap().publish("orders/42", Some("status"), &json!("preparing")).await.unwrap();

    let request = server.await.unwrap().remove(0);
    assert!(request.starts_with("POST /v1/channels/orders%2F42/messages HTTP/1.1\r\n"), "{request}");
    assert!(request.to_lowercase().contains("content-type: application/json\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\n{\"event\":\"status\",\"data\":\"preparing\"}"), "{request}");
    assert_eq!(
        published,
        Published {
            channel: "orders/42".into(),
            offset: 7,
            cursor: "AQ".into(),
            time: "2026-11-28T02:31:48.123Z".into()
        }
    );
}

#[tokio::test]
async fn a_refused_publish_is_an_api_error_with_the_code_and_message() {
    let body = r#"{"error":{"code":"payload_too_large","message":"the body is over 65536 bytes"}}"#;
    let (url, _server) = http_server(vec![vec![answer("413 Payload Too Large", "application/json", body)]]).await;

    let err = Client::new(&url).unwrap().publish("c", None, &json!(1)).await.unwrap_err();

    match err {
        ClientError::Api { status, code, message } => {
            assert_eq!((status, code.as_str()), (413, "payload_too_large"));
            assert_eq!(message, "the body is over 65536 bytes");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn nobody_listening_is_an_io_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert!(matches!(client.publish("c", None, &json!(1)).await, Err(ClientError::Io(_))));
}

#[tokio::test]
async fn a_raw_request_returns_status_headers_and_body_whatever_the_status() {
    let head = "HTTP/1.1 304 Not Modified\r\netag: \"AQ\"\r\ncontent-length: 0\r\n\r\n";
    let (url, server) = http_server(vec![vec![head.as_bytes().to_vec()]]).await;

    let response = Client::new(&url)
        .unwrap()
        .request("GET", "/v1/channels/c/latest", &[("if-none-match", "\"AQ\"")], b"")
        .await
        .unwrap();

    assert_eq!((response.status, response.header("ETag")), (304, Some("\"AQ\"")));
    assert!(server.await.unwrap()[0].to_lowercase().contains("if-none-match: \"aq\"\r\n"));
}

//! The escape hatches against scripted servers: a kept-open connection, a streamed answer, a WebSocket of
//! uninterpreted frames, and the local address connections leave from.

#![allow(clippy::unwrap_used)] // A test that unwraps fails loudly, which is what it should do.

mod fake;

use std::net::IpAddr;

use fake::{answer, http_server, ws_server, WsStep};
use herald_client::{Client, ClientError};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn a_kept_connection_carries_several_publishes_over_one_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for offset in 1..=2 {
            let mut buf = vec![0; 4096];
            let n = socket.read(&mut buf).await.unwrap();
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let ok = format!(r#"{{"channel":"a","offset":{offset},"cursor":"AQ","time":"t"}}"#);
            socket.write_all(&answer("201 Created", "application/json", &ok)).await.unwrap();
        }
        seen
    });

    let mut connection = Client::new(&url).unwrap().connect_http().await.unwrap();
    let first = connection.publish("a", None, &json!(1)).await.unwrap();
    let second = connection.publish("a", None, &json!(2)).await.unwrap();

    assert_eq!((first.offset, second.offset), (1, 2));
    let seen = server.await.unwrap();
    assert!(seen[1].ends_with(r#"{"data":2}"#), "{seen:?}");
}

#[tokio::test]
async fn a_streamed_answer_hands_over_its_head_then_each_chunk_as_it_comes() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let (url, server) =
        http_server(vec![vec![head, b"6\r\ndata: \r\n".to_vec(), b"3\r\n1\n\n\r\n".to_vec(), b"0\r\n\r\n".to_vec()]])
            .await;

    let mut stream =
        Client::new(&url).unwrap().request_stream("GET", "/sub/a", &[("accept", "text/event-stream")]).await.unwrap();

    assert_eq!((stream.status, stream.header("Content-Type")), (200, Some("text/event-stream")));
    assert_eq!(&stream.chunk().await.unwrap().unwrap()[..], b"data: ");
    assert_eq!(&stream.chunk().await.unwrap().unwrap()[..], b"1\n\n");
    assert!(stream.chunk().await.is_none());
    assert!(server.await.unwrap()[0].starts_with("GET /sub/a HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_raw_websocket_hands_over_payloads_and_reports_the_close() {
    let (url, server) = ws_server(1, vec![WsStep::Send("hello".into()), WsStep::Close(1001, "going away")]).await;

    let mut socket = Client::new(&url).unwrap().websocket("/sub/a").await.unwrap();
    socket.send("hi").await.unwrap();

    assert_eq!(&socket.next().await.unwrap().unwrap()[..], b"hello");
    let closed = socket.next().await.unwrap().unwrap_err();
    assert!(matches!(closed, ClientError::Closed { code: Some(1001), .. }), "{closed:?}");
    drop(socket);
    assert_eq!(server.await.unwrap(), vec!["hi".to_string()]);
}

#[tokio::test]
async fn every_connection_leaves_from_the_local_address_set() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let local: IpAddr = [127, 0, 3, 9].into();
    let client = Client::new(&url).unwrap().with_local_ip(local);
    let connecting = tokio::spawn(async move { client.connect_http().await.map(|_| ()) });

    let (_, peer) = listener.accept().await.unwrap();

    assert_eq!(peer.ip(), local);
    connecting.await.unwrap().unwrap();
}

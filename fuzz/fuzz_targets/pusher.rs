//! The Pusher protocol's parsers of untrusted input: a client's frame, a channel name, a socket id, an HTTP
//! fallback's send body and an API data string never panic; a data string comes back to Pusher clients exactly,
//! and is stored as one line of JSON.
#![no_main]

use herald::pusher::wire::{data, frames, names, signature, sockjs, socket_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(refusal) = frames::ClientFrame::parse(text) {
        let answer = frames::ServerFrame::Error { code: None, message: &refusal.0 }.encode();
        assert!(serde_json::from_slice::<serde_json::Value>(&answer).is_ok());
    }
    let _ = names::PusherChannel::parse(text);
    let _ = names::server_to_user(text);
    let _ = socket_id::SocketId::parse(text);
    let _ = sockjs::sent(text.as_bytes());
    let _ = signature::check_auth(text, "key", "secret", "1.1:private-a");
    let (stored, as_value) = data::from_api(text);
    assert!(!stored.contains(&b'\n'));
    let mut frame = b"{\"data\":".to_vec();
    data::push_frame_data(&mut frame, &stored, as_value);
    frame.push(b'}');
    let back: serde_json::Value = serde_json::from_slice(&frame).expect("a frame is JSON");
    assert_eq!(back["data"].as_str(), Some(text));
});

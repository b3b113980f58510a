//! The WebSocket client protocol: any text frame parses to a request or to an error frame, and every error
//! frame the server would send back is valid JSON.
#![no_main]

use herald_proto::ws::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(err) = ClientFrame::parse(text) {
        let answer = ServerFrame::Error(&err).encode();
        assert!(serde_json::from_str::<serde_json::Value>(&answer).is_ok(), "{answer}");
    }
});

//! Where Pusher's `data` (a string) and Herald's `data` (a JSON value) meet.
//!
//! - A `data` string from the HTTP API that is one line of JSON (what every SDK sends: `JSON.stringify`,
//!   `json_encode`, `json.dumps`) is stored as that JSON value, byte for byte: Herald's own transports show the
//!   object, and Pusher frames carry the same string back (`"data":"{\"a\":1}"`).
//! - Any other string (plain text, or JSON spread over lines) is stored as a JSON string: Herald's transports show
//!   the text, and Pusher frames carry it as that string (`"data":"hello"`) — the origin's `data_as_value` says so.
//! - A client event's data is a JSON value in the client's frame; it is stored as that value (minified only if it
//!   spans lines) and relayed as the same value, as Pusher does.
//! - A message published through Herald's own API (a JSON value) goes to Pusher clients as a string holding its
//!   JSON text, which pusher-js parses back into the value.

use bytes::Bytes;
use serde_json::value::RawValue;

/// Whether `text` is one JSON value on one line.
fn one_line_json(text: &str) -> bool {
    !text.bytes().any(|b| b == b'\n' || b == b'\r') && serde_json::from_str::<&RawValue>(text).is_ok()
}

/// How an HTTP API `data` string is stored: Herald's data, and whether Pusher frames carry it as a value (it was
/// wrapped into a JSON string).
pub fn from_api(data: &str) -> (Bytes, bool) {
    if one_line_json(data) {
        (Bytes::copy_from_slice(data.as_bytes()), false)
    } else {
        let mut out = Vec::with_capacity(data.len() + 2);
        herald_proto::json::push_string(&mut out, data);
        (Bytes::from(out), true)
    }
}

/// How a client event's `data` (the JSON text of its frame's value) is stored: as is, or minified when it spans
/// lines (Herald's data is one line).
pub fn from_client(text: &str) -> Bytes {
    if text.bytes().any(|b| b == b'\n' || b == b'\r') {
        Bytes::from(herald_proto::json::minify(text.as_bytes()))
    } else {
        Bytes::copy_from_slice(text.as_bytes())
    }
}

/// Writes the `data` member of a message's Pusher frame: Herald's data itself when `as_value`, else a string
/// holding it.
pub fn push_frame_data(out: &mut Vec<u8>, data: &[u8], as_value: bool) {
    if as_value {
        out.extend_from_slice(data);
    } else {
        // Stored data is JSON text, which is UTF-8.
        herald_proto::json::push_string(out, &String::from_utf8_lossy(data));
    }
}

/// The size a limit counts of an HTTP API `data` string: its bytes, as Pusher counts them.
pub fn size(data: &str) -> usize {
    data.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// What a Pusher client reads as the frame's `data`.
    fn framed(data: &[u8], as_value: bool) -> Value {
        let mut out = b"{\"data\":".to_vec();
        push_frame_data(&mut out, data, as_value);
        out.push(b'}');
        serde_json::from_slice::<Value>(&out).unwrap()["data"].clone()
    }

    #[test]
    fn sdk_json_is_stored_as_its_value_and_framed_back_byte_for_byte() {
        for sent in [r#"{"id":1,"name":"Hassan"}"#, r#"{"id": 1, "tags": ["a", "b"]}"#, "[1,2]", "42", r#""quoted""#] {
            let (stored, as_value) = from_api(sent);
            assert_eq!((&stored[..], as_value), (sent.as_bytes(), false));
            assert_eq!(framed(&stored, as_value), Value::String(sent.into()));
        }
    }

    #[test]
    fn text_is_stored_as_a_json_string_and_framed_as_that_string() {
        for sent in ["hello", "", "{not json", "{\n  \"a\": 1\n}", "line\r\nbreak", "\u{e9}t\u{e9} \"x\""] {
            let (stored, as_value) = from_api(sent);
            assert!(as_value, "{sent:?}");
            assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), Value::String(sent.into()));
            assert_eq!(framed(&stored, as_value), Value::String(sent.into()));
        }
    }

    #[test]
    fn a_client_events_value_is_relayed_as_that_value() {
        let stored = from_client("{\"typing\": true}");
        assert_eq!(&stored[..], b"{\"typing\": true}");
        assert_eq!(framed(&stored, true), serde_json::json!({ "typing": true }));
        assert_eq!(&from_client("{\n\"a\": [1,\n2]}")[..], b"{\"a\":[1,2]}");
    }

    #[test]
    fn a_herald_value_goes_to_pusher_as_its_json_text() {
        assert_eq!(framed(br#"{"top_seller":"Hassan"}"#, false), Value::String(r#"{"top_seller":"Hassan"}"#.into()));
    }

    proptest! {
        #[test]
        fn any_api_string_comes_back_exactly_and_is_stored_as_one_line_of_json(sent in "\\PC{0,40}|[ -~\\n]{0,40}") {
            let (stored, as_value) = from_api(&sent);
            prop_assert!(serde_json::from_slice::<&RawValue>(&stored).is_ok());
            prop_assert!(!stored.contains(&b'\n'));
            prop_assert_eq!(framed(&stored, as_value), Value::String(sent.clone()));
            if !as_value {
                prop_assert_eq!(&stored[..], sent.as_bytes());
            }
        }
    }
}

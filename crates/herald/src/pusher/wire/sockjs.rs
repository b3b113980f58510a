//! The framing of pusher-js's HTTP fallbacks (`xhr_streaming`, `xhr_polling`): SockJS's, one frame per line.
//!
//! A receive request (`POST …/xhr_streaming` or `…/xhr`) is answered with lines: `o` (the session opened), `a[…]`
//! (an array of Pusher frames, each as a JSON string holding the frame's text), `h` (a heartbeat), `c[code,"reason"]`
//! (the session closed). A streaming answer stays open and carries many lines, after a prelude of 2048 `h` (which
//! makes buffering proxies and browsers pass the stream on at once; pusher-js reads it as one heartbeat); a poll
//! carries one line and ends. A send (`POST …/xhr_send`) carries a JSON array of strings, each a client frame's
//! text (`[]` is a heartbeat).

use bytes::{BufMut, Bytes, BytesMut};

/// The streaming prelude: 2048 `h` and a line break.
pub fn prelude() -> Bytes {
    let mut out = BytesMut::with_capacity(2049);
    out.put_bytes(b'h', 2048);
    out.put_u8(b'\n');
    out.freeze()
}

/// `o`: the session opened.
pub const OPEN: &[u8] = b"o\n";
/// `h`: nothing happened.
pub const HEARTBEAT: &[u8] = b"h\n";

/// `a[…]`: `frames` (each a Pusher frame's JSON text) as one line.
pub fn array<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"a[");
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Frames are JSON text, which is UTF-8.
        herald_proto::json::push_string(&mut out, &String::from_utf8_lossy(frame));
    }
    out.extend_from_slice(b"]\n");
    Bytes::from(out)
}

/// `c[code,"reason"]`: the session closed.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut out = format!("c[{code},").into_bytes();
    herald_proto::json::push_string(&mut out, reason);
    out.extend_from_slice(b"]\n");
    Bytes::from(out)
}

/// The client frames of a send's body (a JSON array of strings), or `None` for a body that is not one.
pub fn sent(body: &[u8]) -> Option<Vec<String>> {
    serde_json::from_slice(body).ok()
}

/// Whether `server` and `session`, the two path segments pusher-js draws for a session (a number below 1000 and
/// eight base-32 digits), look like its own: anything else is not a session of pusher-js's.
pub fn valid_session(server: &str, session: &str) -> bool {
    let digits = !server.is_empty() && server.len() <= 4 && server.bytes().all(|b| b.is_ascii_digit());
    let base32 = !session.is_empty() && session.len() <= 32 && session.bytes().all(|b| b.is_ascii_alphanumeric());
    digits && base32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_are_exactly_sockjs() {
        assert_eq!(
            &array([br#"{"event":"pusher:pong","data":"{}"}"#.as_slice()])[..],
            br#"a["{\"event\":\"pusher:pong\",\"data\":\"{}\"}"]
"#
        );
        assert_eq!(&array([b"1".as_slice(), b"2".as_slice()])[..], b"a[\"1\",\"2\"]\n");
        assert_eq!(&close(4001, "no app has this key")[..], b"c[4001,\"no app has this key\"]\n");
        assert_eq!(prelude().len(), 2049);
        assert!(prelude().starts_with(b"hhhh") && prelude().ends_with(b"h\n"));
    }

    #[test]
    fn a_send_is_an_array_of_strings() {
        assert_eq!(
            sent(br#"["{\"event\":\"pusher:ping\",\"data\":{}}"]"#),
            Some(vec![r#"{"event":"pusher:ping","data":{}}"#.into()])
        );
        assert_eq!(sent(b"[]"), Some(vec![]));
        for bad in [&b""[..], b"{}", b"[1]", b"not json"] {
            assert_eq!(sent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sessions_are_pusher_js_shaped() {
        assert!(valid_session("123", "a1b2c3d4"));
        for (server, session) in [("", "a"), ("12345", "a"), ("1x", "a"), ("1", ""), ("1", "a/b"), ("1", "a.b")] {
            assert!(!valid_session(server, session), "{server}/{session}");
        }
    }

    proptest! {
        /// What pusher-js does with a line: split on line breaks, strip the type, JSON-parse the array, and
        /// JSON-parse each element as the frame.
        #[test]
        fn an_array_line_reads_back_as_its_frames(frames in prop::collection::vec("\\PC{0,30}", 0..5)) {
            let texts: Vec<String> = frames.iter().map(|f| serde_json::json!({ "event": "e", "data": f }).to_string()).collect();
            let line = array(texts.iter().map(|t| t.as_bytes()));
            prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let parsed: Vec<String> = serde_json::from_slice(&line[1..line.len() - 1]).unwrap();
            prop_assert_eq!(parsed, texts);
        }
    }
}

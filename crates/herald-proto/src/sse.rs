//! Server-Sent Events framing (the `text/event-stream` format of the HTML standard), as pure functions.
//!
//! Every field value is split on line breaks into one line per part, so that no value, whatever it holds,
//! can end an event early or inject a field; a browser joins `data` lines back with `\n`.

/// Appends one `name: value` field per line of `value`.
fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    let mut rest = value;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&rest[..end]);
        out.push(b'\n');
        if end == rest.len() {
            return;
        }
        // "\r\n" counts as one line break.
        let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') { 2 } else { 1 };
        rest = &rest[end + skip..];
    }
}

/// An event: optional `id` and `event` lines, then the data lines, then the blank line that dispatches it.
pub fn event(id: Option<&str>, event: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64 + id.map_or(0, str::len));
    if let Some(id) = id {
        push_field(&mut out, "id", id.as_bytes());
    }
    if let Some(event) = event {
        push_field(&mut out, "event", event.as_bytes());
    }
    push_field(&mut out, "data", data);
    out.push(b'\n');
    out
}

/// The block that opens a stream: the reconnection delay and an `id`, the position the stream starts from.
///
/// Without `event` the block has no data, and a browser records the id without dispatching anything. With one
/// (a reset, `(type, data)`), the id and the event are the same block: a browser commits a block's id only at
/// the blank line that ends it, so no prefix of the stream can move a client's last event id past something it
/// has not been told.
pub fn preamble(retry_ms: u64, id: &str, event: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut out = format!("retry: {retry_ms}\n").into_bytes();
    push_field(&mut out, "id", id.as_bytes());
    if let Some((name, data)) = event {
        push_field(&mut out, "event", name.as_bytes());
        push_field(&mut out, "data", data);
    }
    out.push(b'\n');
    out
}

/// A comment line, ignored by browsers; keeps idle connections and proxies alive.
pub fn comment(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4);
    // A field with an empty name is a comment line: ": text".
    push_field(&mut out, "", text.as_bytes());
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_event_has_the_documented_bytes() {
        assert_eq!(
            event(Some("AQEB"), Some("newTopSeller"), br#"{"top_seller":"Hassan"}"#),
            b"id: AQEB\nevent: newTopSeller\ndata: {\"top_seller\":\"Hassan\"}\n\n"
        );
        assert_eq!(event(None, None, b"1"), b"data: 1\n\n");
    }

    #[test]
    fn preamble_and_comment_bytes() {
        assert_eq!(preamble(2000, "AQA", None), b"retry: 2000\nid: AQA\n\n");
        assert_eq!(
            preamble(2000, "AQB", Some(("herald.reset", br#"{"channels":["a"]}"#))),
            b"retry: 2000\nid: AQB\nevent: herald.reset\ndata: {\"channels\":[\"a\"]}\n\n",
            "a reset and the position after it are one block"
        );
        assert_eq!(comment("ping"), b": ping\n\n");
    }

    #[test]
    fn line_breaks_in_a_value_become_separate_data_lines() {
        assert_eq!(event(None, None, b"a\nb\r\nc\rd"), b"data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    /// Parses a stream the way the HTML standard's EventSource does (for the fields used here).
    fn parse(stream: &[u8]) -> Vec<(Option<String>, Option<String>, String)> {
        let text = String::from_utf8_lossy(stream);
        let mut events = Vec::new();
        let (mut id, mut ev, mut data): (Option<String>, Option<String>, Vec<String>) = (None, None, vec![]);
        for line in text.split('\n') {
            if line.is_empty() {
                if !data.is_empty() {
                    events.push((id.take(), ev.take(), data.join("\n")));
                }
                data.clear();
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => id = Some(value.to_string()),
                "event" => ev = Some(value.to_string()),
                "data" => data.push(value.to_string()),
                _ => {}
            }
        }
        events
    }

    proptest! {
        #[test]
        fn any_data_survives_framing(data in "[^\r]{0,80}", ev in "[A-Za-z0-9_.:-]{1,20}") {
            let framed = event(Some("c1"), Some(&ev), data.as_bytes());
            prop_assert_eq!(parse(&framed), vec![(Some("c1".to_string()), Some(ev), data)]);
        }
    }
}

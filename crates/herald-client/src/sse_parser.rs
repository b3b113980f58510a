//! An incremental `text/event-stream` parser, following the HTML standard's EventSource algorithm.
//!
//! Bytes arrive in arbitrary chunks (a line, or even a `\r\n`, may be split between two), so the parser
//! keeps the unfinished line and the event being built between calls to [`SseParser::feed`]. It implements
//! the parts of the standard a client relies on: `\n`, `\r\n` and `\r` line ends, comments, `data` over
//! several lines, `event`, `id` (which persists from event to event, and is committed even by a block
//! without data, which is how Herald's opening block hands over its cursor), `retry`, a leading BOM, and an
//! unfinished event dropped when the stream ends. It is pure, so it is tested byte by byte; the buffered
//! event size is bounded so a server cannot make the client buffer without end.

/// The default bound on one event (its unfinished line plus its data so far): 16 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event id when the event was dispatched (ids persist until changed), possibly empty.
    pub id: String,
    /// The event type: the `event` field, or `message` without one.
    pub event: String,
    /// The `data` lines joined with `\n`.
    pub data: String,
}

/// Why the stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew past the parser's bound.
    #[error("an SSE event is larger than {max} bytes")]
    TooLarge {
        /// The bound, in bytes.
        max: usize,
    },
}

/// The parser's state between chunks.
#[derive(Debug, Clone)]
pub struct SseParser {
    max_event_bytes: usize,
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to the same line end.
    after_cr: bool,
    first_line: bool,
    event: String,
    data: String,
    id_buffer: String,
    last_event_id: String,
    retry_ms: Option<u64>,
    blocks: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser for a new stream, bounding events at [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser for a new stream, bounding events at `max` bytes.
    pub fn with_max_event_bytes(max: usize) -> Self {
        Self {
            max_event_bytes: max,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            event: String::new(),
            data: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry_ms: None,
            blocks: 0,
        }
    }

    /// The event source's last event id: the `id` in force at the last blank line, what a browser sends
    /// back as `Last-Event-ID`. An `id` line of an event not yet complete does not count.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The last valid `retry` value, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// How many blocks (each ended by a blank line, with or without data) have been read.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Parses the next chunk of the stream, appending every event it completes to `events`.
    pub fn feed(&mut self, chunk: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            self.check_size()?;
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, events);
            self.line = line;
            self.line.clear();
            let skip = match (rest[end], rest.get(end + 1)) {
                (b'\r', Some(b'\n')) => 2,
                (b'\r', None) => {
                    self.after_cr = true;
                    1
                }
                _ => 1,
            };
            rest = &rest[end + skip..];
        }
        self.line.extend_from_slice(rest);
        self.check_size()
    }

    fn check_size(&self) -> Result<(), SseError> {
        match self.line.len() + self.data.len() > self.max_event_bytes {
            true => Err(SseError::TooLarge { max: self.max_event_bytes }),
            false => Ok(()),
        }
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        let mut line = String::from_utf8_lossy(line);
        if std::mem::take(&mut self.first_line) {
            if let Some(stripped) = line.strip_prefix('\u{FEFF}') {
                line = stripped.to_string().into();
            }
        }
        if line.is_empty() {
            return self.dispatch(events);
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => value.clone_into(&mut self.id_buffer),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // A value too large for u64 is ignored like any other invalid one.
                if let Ok(ms) = value.parse() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        self.blocks += 1;
        self.last_event_id.clone_from(&self.id_buffer);
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        let event = if event.is_empty() { "message".to_string() } else { event };
        events.push(SseEvent { id: self.last_event_id.clone(), event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(stream: &[u8]) -> (Vec<SseEvent>, SseParser) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        parser.feed(stream, &mut events).unwrap();
        (events, parser)
    }

    fn event(id: &str, event: &str, data: &str) -> SseEvent {
        SseEvent { id: id.into(), event: event.into(), data: data.into() }
    }

    #[test]
    fn an_event_has_its_id_type_and_data() {
        let (events, _) = parse(b"id: c1\nevent: newTopSeller\ndata: {\"a\":1}\n\n");
        assert_eq!(events, vec![event("c1", "newTopSeller", "{\"a\":1}")]);
    }

    #[test]
    fn an_event_without_a_type_is_a_message() {
        assert_eq!(parse(b"data: 1\n\n").0, vec![event("", "message", "1")]);
    }

    #[test]
    fn data_lines_are_joined_with_newlines() {
        assert_eq!(parse(b"data: a\ndata:b\ndata\ndata:  c\n\n").0, vec![event("", "message", "a\nb\n\n c")]);
    }

    #[test]
    fn crlf_and_lone_cr_end_lines_too() {
        assert_eq!(parse(b"id: x\r\ndata: a\rdata: b\r\n\r\n").0, vec![event("x", "message", "a\nb")]);
    }

    #[test]
    fn comments_are_ignored() {
        let (events, parser) = parse(b": ping\n\n:\ndata: 1\n: more\n\n");
        assert_eq!(events, vec![event("", "message", "1")]);
        assert_eq!(parser.blocks(), 2);
    }

    #[test]
    fn an_id_persists_until_changed() {
        let (events, _) = parse(b"id: a\ndata: 1\n\ndata: 2\n\nid\ndata: 3\n\n");
        assert_eq!(events, vec![event("a", "message", "1"), event("a", "message", "2"), event("", "message", "3")]);
    }

    #[test]
    fn a_block_without_data_commits_its_id_but_dispatches_nothing() {
        let (events, parser) = parse(b"retry: 2000\nid: AQA\n\n");
        assert!(events.is_empty());
        assert_eq!(parser.last_event_id(), "AQA");
        assert_eq!(parser.retry_ms(), Some(2000));
    }

    #[test]
    fn an_id_of_an_unfinished_event_is_not_yet_the_last_event_id() {
        let (_, parser) = parse(b"id: a\n\nid: b\ndata: 1\n");
        assert_eq!(parser.last_event_id(), "a");
    }

    #[test]
    fn an_event_type_does_not_leak_into_the_next_event() {
        let (events, _) = parse(b"event: herald.reset\n\ndata: 1\n\n");
        assert_eq!(events, vec![event("", "message", "1")]);
    }

    #[test]
    fn invalid_retry_and_id_values_and_unknown_fields_are_ignored() {
        let (events, parser) = parse(b"retry: 12a\nretry: 99999999999999999999999\nid: a\0b\nfoo: bar\ndata: 1\n\n");
        assert_eq!(events, vec![event("", "message", "1")]);
        assert_eq!(parser.retry_ms(), None);
    }

    #[test]
    fn only_one_space_after_the_colon_is_removed() {
        assert_eq!(parse(b"data:   x \n\n").0, vec![event("", "message", "  x ")]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        assert_eq!(parse("\u{FEFF}data: 1\n\n".as_bytes()).0, vec![event("", "message", "1")]);
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(parse(b"id: a\ndata: 1\n").0.is_empty());
    }

    #[test]
    fn any_split_into_chunks_gives_the_same_events() {
        let stream = "retry: 2000\r\nid: AQA\r\n\r\n: ping\r\n\r\nid: c1\revent: e\rdata: {\"é\":1}\r\rdata: x\n\n";
        let whole = parse(stream.as_bytes()).0;
        assert_eq!(whole.len(), 2);
        for split in 0..=stream.len() {
            let (a, b) = stream.as_bytes().split_at(split);
            let mut parser = SseParser::new();
            let mut events = Vec::new();
            parser.feed(a, &mut events).unwrap();
            parser.feed(b, &mut events).unwrap();
            assert_eq!(events, whole, "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_events() {
        let stream = b"id: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n";
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for b in stream {
            parser.feed(std::slice::from_ref(b), &mut events).unwrap();
        }
        assert_eq!(events, parse(stream).0);
    }

    #[test]
    fn a_cr_at_the_end_of_a_chunk_followed_by_an_empty_chunk_still_swallows_the_lf() {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in [&b"data: 1\r"[..], b"", b"\n\r", b"\n"] {
            parser.feed(chunk, &mut events).unwrap();
        }
        assert_eq!(events, vec![event("", "message", "1")]);
    }

    #[test]
    fn an_event_larger_than_the_bound_is_an_error() {
        let mut parser = SseParser::with_max_event_bytes(12);
        let mut events = Vec::new();
        assert_eq!(parser.feed(b"data: 12345\n", &mut events), Ok(()));
        assert_eq!(parser.feed(b"data: 6", &mut events), Err(SseError::TooLarge { max: 12 }));
    }

    #[test]
    fn what_herald_proto_frames_this_parser_reads_back() {
        let mut stream = herald_proto::sse::preamble(2000, "AQA", None);
        stream.extend(herald_proto::sse::comment("ping"));
        stream.extend(herald_proto::sse::event(Some("c1"), Some("e"), b"line 1\nline 2"));
        stream.extend(herald_proto::sse::event(Some("c2"), None, b"{}"));
        let (events, parser) = parse(&stream);
        assert_eq!(events, vec![event("c1", "e", "line 1\nline 2"), event("c2", "message", "{}")]);
        assert_eq!(parser.last_event_id(), "c2");
        assert_eq!(parser.retry_ms(), Some(2000));
    }

    #[test]
    fn an_opening_with_a_reset_dispatches_the_reset_with_its_id_and_no_prefix_commits_the_id_alone() {
        let stream = herald_proto::sse::preamble(2000, "AQB", Some(("herald.reset", b"{}")));
        for cut in 0..stream.len() {
            let (events, parser) = parse(&stream[..cut]);
            assert_eq!((events.len(), parser.last_event_id()), (0, ""), "a prefix of {cut} bytes");
        }
        let (events, parser) = parse(&stream);
        assert_eq!(events, vec![event("AQB", "herald.reset", "{}")]);
        assert_eq!(parser.last_event_id(), "AQB");
    }
}

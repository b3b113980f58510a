//! The RESP3 frames a sharded subscription connection exchanges with Redis: commands out (arrays of bulk
//! strings), and any reply in (pushes, errors, `+PONG`, the `HELLO` map). Pure: bytes in, frames out.
//!
//! [`parse`] reads one frame from the start of a buffer, or says more bytes are needed. A frame is bounded
//! ([`MAX_FRAME`], [`MAX_DEPTH`], [`MAX_ELEMENTS`]): Redis never sends more to a subscriber than a message it
//! accepted, and a peer that does is cut off rather than followed into unbounded memory.

use bytes::Bytes;

/// The largest bulk string accepted: Redis's own limit on a string value (`proto-max-bulk-len`).
pub(super) const MAX_FRAME: usize = 512 * 1024 * 1024;
/// The deepest nesting of aggregates accepted (a push holds bulk strings; `HELLO`'s map holds one array).
const MAX_DEPTH: usize = 8;
/// The most elements one aggregate may announce.
const MAX_ELEMENTS: usize = 1 << 20;

/// One RESP3 value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Frame {
    /// `+…`
    Simple(Bytes),
    /// `-…` or `!…` (a bulk error).
    Error(Bytes),
    /// `:…`
    Integer(i64),
    /// `$…` or `=…` (verbatim).
    Bulk(Bytes),
    /// `_`, `$-1` or `*-1`.
    Null,
    /// `*…` or `~…` (a set).
    Array(Vec<Frame>),
    /// `>…`: what Redis sends unasked (messages, subscription confirmations).
    Push(Vec<Frame>),
    /// `%…`, as its keys and values in turn.
    Map(Vec<Frame>),
    /// `,` (double), `#` (boolean), `(` (big number): their text, unread.
    Other(Bytes),
}

/// Why a frame cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Resp3Error {
    #[error("unknown RESP3 type byte {0:#04x}")]
    UnknownType(u8),
    #[error("a RESP3 length or integer that is not a number")]
    BadNumber,
    #[error("a RESP3 frame past the limits (size, nesting or element count)")]
    TooLarge,
    #[error("a RESP3 bulk string not ended by CRLF")]
    Unterminated,
}

/// Reads one frame from the start of `buf`: the frame and how many bytes it took, or `None` when `buf` holds only
/// part of one.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, Resp3Error> {
    let mut at = 0;
    match frame(buf, &mut at, 0)? {
        Some(frame) => Ok(Some((frame, at))),
        None => Ok(None),
    }
}

/// A command as Redis reads it: an array of bulk strings.
pub(super) fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The line starting at `*at` (without its CRLF), moving `*at` past it; `None` if the CRLF has not arrived.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = &buf[*at..];
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    *at += end + 2;
    Some(&rest[..end])
}

fn number(text: &[u8]) -> Result<i64, Resp3Error> {
    std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(Resp3Error::BadNumber)
}

/// A length: `-1` is a null, anything else must be a count within `limit`.
fn length(text: &[u8], limit: usize) -> Result<Option<usize>, Resp3Error> {
    match number(text)? {
        -1 => Ok(None),
        n if n < 0 => Err(Resp3Error::BadNumber),
        n if n as u64 > limit as u64 => Err(Resp3Error::TooLarge),
        n => Ok(Some(n as usize)),
    }
}

fn frame(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Frame>, Resp3Error> {
    if depth > MAX_DEPTH {
        return Err(Resp3Error::TooLarge);
    }
    let Some(&kind) = buf.get(*at) else { return Ok(None) };
    let start = *at;
    *at += 1;
    let Some(head) = line(buf, at) else {
        *at = start;
        return Ok(None);
    };
    let text = Bytes::copy_from_slice(head);
    let read = match kind {
        b'+' => Some(Frame::Simple(text)),
        b'-' => Some(Frame::Error(text)),
        b':' => Some(Frame::Integer(number(head)?)),
        b'_' => Some(Frame::Null),
        b',' | b'#' | b'(' => Some(Frame::Other(text)),
        b'$' | b'=' | b'!' => match length(head, MAX_FRAME)? {
            None => Some(Frame::Null),
            Some(n) => {
                if buf.len() < *at + n + 2 {
                    None
                } else if &buf[*at + n..*at + n + 2] != b"\r\n" {
                    return Err(Resp3Error::Unterminated);
                } else {
                    let body = Bytes::copy_from_slice(&buf[*at..*at + n]);
                    *at += n + 2;
                    Some(if kind == b'!' { Frame::Error(body) } else { Frame::Bulk(body) })
                }
            }
        },
        b'*' | b'~' | b'>' | b'%' => match length(head, MAX_ELEMENTS)? {
            None => Some(Frame::Null),
            Some(n) => {
                let n = if kind == b'%' { n * 2 } else { n };
                let mut items = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    match frame(buf, at, depth + 1)? {
                        Some(item) => items.push(item),
                        None => {
                            *at = start;
                            return Ok(None);
                        }
                    }
                }
                Some(match kind {
                    b'>' => Frame::Push(items),
                    b'%' => Frame::Map(items),
                    _ => Frame::Array(items),
                })
            }
        },
        // An attribute (`|`) annotates the frame after it, which is what the caller wants.
        b'|' => {
            let n = length(head, MAX_ELEMENTS)?.ok_or(Resp3Error::BadNumber)?;
            for _ in 0..n * 2 {
                if frame(buf, at, depth + 1)?.is_none() {
                    *at = start;
                    return Ok(None);
                }
            }
            match frame(buf, at, depth)? {
                Some(annotated) => Some(annotated),
                None => {
                    *at = start;
                    return Ok(None);
                }
            }
        }
        other => return Err(Resp3Error::UnknownType(other)),
    };
    if read.is_none() {
        *at = start;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bytes Redis would send for `frame` (the test's encoder; Herald only ever sends commands).
    fn encode(frame: &Frame, out: &mut Vec<u8>) {
        let aggregate = |out: &mut Vec<u8>, kind: u8, items: &[Frame], n: usize| {
            out.push(kind);
            out.extend_from_slice(format!("{n}\r\n").as_bytes());
            for item in items {
                encode(item, out);
            }
        };
        match frame {
            Frame::Simple(t) => out.extend_from_slice(&[b"+", &t[..], b"\r\n"].concat()),
            Frame::Error(t) => {
                out.extend_from_slice(&[&format!("!{}\r\n", t.len()).into_bytes(), &t[..], b"\r\n"].concat())
            }
            Frame::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Frame::Bulk(b) => {
                out.extend_from_slice(&[&format!("${}\r\n", b.len()).into_bytes(), &b[..], b"\r\n"].concat())
            }
            Frame::Null => out.extend_from_slice(b"_\r\n"),
            Frame::Other(t) => out.extend_from_slice(&[b",", &t[..], b"\r\n"].concat()),
            Frame::Array(items) => aggregate(out, b'*', items, items.len()),
            Frame::Push(items) => aggregate(out, b'>', items, items.len()),
            Frame::Map(items) => aggregate(out, b'%', items, items.len() / 2),
        }
    }

    fn line_text() -> impl Strategy<Value = Bytes> {
        "[a-zA-Z0-9 .:-]{0,20}".prop_map(Bytes::from)
    }

    fn frames() -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            line_text().prop_map(Frame::Simple),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Frame::Error(Bytes::from(b))),
            any::<i64>().prop_map(Frame::Integer),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| Frame::Bulk(Bytes::from(b))),
            Just(Frame::Null),
            "[0-9.]{1,10}".prop_map(|t| Frame::Other(Bytes::from(t))),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Push),
                proptest::collection::vec((inner.clone(), inner), 0..3)
                    .prop_map(|kv| Frame::Map(kv.into_iter().flat_map(|(k, v)| [k, v]).collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_frame_reads_back_whole_and_every_prefix_asks_for_more(frame in frames(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = Vec::new();
            encode(&frame, &mut bytes);
            let whole = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(parse(&bytes), Ok(Some((frame, whole))));
            for cut in 0..whole {
                prop_assert_eq!(parse(&bytes[..cut]), Ok(None), "a prefix of {} bytes", cut);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn what_redis_sends_a_sharded_subscriber_reads_as_expected() {
        let message = b">3\r\n$8\r\nsmessage\r\n$4\r\nlive\r\n$5\r\nhello\r\n";
        let push =
            |items: &[&str]| Frame::Push(items.iter().map(|i| Frame::Bulk(Bytes::from(i.to_string()))).collect());
        assert_eq!(parse(message), Ok(Some((push(&["smessage", "live", "hello"]), message.len()))));
        let moved = b"-MOVED 3999 127.0.0.1:6381\r\n";
        assert_eq!(
            parse(moved),
            Ok(Some((Frame::Error(Bytes::from_static(b"MOVED 3999 127.0.0.1:6381")), moved.len())))
        );
        assert_eq!(parse(b"$-1\r\n"), Ok(Some((Frame::Null, 5))));
        assert_eq!(parse(b"|1\r\n+a\r\n+b\r\n:7\r\n"), Ok(Some((Frame::Integer(7), 16))), "an attribute annotates");
    }

    #[test]
    fn bad_frames_are_refused_not_followed() {
        assert_eq!(parse(b"?x\r\n"), Err(Resp3Error::UnknownType(b'?')));
        assert_eq!(parse(b"$x\r\n"), Err(Resp3Error::BadNumber));
        assert_eq!(parse(b"$3\r\nabcd\r\n"), Err(Resp3Error::Unterminated));
        assert_eq!(parse(b"$999999999999\r\n"), Err(Resp3Error::TooLarge));
        assert_eq!(parse(b"*99999999\r\n"), Err(Resp3Error::TooLarge));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert_eq!(parse(deep.as_bytes()), Err(Resp3Error::TooLarge));
    }

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        assert_eq!(command(&[b"SSUBSCRIBE", b"live:{a}"]), b"*2\r\n$10\r\nSSUBSCRIBE\r\n$8\r\nlive:{a}\r\n");
    }
}

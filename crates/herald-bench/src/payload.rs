//! What every published message carries, so that a subscriber can tell by itself which message it got, from
//! which publisher, in which order, and how long it took: a JSON string
//! `"<step>:<publisher>:<seq>:<sent µs>:xxx…"`, padded to the requested size.
//!
//! It is valid JSON (Herald's `data` must be) and plain text (Nchan stores and sends raw bodies), so both
//! servers carry exactly the same bytes and the subscriber decodes them the same way.

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The load step it was published in (0 for the first).
    pub(crate) step: u32,
    /// The publisher connection that sent it.
    pub(crate) publisher: u32,
    /// 1, 2, 3 … per publisher and channel: a gap or a repeat shows as a jump.
    pub(crate) seq: u64,
    /// When the publish request was sent, in µs since the Unix epoch (every process reads the same clock).
    pub(crate) sent_us: u64,
}

/// The payload for `stamp`, padded with `x` to `size` bytes (never shorter than the stamp itself).
pub(crate) fn encode(stamp: Stamp, size: usize) -> Vec<u8> {
    let mut out = format!("\"{}:{}:{}:{}:", stamp.step, stamp.publisher, stamp.seq, stamp.sent_us).into_bytes();
    let padding = size.saturating_sub(out.len() + 1);
    out.resize(out.len() + padding, b'x');
    out.push(b'"');
    out
}

/// Reads a payload back; `None` when it is not one of ours. Surrounding quotes are optional, so the raw JSON
/// text of Herald's `data` and Nchan's body are read alike.
pub(crate) fn decode(payload: &[u8]) -> Option<Stamp> {
    let text = std::str::from_utf8(payload).ok()?;
    let text = text.strip_prefix('"').unwrap_or(text);
    let mut fields = text.splitn(5, ':');
    let mut next = || fields.next()?.parse::<u64>().ok();
    let (step, publisher, seq, sent_us) = (next()?, next()?, next()?, next()?);
    Some(Stamp { step: u32::try_from(step).ok()?, publisher: u32::try_from(publisher).ok()?, seq, sent_us })
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp { step: 3, publisher: 1, seq: 42, sent_us: 1_764_297_108_123_456 };

    #[test]
    fn a_payload_is_a_json_string_of_exactly_the_size_asked() {
        let payload = encode(STAMP, 100);
        assert_eq!(payload.len(), 100);
        let text: String = serde_json::from_slice(&payload).unwrap();
        assert!(text.starts_with("3:1:42:1764297108123456:xxx"), "{text}");
    }

    #[test]
    fn a_payload_reads_back_with_or_without_its_quotes() {
        let payload = encode(STAMP, 100);
        assert_eq!(decode(&payload), Some(STAMP));
        assert_eq!(decode(&payload[1..payload.len() - 1]), Some(STAMP));
    }

    #[test]
    fn a_size_smaller_than_the_stamp_gives_the_stamp_alone() {
        let payload = encode(STAMP, 4);
        assert_eq!(decode(&payload), Some(STAMP));
        assert_eq!(payload.last(), Some(&b'"'));
    }

    #[test]
    fn anything_else_is_not_a_payload() {
        for other in [&b"hello"[..], b"\"1:2:3\"", b"{\"a\":1}", b"\"1:2:x:4:\"", &[0xff, 0xfe]] {
            assert_eq!(decode(other), None, "{other:?}");
        }
    }
}

//! The two Lua scripts that make Redis a Herald engine, and the text format of a stored message.
//!
//! Each script runs atomically in Redis, so offsets are assigned, histories trimmed and messages announced in
//! one step, whatever the number of nodes publishing at once. Keys of one channel share the hash tag `{channel}`,
//! so both scripts touch one Redis Cluster slot.
//!
//! A channel is two keys: `<prefix>{<channel>}:meta`, a hash with `epoch` and `last` (the newest offset), and
//! `<prefix>{<channel>}:log`, a list of the retained messages, oldest first, each stored as
//! `<time ms>[ <origin>]\n<event>\n<data>`. Offsets are not stored per message: the list's last element has offset
//! `last`. A stored message is announced on the Pub/Sub channel `<prefix>live:{<channel>}` as
//! `<epoch>\n<offset>\n<time ms>[ <origin>]\n<event>\n<data>`. The origin, present only when the publisher
//! attached one (the Pusher protocol does), is a one-line JSON object: `{"s":<sender>,"u":<user id>,"v":1}`, each
//! member only when set (`v`: the data is sent to Pusher clients as a value).

use std::sync::Arc;

use bytes::Bytes;
use herald_proto::{ChannelName, EventName, Message, Position};
use serde::{Deserialize, Serialize};

use crate::encoded::Origin;

/// Stores a message. KEYS: meta, log. ARGV: event, data, history size, history ttl (ms), key expiry (ms), the
/// Pub/Sub channel (`""`: don't announce, the caller announces once replicas have the message), the origin (`""`
/// or `" <json>"`). Returns `{epoch, offset, time}`.
///
/// The epoch is Redis's clock in microseconds when the channel's history began: a channel whose keys were lost
/// (Redis restarted without persistence, or the keys expired) starts again with a new epoch, so every old cursor
/// gets a reset instead of a silent gap.
pub(super) const PUBLISH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', 0)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'last', 1)
local entry = now .. ARGV[7] .. '\n' .. ARGV[1] .. '\n' .. ARGV[2]
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
local cutoff = now - tonumber(ARGV[4])
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head or tonumber(string.match(head, '^%d+')) > cutoff then break end
  redis.call('LPOP', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], epoch .. '\n' .. offset .. '\n' .. entry)
end
return {epoch, offset, now}
";

/// Reads history. KEYS: meta, log. ARGV: mode (`after`, `oldest`, `newest`, `now`), the cursor's epoch and
/// offset (for `after`), N (for `newest`), limit, history ttl (ms). Returns `{}` for a channel with no history,
/// else `{epoch, last, from, reset, {entries…}}`. The start rule is `engine::plan`, written again in Lua: the
/// engine contract tests hold both to the same answers.
pub(super) const READ: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {} end
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[6])
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head or tonumber(string.match(head, '^%d+')) > cutoff then break end
  redis.call('LPOP', KEYS[2])
end
local len = redis.call('LLEN', KEYS[2])
local first = last - len + 1
local mode = ARGV[1]
local from = last + 1
local reset = 0
if mode == 'after' then
  local pe, po = ARGV[2], tonumber(ARGV[3])
  local same = (pe == epoch) or (pe == '0' and po == 0)
  if (not same) or po > last or po + 1 < first then
    from, reset = first, 1
  else
    from = po + 1
  end
elseif mode == 'oldest' then
  from = first
elseif mode == 'newest' then
  from = math.max(first, last + 1 - tonumber(ARGV[4]))
end
local entries = {}
local limit = tonumber(ARGV[5])
if limit > 0 and from <= last then
  entries = redis.call('LRANGE', KEYS[2], from - first, math.min(from - first + limit, len) - 1)
end
return {epoch, last, from, reset, entries}
";

/// Why stored bytes could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("unreadable message in Redis: {0}")]
pub(super) struct Unreadable(pub(super) &'static str);

fn parse_u64(field: &[u8], what: &'static str) -> Result<u64, Unreadable> {
    std::str::from_utf8(field).ok().and_then(|s| s.parse().ok()).ok_or(Unreadable(what))
}

/// The stored form of an [`Origin`].
#[derive(Serialize, Deserialize, Default)]
struct StoredOrigin {
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    sender: Option<String>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(rename = "v", default, skip_serializing_if = "std::ops::Not::not", with = "one")]
    data_as_value: bool,
}

/// A flag stored as `1`.
mod one {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(_: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        u8::deserialize(d).map(|v| v == 1)
    }
}

/// What follows the time on an entry's first line: nothing for a message without origin, else a space and the
/// origin's JSON (which, being JSON text of strings and a number, holds no line break).
pub(super) fn encode_origin(origin: &Origin) -> String {
    if origin.is_empty() {
        return String::new();
    }
    let stored = StoredOrigin {
        sender: origin.sender.as_deref().map(str::to_owned),
        user_id: origin.user_id.as_deref().map(str::to_owned),
        data_as_value: origin.data_as_value,
    };
    // Serialising strings and a number into JSON cannot fail.
    format!(" {}", serde_json::to_string(&stored).unwrap_or_default())
}

fn decode_origin(text: &[u8]) -> Result<Origin, Unreadable> {
    let stored: StoredOrigin = serde_json::from_slice(text).map_err(|_| Unreadable("origin"))?;
    Ok(Origin {
        sender: stored.sender.map(Arc::from),
        user_id: stored.user_id.map(Arc::from),
        data_as_value: stored.data_as_value,
    })
}

/// Reads `<time>[ <origin>]\n<event>\n<data>` at `position`.
pub(super) fn decode_entry(
    channel: &ChannelName,
    position: Position,
    entry: &[u8],
) -> Result<(Message, Origin), Unreadable> {
    let mut parts = entry.splitn(3, |&b| b == b'\n');
    let head = parts.next().unwrap_or_default();
    let (time, origin) = match head.iter().position(|&b| b == b' ') {
        Some(at) => (&head[..at], decode_origin(&head[at + 1..])?),
        None => (head, Origin::default()),
    };
    let time_ms = parse_u64(time, "time")?;
    let event = std::str::from_utf8(parts.next().ok_or(Unreadable("event"))?).map_err(|_| Unreadable("event"))?;
    let event = EventName::any(event).map_err(|_| Unreadable("event"))?;
    let data = Bytes::copy_from_slice(parts.next().ok_or(Unreadable("data"))?);
    Ok((Message { channel: channel.clone(), position, event, data, time_ms }, origin))
}

/// The announcement of a stored message, as the publish script makes it (for a publish that announces only once
/// replicas acknowledged the message).
pub(super) fn announcement(epoch: &str, offset: u64, time_ms: u64, origin: &str, event: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("{epoch}\n{offset}\n{time_ms}{origin}\n{event}\n").into_bytes();
    out.extend_from_slice(data);
    out
}

/// Reads a Pub/Sub announcement `<epoch>\n<offset>\n<time>[ <origin>]\n<event>\n<data>`.
pub(super) fn decode_announcement(channel: &ChannelName, payload: &[u8]) -> Result<(Message, Origin), Unreadable> {
    let mut parts = payload.splitn(3, |&b| b == b'\n');
    let epoch = parse_u64(parts.next().unwrap_or_default(), "epoch")?;
    let offset = parse_u64(parts.next().ok_or(Unreadable("offset"))?, "offset")?;
    decode_entry(channel, Position::new(epoch, offset), parts.next().ok_or(Unreadable("entry"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_announcements_read_back() {
        let channel = ChannelName::new("chat:room").unwrap();
        let (m, origin) =
            decode_announcement(&channel, b"1795833108123456\n7\n1795833108123\nsaid\n{\"t\":\"a\\nb\"}").unwrap();
        assert!(origin.is_empty());
        assert_eq!(m.position, Position::new(1_795_833_108_123_456, 7));
        assert_eq!((m.time_ms, m.event.as_str(), &m.data[..]), (1_795_833_108_123, "said", &b"{\"t\":\"a\\nb\"}"[..]));
        assert!(decode_entry(&channel, Position::default(), b"x\ne\n1").is_err());
        assert!(decode_entry(&channel, Position::default(), b"1\nbad\tevent\n1").is_err());
        assert!(decode_announcement(&channel, b"1\n2").is_err());
        let made = announcement("1795833108123456", 7, 1_795_833_108_123, "", "said", b"{}");
        assert_eq!(made, b"1795833108123456\n7\n1795833108123\nsaid\n{}");
        assert_eq!(decode_announcement(&channel, &made).unwrap().0.position.offset, 7);
    }

    #[test]
    fn an_origin_is_stored_on_the_first_line_and_read_back() {
        let channel = ChannelName::new("app:private-chat").unwrap();
        let origin =
            Origin { sender: Some(Arc::from("12.34")), user_id: Some(Arc::from("u \"1\"\n")), data_as_value: true };
        let head = encode_origin(&origin);
        assert_eq!(head, r#" {"s":"12.34","u":"u \"1\"\n","v":1}"#);
        let entry = format!("1795833108123{head}\nApp\\Events\\Said\n{{}}");
        let (m, back) = decode_entry(&channel, Position::new(1, 1), entry.as_bytes()).unwrap();
        assert_eq!((back, m.event.as_str()), (origin, r"App\Events\Said"));
        assert_eq!(encode_origin(&Origin::default()), "");
        assert!(decode_entry(&channel, Position::default(), b"1 {bad\ne\n1").is_err());
    }
}

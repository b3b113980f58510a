//! The Lua scripts of presence and occupancy in Redis, and the format of a presence announcement.
//!
//! A channel's presence is four keys sharing its hash tag `{<channel>}` (one Redis Cluster slot):
//! `<prefix>{<channel>}:members` (hash: user id → its info), `…:connections` (hash: `<node>/<connection>` → user
//! id), `…:counts` (hash: user id → its connections) and `…:presence_seq` (the channel's presence sequence). Its
//! occupancy is `<prefix>{<channel>}:subscribers` (hash: node → that node's subscribers). Each script changes one
//! channel atomically, so every join, leave and transition is observed by exactly one caller, which is how each
//! webhook is sent once by the cluster. Keys outside the channel's slot are written by these scripts on one
//! Redis only: the index of occupied channels, `<prefix>occupied` (a sorted set read by prefix), the node's index
//! of the channels it holds a share of, `<prefix>node:{<node>}:channels`, and the log of lifecycle events. On a
//! Redis Cluster a script may only touch its channel's slot, so the caller leaves those keys out (each script
//! writes one only when it was given it) and does the writes itself, around the script (`presence/cluster.rs`).
//!
//! A change of members is announced on the channel's Pub/Sub channel (the one its messages use, so it reaches
//! exactly the nodes that have subscribers, in order with them) as `presence\n<seq>\n<join|leave>\n<user id>\n
//! <info>`. A user id has no line break (the hub refuses one), and minified JSON has none either.

use bytes::Bytes;
use herald_proto::ChannelName;

use crate::engine::presence::{Member, PresenceChange, PresenceEvent};

/// What starts a presence announcement on a channel's Pub/Sub channel (a message's starts with a digit).
pub(in crate::engine::redis) const ANNOUNCEMENT: &[u8] = b"presence\n";

/// The functions every script that changes a channel shares. `next_seq`: the next presence sequence of a
/// channel, Redis's clock in microseconds, or one more than the last when that is later; it only increases, even
/// if the key expired (after a day without a change) or was lost. `announce`: a change of members on the channel's
/// Pub/Sub channel. `log_event`: a transition appended to the log of lifecycle events (`redis/events.rs`), when
/// logging is on; by convention a script that logs takes the log and its counter as its last two keys and the
/// log's capacity (0: off) as its last argument.
const NEXT_SEQ: &str = r"
local function next_seq(key)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local seq = math.max(tonumber(redis.call('GET', key) or '0') + 1, now)
  local text = string.format('%.0f', seq)
  redis.call('SET', key, text, 'PX', 86400000)
  return text
end
local function announce(live, seq, change, user, info)
  redis.call('PUBLISH', live, 'presence\n' .. seq .. '\n' .. change .. '\n' .. user .. '\n' .. info)
end
local function log_event(name, channel, user, info)
  local capacity = ARGV[#ARGV]
  if capacity == '0' then return end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local n = redis.call('INCR', KEYS[#KEYS])
  if user then
    redis.call('XADD', KEYS[#KEYS - 1], 'MAXLEN', '~', capacity, '*', 'n', n, 'name', name, 'channel', channel,
      't', now, 'user_id', user, 'user_info', info)
  else
    redis.call('XADD', KEYS[#KEYS - 1], 'MAXLEN', '~', capacity, '*', 'n', n, 'name', name, 'channel', channel, 't', now)
  end
end
";

/// The body of a leave: the connection `field` of the script's keys goes; returns the user and info of a member
/// that left with it, else nothing. KEYS: members, connections, counts, seq, …, log, counter.
const LEAVE_ONE: &str = r"
local function leave_one(field, live, channel)
  local user = redis.call('HGET', KEYS[2], field)
  if not user then return nil end
  redis.call('HDEL', KEYS[2], field)
  if redis.call('HINCRBY', KEYS[3], user, -1) > 0 then return nil end
  redis.call('HDEL', KEYS[3], user)
  local info = redis.call('HGET', KEYS[1], user) or 'null'
  redis.call('HDEL', KEYS[1], user)
  announce(live, next_seq(KEYS[4]), 'leave', user, info)
  log_event('member_removed', channel, user, info)
  return {user, info}
end
";

/// A connection joins. KEYS: members, connections, counts, seq, the node's index of channels, log, counter. ARGV:
/// connection field, user id, info, most members, the Pub/Sub channel, channel, log capacity. Returns `{'full'}`,
/// or `{new (0/1), seq, {user, info, …}}`.
pub(super) fn join() -> String {
    format!(
        "{NEXT_SEQ}{}",
        r"
local user = ARGV[2]
local known = redis.call('HEXISTS', KEYS[1], user) == 1
if not known and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {'full'} end
if redis.call('HSETNX', KEYS[2], ARGV[1], user) == 1 then
  redis.call('HINCRBY', KEYS[3], user, 1)
end
if KEYS[5] then redis.call('SADD', KEYS[5], ARGV[6]) end
local seq
if known then
  seq = redis.call('GET', KEYS[4]) or '0'
else
  redis.call('HSET', KEYS[1], user, ARGV[3])
  seq = next_seq(KEYS[4])
  announce(ARGV[5], seq, 'join', user, ARGV[3])
  log_event('member_added', ARGV[6], user, ARGV[3])
end
return {known and 0 or 1, seq, redis.call('HGETALL', KEYS[1])}
"
    )
}

/// A connection leaves. KEYS: members, connections, counts, seq, log, counter. ARGV: connection field, the
/// Pub/Sub channel, channel, log capacity. Returns `{user, info}` when its user left with it, else `{}`.
pub(super) fn leave() -> String {
    format!("{NEXT_SEQ}{LEAVE_ONE}{}", "\nreturn leave_one(ARGV[1], ARGV[2], ARGV[3]) or {}\n")
}

/// The members. KEYS: members, seq. Returns `{seq, {user, info, …}}`.
pub(super) const MEMBERS: &str = r"
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
";

/// A node's count of a channel's subscribers. KEYS: subscribers, the occupied index, the node's index of
/// channels, log, counter. ARGV: node, count, channel, log capacity. Returns 1 when the channel became occupied,
/// -1 when it was vacated, else 0.
pub(super) fn set_subscribers() -> String {
    format!(
        "{NEXT_SEQ}{}",
        r"
local before = redis.call('HLEN', KEYS[1])
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if KEYS[3] then redis.call('SADD', KEYS[3], ARGV[3]) end
end
local after = redis.call('HLEN', KEYS[1])
if before == 0 and after > 0 then
  if KEYS[2] then redis.call('ZADD', KEYS[2], 0, ARGV[3]) end
  log_event('channel_occupied', ARGV[3])
  return 1
elseif before > 0 and after == 0 then
  if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[3]) end
  log_event('channel_vacated', ARGV[3])
  return -1
end
return 0
"
    )
}

/// A dead node's share of a channel goes: its subscribers and its connections. KEYS: members, connections,
/// counts, seq, subscribers, the occupied index, log, counter. ARGV: node, the Pub/Sub channel, channel, log
/// capacity. Returns `{vacated (0/1), {user, info, …}}` with the members that left.
pub(super) fn reap() -> String {
    format!(
        "{NEXT_SEQ}{LEAVE_ONE}{}",
        r"
local vacated = 0
local left = {}
local prefix = ARGV[1] .. '/'
local fields = redis.call('HKEYS', KEYS[2])
for _, field in ipairs(fields) do
  if string.sub(field, 1, #prefix) == prefix then
    local gone = leave_one(field, ARGV[2], ARGV[3])
    if gone then
      table.insert(left, gone[1])
      table.insert(left, gone[2])
    end
  end
end
if redis.call('HDEL', KEYS[5], ARGV[1]) == 1 and redis.call('HLEN', KEYS[5]) == 0 then
  if KEYS[6] then redis.call('ZREM', KEYS[6], ARGV[3]) end
  log_event('channel_vacated', ARGV[3])
  vacated = 1
end
return {vacated, left}
"
    )
}

/// Whether a node holds anything of a channel (its subscribers or a connection): the half of [`RELEASE`] in the
/// channel's slot, for a Redis Cluster. KEYS: subscribers, connections. ARGV: node. Returns 1 when it does.
pub(super) const HOLDS: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
local prefix = ARGV[1] .. '/'
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(field, 1, #prefix) == prefix then return 1 end
end
return 0
";

/// Drops a channel from a node's index when the node holds nothing of it any more. KEYS: the node's index of
/// channels, subscribers, connections. ARGV: node, channel. Returns 1 when dropped.
pub(super) const RELEASE: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local prefix = ARGV[1] .. '/'
for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
  if string.sub(field, 1, #prefix) == prefix then return 0 end
end
redis.call('SREM', KEYS[1], ARGV[2])
return 1
";

/// A node says it lives. KEYS: the nodes. ARGV: node, `1` to register it. Returns 0 when the node was declared
/// dead meanwhile (and is not registered again), else 1.
pub(super) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] ~= '1' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return 1
";

/// A node stops: it will be declared dead once `grace` has passed. KEYS: the nodes. ARGV: node, ttl (ms), grace
/// (ms).
pub(super) const RETIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now - tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return 1
";

/// Claims the nodes silent for longer than the ttl, so that exactly one caller reaps each: moves them from the
/// nodes to the dead ones, stamped now; also claims again dead nodes whose reaper went silent as long (it died
/// mid-way). KEYS: the nodes, the dead. ARGV: ttl (ms), most nodes. Returns the claimed nodes.
pub(super) const CLAIM_DEAD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local claimed = {}
local function claim(key)
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[2]))) do
    redis.call('ZREM', KEYS[1], node)
    redis.call('ZADD', KEYS[2], now, node)
    table.insert(claimed, node)
  end
end
claim(KEYS[1])
claim(KEYS[2])
return claimed
";

/// Why stored presence could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("unreadable presence in Redis: {0}")]
pub(super) struct Unreadable(pub(super) &'static str);

/// Members from a flat `{user, info, …}` list.
pub(super) fn members(flat: Vec<Vec<u8>>) -> Result<Vec<Member>, Unreadable> {
    flat.chunks(2)
        .map(|pair| match pair {
            [user, info] => member(user, info),
            _ => Err(Unreadable("members")),
        })
        .collect()
}

fn member(user: &[u8], info: &[u8]) -> Result<Member, Unreadable> {
    let user_id = std::str::from_utf8(user).map_err(|_| Unreadable("user id"))?.to_owned();
    Ok(Member { user_id, user_info: Bytes::copy_from_slice(info) })
}

/// A presence sequence's text.
pub(super) fn seq(text: &[u8]) -> Result<u64, Unreadable> {
    std::str::from_utf8(text).ok().and_then(|s| s.parse().ok()).ok_or(Unreadable("sequence"))
}

/// Reads an announcement's body (after [`ANNOUNCEMENT`]): `<seq>\n<join|leave>\n<user id>\n<info>`.
pub(super) fn decode_announcement(
    channel: &ChannelName,
    body: &[u8],
) -> Result<std::sync::Arc<PresenceEvent>, Unreadable> {
    let mut parts = body.splitn(4, |&b| b == b'\n');
    let seq = seq(parts.next().unwrap_or_default())?;
    let change = match parts.next() {
        Some(b"join") => PresenceChange::Join,
        Some(b"leave") => PresenceChange::Leave,
        _ => return Err(Unreadable("change")),
    };
    let user = parts.next().ok_or(Unreadable("user id"))?;
    let info = parts.next().ok_or(Unreadable("info"))?;
    Ok(PresenceEvent::new(channel.clone(), change, member(user, info)?, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_read_back() {
        let channel = ChannelName::new("chat:lobby").unwrap();
        let event = decode_announcement(&channel, b"1795833108123456\njoin\nu42\n{\"name\":\"Ada\"}").unwrap();
        assert_eq!(
            (event.seq, event.change, event.member.user_id.as_str()),
            (1_795_833_108_123_456, PresenceChange::Join, "u42")
        );
        assert_eq!(&event.member.user_info[..], b"{\"name\":\"Ada\"}");
        assert!(decode_announcement(&channel, b"1\nwave\nu\nnull").is_err());
        assert!(decode_announcement(&channel, b"x\njoin\nu\nnull").is_err());
        assert!(decode_announcement(&channel, b"1\nleave\nu").is_err());
    }

    #[test]
    fn member_lists_read_back_in_pairs() {
        let flat = vec![b"a".to_vec(), b"null".to_vec(), b"b".to_vec(), b"{}".to_vec()];
        assert_eq!(members(flat).unwrap().len(), 2);
        assert!(members(vec![b"a".to_vec()]).is_err());
    }
}

//! Presence on the wire: a member, a channel's list of members, and a member's join or leave, as JSON.
//!
//! The same objects appear in every format Herald speaks: the answer of `GET /v1/channels/{channel}/presence`
//! and the SSE event `herald.presence` are [`members`]; the SSE events `herald.join` and `herald.leave` are
//! [`change`]; the WebSocket frames `presence`, `join` and `leave` carry the same fields (`ws.rs`). A member is
//! `{"user_id":"…","user_info":…}`, its info spliced in as the JSON text it was checked and minified as.

use crate::channel::ChannelName;
use crate::json::push_string;

/// A member as the wire shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberText<'a> {
    /// The user's id.
    pub user_id: &'a str,
    /// Its info: minified JSON text (empty is written as `null`).
    pub user_info: &'a [u8],
}

/// Appends `{"user_id":…,"user_info":…}`.
pub fn push_member(out: &mut Vec<u8>, member: &MemberText<'_>) {
    out.extend_from_slice(b"{\"user_id\":");
    push_string(out, member.user_id);
    out.extend_from_slice(b",\"user_info\":");
    if member.user_info.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        out.extend_from_slice(member.user_info);
    }
    out.push(b'}');
}

/// Appends `"members":[…],"count":N`.
pub(crate) fn push_members(out: &mut Vec<u8>, members: &[MemberText<'_>]) {
    out.extend_from_slice(b"\"members\":[");
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_member(out, member);
    }
    out.extend_from_slice(format!("],\"count\":{}", members.len()).as_bytes());
}

/// `{"channel":"c","members":[…],"count":N}`: a channel's members.
pub fn members(channel: &ChannelName, members: &[MemberText<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + members.len() * 48);
    out.extend_from_slice(format!("{{\"channel\":\"{channel}\",").as_bytes());
    push_members(&mut out, members);
    out.push(b'}');
    out
}

/// `{"channel":"c","member":{…}}`: a member that joined or left `channel`.
pub fn change(channel: &ChannelName, member: &MemberText<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + member.user_id.len() + member.user_info.len());
    out.extend_from_slice(format!("{{\"channel\":\"{channel}\",\"member\":").as_bytes());
    push_member(&mut out, member);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn lists_and_changes_have_the_documented_bytes() {
        let ada = MemberText { user_id: "u\"1", user_info: br#"{"name":"Ada"}"# };
        let bob = MemberText { user_id: "u2", user_info: b"" };
        assert_eq!(
            String::from_utf8(members(&ch("chat:lobby"), &[ada, bob])).unwrap(),
            r#"{"channel":"chat:lobby","members":[{"user_id":"u\"1","user_info":{"name":"Ada"}},{"user_id":"u2","user_info":null}],"count":2}"#
        );
        assert_eq!(String::from_utf8(members(&ch("c"), &[])).unwrap(), r#"{"channel":"c","members":[],"count":0}"#);
        assert_eq!(
            String::from_utf8(change(&ch("c"), &bob)).unwrap(),
            r#"{"channel":"c","member":{"user_id":"u2","user_info":null}}"#
        );
    }

    proptest! {
        #[test]
        fn any_user_id_makes_valid_json(user_id in ".{0,40}", n in 0usize..4) {
            let member = MemberText { user_id: &user_id, user_info: br#"[1,"x"]"# };
            let list = members(&ch("c"), &vec![member; n]);
            let parsed: serde_json::Value = serde_json::from_slice(&list).unwrap();
            prop_assert_eq!(parsed["count"].as_u64(), Some(n as u64));
            let one: serde_json::Value = serde_json::from_slice(&change(&ch("c"), &member)).unwrap();
            prop_assert_eq!(one["member"]["user_id"].as_str(), Some(user_id.as_str()));
        }
    }
}

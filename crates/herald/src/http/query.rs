//! Query strings: repeated keys (`channel=a&channel=b`, `since=A&since=B`) and typed values with clear errors.
//!
//! Unknown keys are ignored, so cache-busting parameters added by proxies or old browsers do no harm.
//!
//! A query string comes before any credential is checked, so reading it costs time linear in its length and
//! bounded by the limits: channels are counted as they are deduplicated (through a set) and the count is checked
//! before the next one is read; cursors are capped at the channels a request may name and merged through a map.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use herald_proto::{ChannelName, Cursor, MAX_CURSOR_CHANNELS};

use crate::error::ApiError;

/// A parsed query string; keys and values borrow from it unless they had to be decoded.
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// What `since` asked for.
#[derive(Debug, Default)]
pub struct Since {
    /// The merged cursors (later ones win).
    pub cursor: Option<Cursor>,
    /// `since=latest`: channels the cursor does not name start after their newest message.
    pub latest: bool,
}

impl<'a> Query<'a> {
    /// Parses a raw query string (percent-decoded, `+` as space).
    pub fn parse(raw: Option<&'a str>) -> Self {
        let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes()).collect();
        Self { pairs }
    }

    fn all<'q>(&'q self, key: &'q str) -> impl Iterator<Item = &'q str> + 'q {
        self.pairs.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// The last value of `key`.
    pub fn one(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// Every `channel`, validated and deduplicated in order: at least one, at most `max` (refused as soon as a
    /// channel over `max` is read, the rest unread).
    pub fn channels(&self, max: usize) -> Result<Vec<ChannelName>, ApiError> {
        let mut channels: Vec<ChannelName> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for name in self.all("channel") {
            if seen.contains(name) {
                continue;
            }
            if channels.len() == max {
                return Err(ApiError::bad_request(
                    "too_many_channels",
                    format!("more than {max} channels requested; at most {max} per request"),
                ));
            }
            channels.push(ChannelName::new(name)?);
            seen.insert(name);
        }
        if channels.is_empty() {
            return Err(ApiError::parameter("at least one `channel` is required"));
        }
        Ok(channels)
    }

    /// Every `since`, merged, each cursor of at most [`MAX_CURSOR_CHANNELS`] channels.
    pub fn since(&self) -> Result<Since, ApiError> {
        self.since_at_most(MAX_CURSOR_CHANNELS)
    }

    /// Every `since`, merged and kept for `channels` only (what a poll reads of it); a cursor that names more than
    /// `max` channels (more than a request may name, so not one the server gave) is `invalid_cursor`. Each entry of
    /// each cursor is checked, but costs one lookup and no allocation unless it names one of `channels`.
    pub fn since_for(&self, channels: &[ChannelName], max: usize) -> Result<Since, ApiError> {
        let index: HashMap<&str, usize> = channels.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let mut positions = vec![None; channels.len()];
        let (mut latest, mut given) = (false, false);
        for text in self.all("since") {
            if text == "latest" {
                latest = true;
                continue;
            }
            given = true;
            Cursor::read_entries(text, max, |name, position| {
                if let Some(&i) = index.get(name) {
                    positions[i] = Some(position);
                }
            })?;
        }
        let kept = channels.iter().zip(positions).filter_map(|(c, p)| Some((c.clone(), p?)));
        Ok(Since { cursor: given.then(|| kept.collect()), latest })
    }

    /// Every `since`, merged; a cursor that names more than `max` channels (more than a request may name, so not
    /// one the server gave) is `invalid_cursor`, refused before it is decoded when its length alone says so.
    pub fn since_at_most(&self, max: usize) -> Result<Since, ApiError> {
        let mut latest = false;
        // Every entry of every cursor, merged once at the end: merging cursor by cursor would cost their product.
        let mut entries: Option<Vec<_>> = None;
        for text in self.all("since") {
            if text == "latest" {
                latest = true;
            } else {
                entries.get_or_insert_with(Vec::new).extend(Cursor::decode_at_most(text, max)?.into_entries());
            }
        }
        Ok(Since { cursor: entries.map(Cursor::from_iter), latest })
    }

    /// A whole number `key`, if given.
    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.one(key)
            .map(|v| v.parse::<u64>().map_err(|_| ApiError::parameter(format!("`{key}` must be a whole number ≥ 0"))))
            .transpose()
    }

    /// A boolean `key` (`true`/`false`/`1`/`0`), false when absent.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.one(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(_) => Err(ApiError::parameter(format!("`{key}` must be true or false"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::Position;

    #[test]
    fn channels_are_deduplicated_and_bounded() {
        let q = Query::parse(Some("channel=a&channel=b&channel=a&x=1"));
        assert_eq!(q.channels(10).unwrap().iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(q.channels(1).unwrap_err().code, "too_many_channels");
        assert_eq!(Query::parse(None).channels(10).unwrap_err().code, "invalid_parameter");
        assert_eq!(Query::parse(Some("channel=a%20b")).channels(10).unwrap_err().code, "invalid_channel");
        assert_eq!(Query::parse(Some("channel=orders%2F1")).channels(10).unwrap()[0].as_str(), "orders/1");
    }

    #[test]
    fn channels_over_the_cap_are_refused_before_the_rest_are_read() {
        let q = Query::parse(Some("channel=a&channel=a&channel=b&channel=c&channel=not%20valid"));
        assert_eq!(q.channels(2).unwrap_err().code, "too_many_channels");
        assert_eq!(q.channels(4).unwrap_err().code, "invalid_channel");
    }

    #[test]
    fn a_since_cursor_of_more_channels_than_the_cap_is_invalid() {
        let two = |x: &str, y: &str| {
            [x, y].map(|c| (ChannelName::new(c).unwrap(), Position::new(1, 1))).into_iter().collect::<Cursor>()
        };
        let raw = format!("since={}&since={}", two("a", "b").encode(), two("b", "c").encode());
        let q = Query::parse(Some(&raw));
        assert_eq!(q.since_at_most(1).unwrap_err().code, "invalid_cursor");
        let merged = q.since_at_most(2).unwrap().cursor.unwrap();
        assert_eq!(merged.entries().iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn since_for_keeps_the_last_position_of_each_requested_channel() {
        let at = |c: &str, offset| Cursor::single(ChannelName::new(c).unwrap(), Position::new(1, offset)).encode();
        let raw = format!("since={}&since={}&since={}", at("a", 1), at("b", 2), at("a", 3));
        let q = Query::parse(Some(&raw));
        let wanted = [ChannelName::new("a").unwrap(), ChannelName::new("c").unwrap()];
        let cursor = q.since_for(&wanted, 2).unwrap().cursor.unwrap();
        assert_eq!(cursor.entries(), [(wanted[0].clone(), Position::new(1, 3))]);
        assert_eq!(Query::parse(Some("since=latest")).since_for(&wanted, 2).unwrap().cursor, None);
        let bad = Query::parse(Some("since=AQEDYSBiAAA"));
        assert_eq!(bad.since_for(&wanted, 2).unwrap_err().code, "invalid_cursor");
    }

    #[test]
    fn since_values_merge_and_latest_is_a_keyword() {
        let a = Cursor::single(ChannelName::new("a").unwrap(), Position::new(1, 1)).encode();
        let b = Cursor::single(ChannelName::new("a").unwrap(), Position::new(1, 9)).encode();
        let since = Query::parse(Some(&format!("since={a}&since={b}&since=latest"))).since().unwrap();
        assert!(since.latest);
        assert_eq!(since.cursor.unwrap().get(&ChannelName::new("a").unwrap()), Some(Position::new(1, 9)));
        assert_eq!(Query::parse(Some("since=%%%")).since().unwrap_err().code, "invalid_cursor");
    }

    #[test]
    fn numbers_and_flags_are_checked() {
        let q = Query::parse(Some("limit=5&wait=-1&envelope=yes"));
        assert_eq!(q.number("limit").unwrap(), Some(5));
        assert_eq!(q.number("wait").unwrap_err().code, "invalid_parameter");
        assert_eq!(q.flag("envelope").unwrap_err().code, "invalid_parameter");
        assert!(!q.flag("missing").unwrap());
    }
}

//! Signatures, exactly as the SDKs compute them: HMAC-SHA256 with the app's secret, in lowercase hex.
//!
//! - A private channel's `auth` is `key:hex(hmac(secret, socket_id:channel))`; a presence channel's signs
//!   `socket_id:channel:channel_data` with the exact `channel_data` the client sent.
//! - A user sign-in's `auth` signs `socket_id::user::user_data`.
//! - An HTTP API request signs `METHOD\npath\nQ`, where `Q` is every query parameter but `auth_signature`, keys
//!   lowercased, sorted by key, values decoded, joined as `k=v` with `&`; a body is named by its MD5 (`body_md5`).
//!
//! Every comparison of a signature runs in constant time.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// `hex(HMAC-SHA256(secret, text))`.
pub fn sign(secret: &str, text: &str) -> String {
    // HMAC takes a key of any length; an empty signature, should it not, matches nothing.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(text.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `given` equals `expected` (never empty), in time that does not depend on where they differ.
pub fn same(given: &str, expected: &str) -> bool {
    !expected.is_empty() && given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// What a channel authorization signs: `socket_id:channel`, and `:channel_data` for a presence channel.
pub fn channel_text(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// What a user sign-in signs.
pub fn user_text(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Whether `auth` is `key:signature` of `text` with the app's `key` and `secret`.
pub fn check_auth(auth: &str, key: &str, secret: &str, text: &str) -> bool {
    let Some((given_key, signature)) = auth.split_once(':') else { return false };
    // Both are compared whatever the first gives, so the time tells nothing.
    let key_ok = same(given_key, key);
    let signature_ok = same(signature, &sign(secret, text));
    key_ok & signature_ok
}

/// The `auth` an app's backend gives a client: `key:signature`.
pub fn auth(key: &str, secret: &str, text: &str) -> String {
    format!("{key}:{}", sign(secret, text))
}

/// The text an HTTP API request signs, from its method, path and decoded query pairs.
pub fn api_text<'a>(method: &str, path: &str, query: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(String, &str)> =
        query.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).filter(|(k, _)| k != "auth_signature").collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{method}\n{path}\n{}", query.join("&"))
}

/// The hex MD5 of a body, as `body_md5` names it.
pub fn body_md5(body: &[u8]) -> String {
    hex(&Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The example app of Pusher's documentation.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn a_private_channels_signature_is_pushers_documented_one() {
        assert_eq!(
            auth(KEY, SECRET, &channel_text("1234.1234", "private-foobar", None)),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn a_presence_channels_signature_covers_the_exact_channel_data() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let text = channel_text("1234.1234", "presence-foobar", Some(data));
        assert_eq!(
            auth(KEY, SECRET, &text),
            "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
        let spaced = channel_text("1234.1234", "presence-foobar", Some(&data.replace(':', ": ")));
        assert!(!check_auth(&auth(KEY, SECRET, &text), KEY, SECRET, &spaced), "another spelling is another signature");
    }

    #[test]
    fn a_user_sign_in_signs_socket_id_user_and_user_data() {
        let text = user_text("1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(text, r#"1234.1234::user::{"id":"12345"}"#);
        assert_eq!(sign(SECRET, &text), "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba");
    }

    #[test]
    fn an_api_request_signs_its_sorted_decoded_query() {
        let query = [
            ("name", "foo"),
            ("body_md5", "7b3d404f5cde4a0b9b8fb4789a0098cb"),
            ("auth_version", "1.0"),
            ("auth_signature", "ignored"),
            ("AUTH_KEY", KEY),
            ("auth_timestamp", "1272044395"),
        ];
        let text = api_text("POST", "/apps/3/channels/test_channel/events", query);
        assert_eq!(text, "POST\n/apps/3/channels/test_channel/events\nauth_key=278d425bdf160c739803&auth_timestamp=1272044395&auth_version=1.0&body_md5=7b3d404f5cde4a0b9b8fb4789a0098cb&name=foo");
        // The signature of the example in Pusher's documentation.
        assert_eq!(sign(SECRET, &text), "309fc4be20f04e53e011b00744642d3fe66c2c7c5686f35ed6cd2af6f202e445");
    }

    #[test]
    fn body_md5_is_the_hex_md5() {
        assert_eq!(body_md5(b"asdf"), "912ec803b2ce49e4a541068d495ab570");
        assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn a_wrong_key_or_signature_or_a_malformed_auth_is_refused() {
        let text = channel_text("1.2", "private-a", None);
        let good = auth(KEY, SECRET, &text);
        assert!(check_auth(&good, KEY, SECRET, &text));
        assert!(!check_auth(&good.replacen(KEY, "other-key", 1), KEY, SECRET, &text));
        assert!(!check_auth(&auth(KEY, "another-secret", &text), KEY, SECRET, &text));
        assert!(!check_auth(&good.to_uppercase(), KEY, SECRET, &text));
        for bad in ["", ":", "no-colon", &format!("{KEY}:")] {
            assert!(!check_auth(bad, KEY, SECRET, &text), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn a_signature_checks_only_for_its_own_text(a in ".{0,30}", b in ".{0,30}") {
            let signed = auth(KEY, SECRET, &a);
            prop_assert!(check_auth(&signed, KEY, SECRET, &a));
            prop_assert_eq!(check_auth(&signed, KEY, SECRET, &b), a == b);
        }

        #[test]
        fn the_order_of_query_parameters_does_not_matter(mut pairs in prop::collection::vec(("[a-z_]{1,8}", "[ -~]{0,8}"), 0..6)) {
            pairs.sort();
            pairs.dedup_by(|x, y| x.0 == y.0);
            let forward = api_text("GET", "/apps/1/channels", pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let backward = api_text("GET", "/apps/1/channels", pairs.iter().rev().map(|(k, v)| (k.as_str(), v.as_str())));
            prop_assert_eq!(forward, backward);
        }
    }
}

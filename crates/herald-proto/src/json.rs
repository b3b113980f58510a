//! JSON helpers that keep published data as the publisher wrote it, minus insignificant whitespace.
//!
//! Herald stores `data` as raw JSON text rather than a parsed tree: it is never re-ordered or re-formatted,
//! and the same bytes are spliced into every wire format. Removing whitespace outside strings makes every
//! envelope one line, which SSE `data:` lines and newline-delimited output rely on.

/// Removes whitespace outside strings from `json`, which must already be valid JSON.
pub fn minify(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
            in_string = b == b'"';
        }
    }
    out
}

/// A serde `deserialize_with` helper that keeps `"data": null` apart from a missing `data`: use it with
/// `#[serde(default)]` on an `Option<&RawValue>` field, which is then `Some` whenever the key is present.
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de serde_json::value::RawValue>, D::Error> {
    <&serde_json::value::RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// Writes `s` as a JSON string.
pub fn push_string(out: &mut Vec<u8>, s: &str) {
    // Serialising a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    #[test]
    fn minify_keeps_strings_and_key_order() {
        let input = br#" { "b" : [1, 2 ,"a \" b\\" ], "a":{ "x y":null } } "#;
        assert_eq!(minify(input), br#"{"b":[1,2,"a \" b\\"],"a":{"x y":null}}"#);
    }

    fn json_values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,10}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn minify_preserves_the_value_and_leaves_no_newline(value in json_values()) {
            let pretty = serde_json::to_vec_pretty(&value).unwrap();
            let small = minify(&pretty);
            prop_assert_eq!(&small, &serde_json::to_vec(&value).unwrap());
            prop_assert!(!small.contains(&b'\n'));
        }
    }
}

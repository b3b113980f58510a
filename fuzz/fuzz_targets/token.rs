//! Subscriber tokens: any text is refused or accepted without a panic, with an HS256 key configured (the
//! signature check runs on whatever the header and payload say).
#![no_main]

use herald::auth::jwt::{TokenRules, VerifyingKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(key) = VerifyingKey::hs256(b"fuzz-secret-fuzz-secret-fuzz-secret!") else { return };
    let rules = TokenRules { keys: vec![key], ..TokenRules::default() };
    let _ = rules.verify(text, 1_800_000_000);
});

//! Channel and event names, and channel patterns: validation never panics, a valid channel name needs no JSON
//! escaping, and a pattern without `*` reaches exactly the channel it spells.
#![no_main]

use herald::auth::patterns::Pattern;
use herald_proto::{ChannelName, EventName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (a, b) = input;
    let _ = EventName::new(a);
    let _ = EventName::any(a);
    if let Ok(channel) = ChannelName::new(a) {
        assert_eq!(serde_json::to_string(channel.as_str()).ok(), Some(format!("\"{a}\"")));
        if let Ok(pattern) = Pattern::new(b) {
            let matched = pattern.matches(&channel);
            if !b.contains('*') {
                assert_eq!(matched, a == b);
            }
        }
    }
});

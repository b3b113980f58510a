//! Query strings as the transports read them: channels, cursors, numbers and flags either parse or become an
//! API error, whatever the bytes.
#![no_main]

use herald::http::query::Query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let query = Query::parse(Some(raw));
    let _ = query.channels(100);
    let _ = query.since();
    for key in ["last", "limit", "wait"] {
        let _ = query.number(key);
    }
    let _ = query.flag("envelope");
    let _ = query.one("token");
});

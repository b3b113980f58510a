//! The cursor decoder: any text is a cursor or a `CursorError`, and a decoded cursor re-encodes to text that
//! decodes to the same cursor.
#![no_main]

use herald_proto::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(cursor) = Cursor::decode(text) {
        assert_eq!(Cursor::decode(&cursor.encode()).as_ref(), Ok(&cursor));
    }
});

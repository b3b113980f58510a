//! The config file: any TOML document is a validated configuration or a `ConfigError` naming a key. Key files
//! are not read here (`Config::from_toml` reads none), so a document naming `/dev/zero` cannot hang the target.
#![no_main]

use herald::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = Config::from_toml(text);
});

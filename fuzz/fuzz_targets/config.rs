//! Feeds arbitrary text to the TOML configuration parser and the `wg-quick` importer.
//!
//! Neither may panic, and whatever the importer accepts must load as a configuration.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use meshtun::config::{import_wg_quick, Config};

fuzz_target!(|text: &str| {
    // Relative key-file paths resolve into a directory that does not exist.
    let _ = Config::parse(text, Path::new("/nonexistent/meshtun-fuzz/wg0.toml"));
    if let Ok(toml) = import_wg_quick(text, Path::new("/nonexistent/meshtun-fuzz/wg0.conf")) {
        if let Err(err) = Config::parse(&toml, Path::new("/nonexistent/meshtun-fuzz/wg0.toml")) {
            panic!("an imported configuration does not load: {err}\n{toml}");
        }
    }
});

//! The YAML loader alone: a document with positions, or a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        steprunner_fuzz::yaml(text);
    }
});

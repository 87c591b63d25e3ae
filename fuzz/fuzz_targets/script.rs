//! A script shape through the interpolation allowlist, then run: no allowed shape may
//! let a hostile value run as code (see `steprunner_fuzz::script`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        steprunner_fuzz::script(text);
    }
});

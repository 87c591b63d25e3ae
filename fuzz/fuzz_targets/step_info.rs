//! Step info: the `--info` file's text, and the same bytes as `--memory`,
//! `--cpus`, `--set` and `--step` flags.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        steprunner_fuzz::step_info(text);
        steprunner_fuzz::step_flags(text);
    }
});

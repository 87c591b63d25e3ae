//! A manifest through load + validate + render: a plan, or located errors.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use steprunner::step_info::StepInfo;

fuzz_target!(|data: &[u8]| {
    static STEP: OnceLock<StepInfo> = OnceLock::new();
    // `runner` refuses non-UTF-8 files before parsing; so does this target.
    if let Ok(text) = std::str::from_utf8(data) {
        steprunner_fuzz::manifest(text, STEP.get_or_init(steprunner_fuzz::step));
    }
});

#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_locator`.

use dprepo_repo_format::fuzzing::fuzz_locator;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_locator), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_locator, data);
});

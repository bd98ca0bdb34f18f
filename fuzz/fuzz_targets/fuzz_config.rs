#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_config`.

use dprepo_repo_format::fuzzing::fuzz_config;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_config), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_config, data);
});

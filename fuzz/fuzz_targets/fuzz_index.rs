#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_index`.

use dprepo_repo_format::fuzzing::fuzz_index;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_index), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_index, data);
});

#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_blob`.

use dprepo_repo_format::fuzzing::fuzz_blob;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_blob), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_blob, data);
});

#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_manifest`.

use dprepo_repo_format::fuzzing::fuzz_manifest;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_manifest), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_manifest, data);
});

#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_repository`.

use dprepo_repo_format::fuzzing::fuzz_repository;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_repository), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_repository, data);
});

#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_key_file`.

use dprepo_repo_format::fuzzing::fuzz_key_file;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_key_file), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_key_file, data);
});

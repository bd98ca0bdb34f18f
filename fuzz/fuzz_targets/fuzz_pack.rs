#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_pack`.

use dprepo_repo_format::fuzzing::fuzz_pack;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_pack), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_pack, data);
});

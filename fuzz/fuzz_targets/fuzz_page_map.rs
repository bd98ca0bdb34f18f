#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_page_map`.

use dprepo_repo_format::fuzzing::fuzz_page_map;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_page_map), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_page_map, data);
});

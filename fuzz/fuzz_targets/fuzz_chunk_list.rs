#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_chunk_list`.

use dprepo_repo_format::fuzzing::fuzz_chunk_list;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_chunk_list), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_chunk_list, data);
});

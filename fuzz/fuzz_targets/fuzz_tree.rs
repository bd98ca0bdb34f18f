#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_tree`.

use dprepo_repo_format::fuzzing::fuzz_tree;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_tree), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_tree, data);
});

#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_stream_formats`.

use dprepo_repo_format::fuzzing::fuzz_stream_formats;

libfuzzer_sys::fuzz_target!(init: dprepo_fuzz::warm_up(fuzz_stream_formats), |data: &[u8]| {
    dprepo_fuzz::run_bounded(fuzz_stream_formats, data);
});

#![no_main]
//! See `dprepo_repo_format::fuzzing::fuzz_manifest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dprepo_fuzz::run_bounded(dprepo_repo_format::fuzzing::fuzz_manifest, data);
});

//! `cargo +nightly fuzz run token_file`: see `wsproxy::fuzzing::token_file` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsproxy::fuzzing::token_file(data));

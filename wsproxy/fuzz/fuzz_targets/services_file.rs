//! `cargo +nightly fuzz run services_file`: see `wsproxy::fuzzing::services_file` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsproxy::fuzzing::services_file(data));

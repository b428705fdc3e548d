//! `cargo +nightly fuzz run relay_session`: see `wsproxy::fuzzing::relay_session` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsproxy::fuzzing::relay_session(data));

//! `cargo +nightly fuzz run handshake`: see `wsproxy::fuzzing::handshake` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsproxy::fuzzing::handshake(data));

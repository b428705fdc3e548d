//! `cargo +nightly fuzz run frame_decoder`: see `wsproxy::fuzzing::frame_decoder` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsproxy::fuzzing::frame_decoder(data));

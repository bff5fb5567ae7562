//! Fuzz target `frame`: see [`ddf_fuzz::proto::frame`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::proto::frame(data));

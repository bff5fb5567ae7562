//! Fuzz target `hello`: see [`ddf_fuzz::proto::hello`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::proto::hello(data));

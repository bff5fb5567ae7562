//! Fuzz target `control_response`: see [`ddf_fuzz::proto::control_response`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::proto::control_response(data));

//! Fuzz target `control_request`: see [`ddf_fuzz::proto::control_request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::proto::control_request(data));

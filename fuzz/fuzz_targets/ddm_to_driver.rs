//! Fuzz target `ddm_to_driver`: see [`ddf_fuzz::proto::ddm_to_driver`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::proto::ddm_to_driver(data));

//! Fuzz target `driver_to_ddm`: see [`ddf_fuzz::proto::driver_to_ddm`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::proto::driver_to_ddm(data));

//! Fuzz target `vbus_state`: see [`ddf_fuzz::vbus::state`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::vbus::state(data));

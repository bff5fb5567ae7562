//! Fuzz target `vbus_ctl`: see [`ddf_fuzz::vbus::ctl`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::vbus::ctl(data));

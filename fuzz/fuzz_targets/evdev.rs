//! Fuzz target `evdev`: see [`ddf_fuzz::input::evdev`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::input::evdev(data));

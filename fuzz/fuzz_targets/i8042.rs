//! Fuzz target `i8042`: see [`ddf_fuzz::input::i8042`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::input::i8042(data));

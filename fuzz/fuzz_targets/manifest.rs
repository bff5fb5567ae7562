//! Fuzz target `manifest`: see [`ddf_fuzz::manifest::manifest`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::manifest::manifest(data));

//! Fuzz target `rules`: see [`ddf_fuzz::policy::rules`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::policy::rules(data));

//! Fuzz target `permissions`: see [`ddf_fuzz::policy::permissions`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::policy::permissions(data));

//! Fuzz target `acl`: see [`ddf_fuzz::policy::acl`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddf_fuzz::policy::acl(data));

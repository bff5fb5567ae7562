//! The checks behind ddf's fuzz targets, one function per target.
//!
//! Every decoder in ddf that reads bytes from another process or from a
//! file has a target here (`fuzz_targets/NAME.rs` calls `NAME` below). A
//! target feeds the fuzzer's bytes to the decoder the way the program does,
//! and checks more than "it does not panic" where that is cheap: a value
//! that decodes re-encodes to bytes that decode to the same value (round
//! trip), and the answers of the decoder agree with what its documentation
//! promises. A failed check panics, which libFuzzer reports as a crash.
//!
//! [`seeds`] makes the corpus seeds in `fuzz/corpus/` from the project's
//! own encoders (`cargo run --example make-seeds`).

pub mod input;
pub mod manifest;
pub mod policy;
pub mod proto;
pub mod seeds;
pub mod vbus;

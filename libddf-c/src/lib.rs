//! # libddf.so.0: the C API of ddf
//!
//! This crate wraps the Rust library `ddf` in a stable C ABI, so that
//! drivers and clients can be written in C and linked dynamically against
//! `libddf.so.0` (the paper's future work: "the DDF's libraries as shared
//! objects ... so that drivers take advantage of updated libraries without
//! being rebuilt"). The header is `include/ddf.h`, generated from this
//! crate by cbindgen (`tests/header.rs` fails when the checked-in header
//! is not what the sources generate).
//!
//! | module     | what it wraps |
//! |------------|---------------|
//! | [`driver`] | libDriver's runtime: a table of C operations served by `ddf::driver::run`, and what a callback may do with its context |
//! | [`reply`]  | deferred replies: a read, write or ioctl answered now or later, from any thread |
//! | [`client`] | libDDM (`find`, `tree`) and libDriver's client proxy (`ddf_connect_device`) |
//! | [`dma`]    | libMem's DMA memory: the region ddm granted a driver, its segments, bus addresses |
//! | [`log`]    | logging into ddm's log |
//!
//! ## The rules at the boundary
//!
//! - Errors are negative `errno` values; success is 0 (or a count).
//! - No Rust panic crosses the boundary: every entry point runs its body
//!   under `catch_unwind`; a panic inside the library is logged and answered
//!   `-EIO` (or, in `ddf_driver_run`, ends the run with exit code 1).
//! - Nothing C passes in is trusted beyond what the header promises.
//!   Handles (`ddf_reply`, `ddf_waker`, `ddf_client`, `ddf_ddm`,
//!   `ddf_nodes`) are not pointers to library memory but numbers the
//!   library looks up, never reused: a handle that was freed, answered or
//!   never given out is recognised. Breaking a rule the header states (such
//!   a handle, a NULL where the header forbids it, a context used outside
//!   its callback, a callback returning something other than 0 or a
//!   negative errno) is an API violation: the library logs what was
//!   violated, where, and ends the process with `abort()`. A driver that
//!   breaks the API is thus a crashed driver to ddm, which logs and
//!   restarts it; it never takes ddm down.
//!
//! The shared object exports only the `ddf_` functions of this crate, each
//! at the symbol version of the release that added it (`ddf.map`): a later
//! library adds symbols at a new version and keeps the old ones, so a driver
//! built against 0.1 runs on any later `libddf.so.0`.

#![warn(missing_docs, missing_debug_implementations)]
// The C names are the API.
#![allow(non_camel_case_types)]

pub mod client;
pub mod dma;
pub mod driver;
mod ffi;
mod handles;
pub mod log;
pub mod reply;

use std::ffi::{c_char, CStr};

/// The library's version, as a C string.
const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => panic!("the crate version has a NUL byte"),
};

/// The version of the libddf that is loaded (for example `"0.1.0"`), which
/// may be newer than the one the program was built against.
///
/// Returns a static string; never NULL. Any thread.
#[no_mangle]
pub extern "C" fn ddf_version() -> *const c_char {
    VERSION.as_ptr()
}

/// A message saying why the last failed `ddf_` call of this thread failed
/// (for example the DDM's words when it refused a connection), or NULL if
/// there is none.
///
/// The string belongs to the library and stays valid until the next `ddf_`
/// call on this thread. Any thread.
#[no_mangle]
pub extern "C" fn ddf_last_error() -> *const c_char {
    ffi::last_error()
}

//! # libddf: the libraries of the ddf device driver framework
//!
//! ddf runs every device driver as its own isolated process and shows the
//! devices as files under a FUSE mount (`/ddf`) served by the device driver
//! manager, `ddm`. This crate holds the libraries that the paper the project
//! grows from (Grim & Blythe, "A User-Space Device Driver Framework") names,
//! one module each:
//!
//! | paper     | module       | what it is here |
//! |-----------|--------------|-----------------|
//! | libIPC    | [`ipc`]      | framed, typed messages over `SOCK_SEQPACKET` Unix sockets, with fd passing and peer credentials |
//! | libDDM    | [`ddm`]      | the DDM proxy: the control-socket client `ddmctl` and programs use |
//! | libDriver | [`driver`]   | the [`driver::Driver`] trait and the runtime that serves a driver from its request FIFO |
//! | libMem    | [`mem`]      | sealed memfd buffers granted by descriptor, and the DMA memory the DDM grants a driver |
//! | libIO     | [`io`]       | port I/O behind a trait: a real x86 backend behind `ioperm`, and an emulated port space |
//!
//! [`params`] turns a driver's `key = value` parameters into its own typed
//! configuration. [`input`] holds what input drivers and their clients share: the evdev
//! record, key codes, and the US keyboard layout both ways. [`testing`] is a
//! stand-in for the DDM, to test a driver process over the real protocol.
//!
//! [`ring`] is the fast path: calls through shared memory, with bounded
//! spinning, beside the socket.
//!
//! The messages themselves live in [`proto`], in one place, so that the wire
//! format can be read (and is pinned by tests) without reading the transport.
//!
//! Nothing here panics on input from a peer: every frame is bounded and
//! validated before it is decoded, and a bad frame is an error for that peer.

#![warn(missing_docs, missing_debug_implementations)]

pub mod ddm;
pub mod driver;
pub mod input;
pub mod io;
pub mod ipc;
pub mod mem;
pub mod params;
pub mod proto;
pub mod ring;
pub mod testing;

pub use proto::Errno;

/// An error and its causes on one line, `outer: cause: cause`, for messages
/// to people and log lines.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

//! `ddm_fs`: ddf's device driver manager, `ddm`, as a library, and the
//! command line `ddmctl` beside it.
//!
//! The DDM starts every driver as its own process, shows their devices as
//! files under a FUSE mount (`/ddf` by default; the root is the null bus),
//! turns file operations on those files into libDriver calls, and answers
//! `ddmctl` on its control socket. See `ARCHITECTURE.md` and ddm(8).
//!
//! The modules, from the bottom up (each uses only those above it in this
//! list; [`core`] uses none of the layers below it):
//!
//! | module | what |
//! | --- | --- |
//! | [`sync`] | locks that recover from poisoning and check the lock order |
//! | [`ids`] | inodes, file handles, instance ids: each a type of its own |
//! | [`tree`], [`manifest`] | plain data: the device tree, driver manifests |
//! | [`dma`] | DMA memory for drivers: huge pages, pinned, their physical addresses, the budget |
//! | [`reply`] | how the core answers a caller without knowing FUSE |
//! | [`conn`], [`fast`] | one incarnation's link: requests in flight, the FIFO; the ring and its spinning |
//! | [`core`] | the state machine: instances, registration, open files, answers |
//! | [`interrupt`] | parked and waiting calls whose caller was signalled end with `EINTR` |
//! | [`sandbox`], [`spawn`] | starting driver processes, confined |
//! | [`supervise`] | reaping, the restart policy, quarantine, the watchdog |
//! | [`plug`] | the plugin manager (manifests' `[match]`), load/unload/rescan/find |
//! | [`fs`] | the FUSE front end (`fuser::Filesystem`) |
//! | [`control`] | the control socket, with SO_PEERCRED rights, and the direct-link broker |

#![warn(missing_docs, missing_debug_implementations)]

pub mod conn;
pub mod control;
pub mod core;
pub mod dma;
pub mod fast;
pub mod fs;
pub mod ids;
pub mod interrupt;
pub mod manifest;
pub mod plug;
pub mod reply;
pub mod sandbox;
pub mod spawn;
pub mod supervise;
pub mod sync;
pub mod tree;

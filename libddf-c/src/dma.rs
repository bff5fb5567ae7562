//! DMA memory from C: the region ddm granted a driver whose manifest has a
//! `[dma]` table (`ddf::mem::DmaRegion`), its scatter list, and its helpers.
//!
//! The region is mapped for the whole run: `ddf_dma_info::addr` stays valid
//! until `ddf_driver_run` returns, from any thread. The functions below ask
//! the runtime's context, so they are called from a callback, as every
//! context function is. What is guaranteed is ddf-driver(7)'s "DMA memory":
//! every page is physically contiguous, the pages are pinned (or locked only,
//! `pinned` 0), the addresses are physical addresses, which are bus
//! addresses only without an IOMMU.

use std::ffi::{c_int, c_void};

use ddf::mem::{DmaRegion, MemError};

use crate::driver::{ddf_ctx, with_ctx};
use crate::ffi::{guard, violation};

/// The DMA memory ddm granted this driver (see `ddf_dma`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ddf_dma_info {
    /// Where it is mapped in this process, read-write: valid until
    /// `ddf_driver_run` returns, from any thread.
    pub addr: *mut c_void,
    /// Its size in bytes (a whole number of pages).
    pub len: usize,
    /// The size of its pages; each page is physically contiguous.
    pub page_size: usize,
    /// How many segments it has: one per page (see `ddf_dma_segment_at`).
    pub segments: usize,
    /// 1 if ddm holds the pages with a long-term pin (neither swapped nor
    /// migrated), 0 if they are locked only.
    pub pinned: c_int,
}

/// One physically contiguous piece of the DMA memory (see
/// `ddf_dma_segment_at`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ddf_dma_segment {
    /// Its offset in the region.
    pub offset: usize,
    /// Its physical address: the bus address a device is given, without an
    /// IOMMU.
    pub addr: u64,
    /// Its length in bytes.
    pub len: usize,
}

/// Runs `f` on the region of the callback's context; `-ENOENT` without one.
fn with_region(func: &'static str, ctx: *mut ddf_ctx, f: impl FnOnce(&DmaRegion) -> c_int) -> c_int {
    guard(func, -libc::EIO, || {
        with_ctx(func, ctx, |ctx, _| match ctx.dma() {
            Some(region) => f(region),
            None => {
                crate::ffi::set_last_error(&format!("{func}: no DMA memory (the manifest has no [dma] table)"));
                -libc::ENOENT
            }
        })
    })
}

/// `-ERANGE` for an offset or length outside the region.
fn range(func: &str, e: MemError) -> c_int {
    crate::ffi::set_last_error(&format!("{func}: {e}"));
    -libc::ERANGE
}

/// Fills `*info` with where the driver's DMA memory is mapped, its size,
/// page size, number of segments and whether it is pinned. Returns 0, or
/// `-ENOENT` if the driver has none (its manifest has no `[dma]` table).
/// Runtime thread, in a callback. API violations: `ctx` or `info` NULL.
///
/// # Safety
/// `info` points to a writable `struct ddf_dma_info`.
#[no_mangle]
pub unsafe extern "C" fn ddf_dma(ctx: *mut ddf_ctx, info: *mut ddf_dma_info) -> c_int {
    const F: &str = "ddf_dma";
    if info.is_null() {
        violation(F, format_args!("info is NULL"));
    }
    with_region(F, ctx, |r| {
        let out = ddf_dma_info {
            addr: r.as_ptr().cast(),
            len: r.len(),
            page_size: r.page_size(),
            segments: r.segments().len(),
            pinned: c_int::from(r.is_pinned()),
        };
        // SAFETY: non-NULL, and writable as the header requires.
        unsafe { info.write(out) };
        0
    })
}

/// Fills `*segment` with segment `index` of the DMA memory (in the
/// region's order: its offset, physical address and length). Returns 0,
/// `-ENOENT` if the driver has no DMA memory, `-ERANGE` if `index` is not
/// below `ddf_dma_info::segments`. Runtime thread, in a callback. API
/// violations: `ctx` or `segment` NULL.
///
/// # Safety
/// `segment` points to a writable `struct ddf_dma_segment`.
#[no_mangle]
pub unsafe extern "C" fn ddf_dma_segment_at(ctx: *mut ddf_ctx, index: usize, segment: *mut ddf_dma_segment) -> c_int {
    const F: &str = "ddf_dma_segment_at";
    if segment.is_null() {
        violation(F, format_args!("segment is NULL"));
    }
    with_region(F, ctx, |r| match r.segments().get(index) {
        Some(s) => {
            // SAFETY: non-NULL, and writable as the header requires.
            unsafe { segment.write(ddf_dma_segment { offset: s.offset, addr: s.addr, len: s.len }) };
            0
        }
        None => {
            crate::ffi::set_last_error(&format!("{F}: segment {index} of {}", r.segments().len()));
            -libc::ERANGE
        }
    })
}

/// Stores in `*addr` the bus address of the byte at `offset` in the DMA
/// memory. Returns 0, `-ENOENT` if the driver has no DMA memory, `-ERANGE`
/// if `offset` is not inside it. Runtime thread, in a callback. API
/// violations: `ctx` or `addr` NULL.
///
/// # Safety
/// `addr` points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn ddf_dma_bus_addr(ctx: *mut ddf_ctx, offset: usize, addr: *mut u64) -> c_int {
    const F: &str = "ddf_dma_bus_addr";
    if addr.is_null() {
        violation(F, format_args!("addr is NULL"));
    }
    with_region(F, ctx, |r| match r.bus_addr(offset) {
        Ok(a) => {
            // SAFETY: non-NULL, and writable as the header requires.
            unsafe { addr.write(a) };
            0
        }
        Err(e) => range(F, e),
    })
}

/// Whether the `len` bytes at `offset` in the DMA memory are physically
/// contiguous (one bus address and a length describe them to a device):
/// 1 if they are, 0 if not, `-ENOENT` if the driver has no DMA memory,
/// `-ERANGE` if they are not all inside it. Runtime thread, in a callback.
/// API violations: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_dma_contiguous(ctx: *mut ddf_ctx, offset: usize, len: usize) -> c_int {
    const F: &str = "ddf_dma_contiguous";
    with_region(F, ctx, |r| match r.is_contiguous(offset, len) {
        Ok(yes) => c_int::from(yes),
        Err(e) => range(F, e),
    })
}

//! libMem: bulk memory between processes, without copies where possible.
//!
//! The paper's libMem copies large slabs between processes and names
//! DMA-able allocation as future work. On Linux we can do better than
//! copying: [`SharedBuf`] is shared memory. A `memfd` of a fixed size, mapped
//! read-write in every process that holds it, **sealed** against shrinking
//! and growing. It is granted to another process by passing its file
//! descriptor over a [`crate::ipc::Channel`] (`SCM_RIGHTS`), never by a path:
//! `chan.send(&header, &[], &[buf.grant()])` on one side,
//! [`SharedBuf::accept`]`(frame.fds.remove(0), len)` on the other. The
//! receiver verifies the descriptor before it maps it (a memfd, the size
//! seals present, the agreed size), so a hostile peer can neither hand over
//! something else nor shrink the file under the mapping later (which would
//! make every access past the new end a `SIGBUS` in the receiver).
//!
//! Copies between address spaces (`process_vm_readv(2)`) are not offered:
//! they need the right to ptrace the peer, which a sandboxed driver running
//! as its own user never has; bulk data moves through shared memory instead.
//!
//! ## The zero-copy idea
//!
//! Bulk data (a 1 MiB read of `/ddf/ram0`) should not travel through the
//! driver's socket at all. There are two ways, and the memfd serves both,
//! which is why a driver keeps its memfd reachable ([`SharedBuf::grant`],
//! [`SharedBuf::try_clone_fd`]):
//!
//! 1. shared memory between the DDM and the driver: the driver grants the DDM
//!    a [`SharedBuf`] once, and requests then carry only offsets and lengths;
//!    the bytes are copied once, by the DDM, between the buffer and the FUSE
//!    request;
//! 2. FUSE passthrough: the DDM registers the memfd as the backing file of
//!    an open file, and the kernel serves reads and writes from it without
//!    waking the DDM or the driver.
//!
//! The same memfd is what a driver leaves in the DDM's state store, so that
//! its next incarnation gets its memory back after a crash
//! ([`SharedBuf::accept`] again, in the new process).
//!
//! ## Shared memory and Rust's aliasing rules
//!
//! Memory that another process maps can change at any moment, whatever this
//! process holds. A `&[u8]` into it would promise the compiler that it does
//! not, so [`SharedBuf`] does not hand out references by default: it copies
//! in and out ([`SharedBuf::read_at`], [`SharedBuf::write_at`]) through raw
//! pointers. A peer writing at the same time makes the bytes read
//! unspecified (torn), never undefined behaviour for this process: `u8` has
//! no invalid values, and no Rust reference to the region exists. Zero-copy
//! users that can guarantee quiet memory (a protocol that hands ownership of
//! a region back and forth) use the `unsafe` [`SharedBuf::as_slice`] and
//! [`SharedBuf::as_mut_slice`], whose `# Safety` sections say what they must
//! guarantee.
//!
//! ## DMA memory
//!
//! A driver of DMA-capable hardware needs memory the device can address:
//! pages that stay where they are in physical memory, and their physical
//! addresses. Both need privilege, which a sandboxed driver does not have,
//! so the DDM does it for it: a driver whose manifest has a `[dma]` table
//! (`bytes = "4M"`, `contiguous = "2M"`) is granted a [`DmaRegion`] at start
//! ([`crate::driver::Context::dma`]). It is **the one way to get DMA memory
//! in ddf.** What it promises, and what not:
//!
//! - **Contiguity.** The region is made of pages of
//!   [`DmaRegion::page_size`] bytes (huge pages of 2 MiB, or the 4 KiB base
//!   page when the manifest accepts page-sized segments with
//!   `contiguous = "4K"` and no huge page could be had). Each page is
//!   physically contiguous, so every run of `contiguous` bytes that starts
//!   at a multiple of `contiguous` is. Pages that happen to be physically
//!   adjacent make longer runs ([`DmaRegion::contiguous_len`] says how long),
//!   but nothing promises that.
//! - **Addresses.** [`DmaRegion::segments`] is the scatter list: one
//!   segment per page, its physical address and length, in the region's
//!   order; [`DmaRegion::bus_addr`] translates an offset. Physical address
//!   is bus address only **without an IOMMU** (or with one in passthrough
//!   mode), which is the case this serves. With VFIO and an IOMMU a device
//!   would see I/O virtual addresses that the IOMMU maps; ddf does not do
//!   that.
//! - **Staying put.** The DDM faults every page in, locks it, and holds it
//!   with a long-term pin (the kernel's `FOLL_LONGTERM`, through an
//!   io_uring registered buffer), so the kernel neither swaps nor migrates
//!   it (compaction, NUMA balancing) while the DDM holds it.
//!   [`DmaRegion::is_pinned`] is `false` where the kernel refused the pin
//!   (io_uring disabled): then the pages are locked, which keeps them in
//!   memory but does not forbid every migration.
//! - **Lifetime.** The DDM keeps the region for the driver instance: a
//!   restarted driver gets the same memory, the same addresses and the same
//!   contents. It is freed when the driver is unloaded or stopped, and it
//!   does not survive a restart of the DDM.
//! - **Not promised:** addresses below 4 GiB (a device limited to 32-bit
//!   addresses needs to check [`DmaRegion::segments`]), a NUMA node, and
//!   cache coherence on architectures where DMA is not coherent with the
//!   CPU caches (x86 is coherent; user space cannot flush for a device).
//!
//! The driver may write the memory through its mapping
//! ([`DmaRegion::write_at`], [`DmaRegion::as_ptr`]); the DDM never reads or
//! writes it. The same aliasing rules as for [`SharedBuf`] apply: a device
//! writing by DMA is one more writer the compiler does not know about.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use nix::errno::Errno as NixErrno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

use crate::proto::{DmaGrant, DMA_PAGES_MAX};

/// Seals a granted memfd must carry before [`SharedBuf::accept`] maps it:
/// `F_SEAL_SHRINK` (no one can cut the file under our mapping, which would
/// turn our accesses into `SIGBUS`) and `F_SEAL_GROW` (so the size we check
/// is the size for good).
pub const REQUIRED_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// Seals [`SharedBuf::new`] sets: [`REQUIRED_SEALS`] and `F_SEAL_SEAL`, so
/// that the set of seals itself is final.
pub const CREATED_SEALS: i32 = REQUIRED_SEALS | libc::F_SEAL_SEAL;

/// Seals that forbid writing through a new mapping; a memfd that carries one
/// cannot be mapped read-write and is refused by [`SharedBuf::accept`].
const WRITE_SEALS: i32 = libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE;

/// Everything that can fail in libMem. Each variant names the step that
/// failed and carries the descriptor, size or process involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// A buffer of zero bytes was asked for (nothing to map).
    #[error("a buffer of zero bytes cannot be mapped")]
    ZeroLength,
    /// `memfd_create` failed.
    #[error("memfd_create({name:?}) failed")]
    MemfdCreate {
        /// The memfd's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `ftruncate` (sizing a new memfd) failed.
    #[error("ftruncate of memfd {fd} to {len} bytes failed")]
    Ftruncate {
        /// The descriptor.
        fd: RawFd,
        /// The size asked for.
        len: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `fcntl(F_ADD_SEALS)` failed.
    #[error("sealing memfd {fd} failed")]
    AddSeals {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `fcntl(F_GET_SEALS)` failed for another reason than "not a memfd".
    #[error("reading the seals of descriptor {fd} failed")]
    GetSeals {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `fcntl(F_GETFL)` of a granted descriptor failed.
    #[error("reading the flags of descriptor {fd} failed")]
    GetFlags {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `fstat` of a granted descriptor failed.
    #[error("fstat of descriptor {fd} failed")]
    Fstat {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A descriptor number is not open (an inherited number that was closed).
    #[error("descriptor {fd} is not open")]
    NotOpen {
        /// The number.
        fd: RawFd,
    },
    /// A granted descriptor is not a memfd (a pipe, a socket, a device, a
    /// file on a disk file system ...).
    #[error("descriptor {fd} is not a memfd: {why}")]
    NotMemfd {
        /// The descriptor.
        fd: RawFd,
        /// What gave it away.
        why: &'static str,
    },
    /// A granted memfd lacks seals of [`REQUIRED_SEALS`]: its owner could
    /// still shrink it under our mapping.
    #[error("memfd {fd} is not sealed against resizing (seals {seals:#x}, missing {missing:#x})")]
    MissingSeals {
        /// The descriptor.
        fd: RawFd,
        /// The seals it has.
        seals: i32,
        /// Required seals it lacks.
        missing: i32,
    },
    /// A granted memfd is sealed against writing, so it cannot be mapped
    /// read-write.
    #[error("memfd {fd} is sealed against writing (seals {seals:#x})")]
    WriteSealed {
        /// The descriptor.
        fd: RawFd,
        /// The seals it has.
        seals: i32,
    },
    /// A granted descriptor is not open for reading and writing.
    #[error("descriptor {fd} is not open read-write")]
    NotReadWrite {
        /// The descriptor.
        fd: RawFd,
    },
    /// A granted memfd's size is not the size agreed for it.
    #[error("memfd {fd} is {actual} bytes, expected {expected}")]
    WrongSize {
        /// The descriptor.
        fd: RawFd,
        /// The agreed size.
        expected: usize,
        /// Its size.
        actual: u64,
    },
    /// `dup` of a buffer's descriptor failed.
    #[error("duplicating descriptor {fd} failed")]
    Dup {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `mmap` failed.
    #[error("mmap of {len} bytes failed")]
    Mmap {
        /// Bytes to map.
        len: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A DMA grant that does not describe the memfd that came with it (see
    /// [`DmaRegion::accept`]).
    #[error("DMA grant of memfd {fd} refused: {why}")]
    BadDmaGrant {
        /// The descriptor.
        fd: RawFd,
        /// What does not fit.
        why: String,
    },
    /// An access outside a buffer.
    #[error("access of {len} bytes at offset {offset} is outside a buffer of {size} bytes")]
    OutOfBounds {
        /// Where the access starts.
        offset: usize,
        /// Its length.
        len: usize,
        /// The buffer's size.
        size: usize,
    },
}

fn os_err(e: NixErrno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Maps `len` bytes of `fd` shared and read-write.
fn map_shared(fd: BorrowedFd<'_>, len: usize) -> Result<NonNull<u8>, MemError> {
    // SAFETY: a new mapping at an address of the kernel's choosing (NULL
    // hint, no MAP_FIXED) replaces nothing this process uses; `fd` is open.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
    };
    if p == libc::MAP_FAILED {
        return Err(MemError::Mmap { len, source: io::Error::last_os_error() });
    }
    NonNull::new(p.cast::<u8>()).ok_or(MemError::Mmap { len, source: io::Error::from_raw_os_error(libc::EFAULT) })
}

/// Checks `offset..offset + len` lies within `size` bytes.
fn check_range(offset: usize, len: usize, size: usize) -> Result<(), MemError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(MemError::OutOfBounds { offset, len, size }),
    }
}

/// A sealed, memfd-backed buffer, mapped read-write in this process and
/// shareable with others by passing its descriptor.
///
/// The size is fixed at creation: the memfd is sealed with
/// [`CREATED_SEALS`], so no process that holds it can shrink or grow it.
/// The mapping is removed when the buffer is dropped; the memory itself lives
/// as long as any process holds the descriptor or a mapping.
///
/// Reads (`&self`) may happen from several threads; writes from this
/// process take `&mut self`. Another process that maps the same memfd can
/// write at any time: see the module documentation for what that means.
pub struct SharedBuf {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a SharedBuf owns its mapping and descriptor outright; nothing in
// it is tied to the thread that created it.
unsafe impl Send for SharedBuf {}
// SAFETY: through `&SharedBuf` this process only reads the mapping (copies
// out) or gets raw pointers; every in-process write needs `&mut SharedBuf`.
unsafe impl Sync for SharedBuf {}

impl fmt::Debug for SharedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuf")
            .field("fd", &self.fd.as_raw_fd())
            .field("len", &self.len)
            .field("addr", &self.ptr)
            .finish()
    }
}

impl SharedBuf {
    /// Creates a zero-filled buffer of `len` bytes: a memfd named `name`
    /// (shown in `/proc/PID/maps` as `memfd:NAME`), close-on-exec, sized,
    /// sealed with [`CREATED_SEALS`], and mapped.
    pub fn new(name: &str, len: usize) -> Result<SharedBuf, MemError> {
        if len == 0 {
            return Err(MemError::ZeroLength);
        }
        let cname = CString::new(name).map_err(|_| MemError::MemfdCreate {
            name: name.to_owned(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        let fd = memfd_create(cname.as_c_str(), MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(|e| MemError::MemfdCreate { name: name.to_owned(), source: os_err(e) })?;
        let raw = fd.as_raw_fd();
        let size = libc::off_t::try_from(len).map_err(|_| MemError::Ftruncate {
            fd: raw,
            len,
            source: io::Error::from_raw_os_error(libc::EFBIG),
        })?;
        ftruncate(&fd, size).map_err(|e| MemError::Ftruncate { fd: raw, len, source: os_err(e) })?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| MemError::AddSeals { fd: raw, source: os_err(e) })?;
        let ptr = map_shared(fd.as_fd(), len)?;
        Ok(SharedBuf { fd, ptr, len })
    }

    /// Takes a buffer another process granted: verifies `fd` and maps it.
    ///
    /// Refused, with the matching [`MemError`], unless all of these hold:
    /// it is a memfd (seals can be read: `F_GET_SEALS` works, and `fstat`
    /// says regular file); it carries [`REQUIRED_SEALS`] (a peer could
    /// otherwise shrink it and crash us with `SIGBUS`); it is not sealed
    /// against writing; it is open read-write; its size is exactly
    /// `expected_len`, the size agreed for it in the protocol. The seals are
    /// checked before the size, so the size checked is final.
    pub fn accept(fd: OwnedFd, expected_len: usize) -> Result<SharedBuf, MemError> {
        let raw = fd.as_raw_fd();
        if expected_len == 0 {
            return Err(MemError::ZeroLength);
        }
        let seals = match fcntl(&fd, FcntlArg::F_GET_SEALS) {
            Ok(s) => s,
            // Files that do not support seals (pipes, sockets, devices, disk
            // files) answer EINVAL.
            Err(NixErrno::EINVAL) => return Err(MemError::NotMemfd { fd: raw, why: "it does not support seals" }),
            Err(e) => return Err(MemError::GetSeals { fd: raw, source: os_err(e) }),
        };
        let st = fstat(&fd).map_err(|e| MemError::Fstat { fd: raw, source: os_err(e) })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(MemError::NotMemfd { fd: raw, why: "it is not a regular file" });
        }
        let missing = REQUIRED_SEALS & !seals;
        if missing != 0 {
            return Err(MemError::MissingSeals { fd: raw, seals, missing });
        }
        if seals & WRITE_SEALS != 0 {
            return Err(MemError::WriteSealed { fd: raw, seals });
        }
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| MemError::GetFlags { fd: raw, source: os_err(e) })?;
        if flags & libc::O_ACCMODE != libc::O_RDWR {
            return Err(MemError::NotReadWrite { fd: raw });
        }
        let actual = u64::try_from(st.st_size).unwrap_or(0);
        if actual != expected_len as u64 {
            return Err(MemError::WrongSize { fd: raw, expected: expected_len, actual });
        }
        let ptr = map_shared(fd.as_fd(), expected_len)?;
        Ok(SharedBuf { fd, ptr, len: expected_len })
    }

    /// Like [`SharedBuf::accept`], for a descriptor *number* this process
    /// inherited (for example a memfd its parent left open for it across
    /// `exec`, named in an environment variable). A number that is not open
    /// is [`MemError::NotOpen`].
    ///
    /// # Safety
    /// If `raw` is open, it must be owned by nothing else in this process:
    /// the returned buffer (or the error path) closes it.
    pub unsafe fn accept_inherited(raw: RawFd, expected_len: usize) -> Result<SharedBuf, MemError> {
        // SAFETY: F_GETFD only reads the descriptor table entry for `raw`;
        // any integer is acceptable.
        if raw < 0 || unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return Err(MemError::NotOpen { fd: raw });
        }
        // SAFETY: `raw` is open (checked above) and the caller promises that
        // nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        SharedBuf::accept(fd, expected_len)
    }

    /// The descriptor to grant the buffer with: pass it in a frame
    /// (`Channel::send(&header, &[], &[buf.grant()])`). The receiver gets
    /// its own descriptor of the same memfd; this buffer is unaffected.
    pub fn grant(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A new descriptor of the same memfd (close-on-exec), to keep or hand
    /// over after this buffer is gone (the DDM's state store, a FUSE
    /// passthrough backing file).
    pub fn try_clone_fd(&self) -> Result<OwnedFd, MemError> {
        self.fd.try_clone().map_err(|source| MemError::Dup { fd: self.fd.as_raw_fd(), source })
    }

    /// Unmaps the buffer and returns its descriptor.
    pub fn into_fd(self) -> OwnedFd {
        let this = std::mem::ManuallyDrop::new(self);
        this.unmap();
        // SAFETY: `this` is never used or dropped again, so the descriptor
        // is moved out exactly once.
        unsafe { std::ptr::read(&this.fd) }
    }

    /// Size in bytes (never zero).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Copies `buf.len()` bytes at `offset` out of the buffer.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(offset, buf.len(), self.len)?;
        // SAFETY: `offset + buf.len() <= self.len` (checked), so the source
        // lies in our live mapping, which the seals keep backed by the file;
        // the destination is a distinct `&mut` slice, so they do not
        // overlap. No Rust reference into the mapping exists; bytes a peer
        // writes meanwhile are unspecified, never invalid (`u8`).
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    /// Copies `data` into the buffer at `offset`.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<(), MemError> {
        check_range(offset, data.len(), self.len)?;
        // SAFETY: as in `read_at`: the destination lies in our mapping
        // (bounds checked), the source is a distinct slice, and `&mut self`
        // excludes every other access from this process.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len());
        }
        Ok(())
    }

    /// The start of the mapping, for callers that access it with their own
    /// discipline (atomics, volatile accesses). Valid for [`SharedBuf::len`]
    /// bytes while the buffer lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The whole buffer as a slice, without a copy.
    ///
    /// # Safety
    /// While the returned slice lives, nothing may write to the memory: not
    /// this process, and not any other process that maps the memfd or writes
    /// it through its descriptor (including the kernel serving a FUSE
    /// passthrough write). Typically the protocol hands the buffer to this
    /// side until it answers.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self`
        // lives; the caller guarantees nobody writes while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole buffer as a mutable slice, without a copy.
    ///
    /// # Safety
    /// While the returned slice lives, no other process (nor the kernel on
    /// its behalf) may read or write the memory: this process has it
    /// exclusively, as `&mut` promises.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` writable bytes for as long as `self`
        // lives; `&mut self` excludes this process's other accesses and the
        // caller guarantees other processes keep off.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn unmap(&self) {
        // SAFETY: `ptr`/`len` are exactly the mapping this buffer made, no
        // reference into it outlives `self`, and it is unmapped only once
        // (from `drop` or `into_fd`, which skips `drop`).
        if unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) } != 0 {
            log::warn!("munmap of shared buffer ({} bytes) failed: {}", self.len, io::Error::last_os_error());
        }
    }
}

/// One physically contiguous piece of a [`DmaRegion`]: where it is in the
/// region and where it is in physical (bus) memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaSegment {
    /// Its offset in the region.
    pub offset: usize,
    /// Its physical address: the bus address a device is given, without an
    /// IOMMU.
    pub addr: u64,
    /// Its length in bytes (the region's page size).
    pub len: usize,
}

/// DMA memory the DDM granted this driver: a [`SharedBuf`] of pinned,
/// page-wise physically contiguous memory, and its scatter list. See the
/// module documentation for what is guaranteed.
#[derive(Debug)]
pub struct DmaRegion {
    buf: SharedBuf,
    page_size: usize,
    pinned: bool,
    segments: Vec<DmaSegment>,
}

impl DmaRegion {
    /// Takes the region of a [`DmaGrant`]: checks that the grant describes
    /// the memfd (`len` is `pages * page_size`, the page size a power of two
    /// of at least 4 KiB, every address aligned to it and none wrapping),
    /// then accepts the memfd as [`SharedBuf::accept`] does and maps it.
    pub fn accept(fd: OwnedFd, grant: &DmaGrant) -> Result<DmaRegion, MemError> {
        let raw = fd.as_raw_fd();
        let bad = |why: String| MemError::BadDmaGrant { fd: raw, why };
        let page = grant.page_size;
        if page < 4096 || !page.is_power_of_two() {
            return Err(bad(format!("page size {page} is not a power of two of at least 4096")));
        }
        if grant.pages.is_empty() || grant.pages.len() > DMA_PAGES_MAX {
            return Err(bad(format!("{} pages (1 to {DMA_PAGES_MAX} allowed)", grant.pages.len())));
        }
        if (grant.pages.len() as u64).checked_mul(page) != Some(grant.len) {
            return Err(bad(format!("{} bytes is not {} pages of {page}", grant.len, grant.pages.len())));
        }
        if let Some(a) = grant.pages.iter().find(|a| *a % page != 0 || a.checked_add(page).is_none()) {
            return Err(bad(format!("page address {a:#x} is not aligned to {page} bytes")));
        }
        let len = usize::try_from(grant.len).map_err(|_| bad(format!("{} bytes do not fit", grant.len)))?;
        let page_size = page as usize;
        let buf = SharedBuf::accept(fd, len)?;
        let segments = grant
            .pages
            .iter()
            .enumerate()
            .map(|(i, addr)| DmaSegment { offset: i * page_size, addr: *addr, len: page_size })
            .collect();
        Ok(DmaRegion { buf, page_size, pinned: grant.pinned, segments })
    }

    /// Size in bytes (a whole number of pages, never zero).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The size of the region's pages: each is physically contiguous.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Whether the DDM holds the pages with a long-term pin (else they are
    /// locked only).
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The scatter list: one segment per page, in the region's order.
    pub fn segments(&self) -> &[DmaSegment] {
        &self.segments
    }

    /// The bus address of the byte at `offset`.
    pub fn bus_addr(&self, offset: usize) -> Result<u64, MemError> {
        check_range(offset, 1, self.len())?;
        let seg = &self.segments[offset / self.page_size];
        Ok(seg.addr + (offset - seg.offset) as u64)
    }

    /// How many bytes from `offset` on are physically contiguous: to the end
    /// of its page, and on through the pages that follow it in physical
    /// memory too.
    pub fn contiguous_len(&self, offset: usize) -> Result<usize, MemError> {
        check_range(offset, 1, self.len())?;
        let first = offset / self.page_size;
        let mut run = self.page_size - offset % self.page_size;
        for pair in self.segments[first..].windows(2) {
            if pair[0].addr + pair[0].len as u64 != pair[1].addr {
                break;
            }
            run += pair[1].len;
        }
        Ok(run)
    }

    /// Whether the `len` bytes at `offset` are physically contiguous: one
    /// address and a length describe them to a device. An empty range is.
    pub fn is_contiguous(&self, offset: usize, len: usize) -> Result<bool, MemError> {
        check_range(offset, len, self.len())?;
        if len == 0 {
            return Ok(true);
        }
        Ok(self.contiguous_len(offset)? >= len)
    }

    /// Copies `buf.len()` bytes at `offset` out of the region.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        self.buf.read_at(offset, buf)
    }

    /// Copies `data` into the region at `offset`.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<(), MemError> {
        self.buf.write_at(offset, data)
    }

    /// The start of the mapping, for accesses with their own discipline
    /// (volatile descriptors a device reads). Valid for [`DmaRegion::len`]
    /// bytes while the region lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.buf.as_ptr()
    }

    /// The whole region as a slice, without a copy.
    ///
    /// # Safety
    /// As for [`SharedBuf::as_slice`]; a device writing by DMA counts as a
    /// writer.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the caller upholds SharedBuf::as_slice's contract.
        unsafe { self.buf.as_slice() }
    }

    /// The whole region as a mutable slice, without a copy.
    ///
    /// # Safety
    /// As for [`SharedBuf::as_mut_slice`]; a device accessing it by DMA
    /// counts as another user.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the caller upholds SharedBuf::as_mut_slice's contract.
        unsafe { self.buf.as_mut_slice() }
    }
}

impl AsFd for SharedBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedBuf {
    fn drop(&mut self) {
        self.unmap();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ipc::{Channel, RecvBuf};
    use std::process::{Command, Stdio};

    /// Set in a child started by [`spawn_child`]: which role to play.
    const CHILD_ENV: &str = "DDF_MEM_TEST_CHILD";
    /// Set in such a child: the number of its channel descriptor.
    const FD_ENV: &str = "DDF_MEM_TEST_FD";

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Starts this test binary again as a child that runs only
    /// [`child_main`] in role `mode`, with the other end of a channel.
    fn spawn_child(mode: &str) -> (std::process::Child, Channel) {
        let (ours, theirs) = Channel::pair().unwrap();
        let raw = theirs.as_fd().as_raw_fd();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "mem::tests::child_main", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, mode)
            .env(FD_ENV, raw.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::ipc::keep_in_child(&mut cmd, raw);
        let child = cmd.spawn().unwrap();
        drop(theirs);
        (child, ours)
    }

    fn finish(child: std::process::Child) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The child side of the cross-process tests; a no-op in a normal run.
    #[test]
    fn child_main() {
        let Ok(mode) = std::env::var(CHILD_ENV) else {
            return;
        };
        let raw: RawFd = std::env::var(FD_ENV).unwrap().parse().unwrap();
        // SAFETY: the parent passed this descriptor for the child alone.
        let chan = unsafe { Channel::from_raw_fd(raw) }.unwrap();
        match mode.as_str() {
            "grant" => child_grant(&chan),
            other => panic!("unknown child mode {other}"),
        }
    }

    const GRANT_LEN: usize = 3 * 4096 + 5;

    fn child_grant(chan: &Channel) {
        let mut rb = RecvBuf::default();
        let mut f = chan.recv(&mut rb).unwrap();
        let len = f.decode::<u64>().unwrap() as usize;
        assert_eq!(f.fds.len(), 1);
        let fd = f.fds.remove(0);
        // A wrong size is refused, also on this side; the right one mapped.
        let again = fd.try_clone().unwrap();
        assert!(matches!(SharedBuf::accept(again, len + 1), Err(MemError::WrongSize { .. })));
        let mut buf = SharedBuf::accept(fd, len).unwrap();
        let mut got = vec![0; len];
        buf.read_at(0, &mut got).unwrap();
        assert_eq!(got, pattern(1, len));
        buf.write_at(0, &pattern(2, len)).unwrap();
        chan.send(&0u64, &[], &[]).unwrap();
    }

    #[test]
    fn grant_round_trip_between_processes() {
        let (child, chan) = spawn_child("grant");
        let mut buf = SharedBuf::new("ddf-test-grant", GRANT_LEN).unwrap();
        buf.write_at(0, &pattern(1, GRANT_LEN)).unwrap();
        chan.send(&(GRANT_LEN as u64), &[], &[buf.grant()]).unwrap();
        let mut rb = RecvBuf::default();
        let ack = chan.recv(&mut rb);
        finish(child);
        assert_eq!(ack.unwrap().decode::<u64>().unwrap(), 0);
        // The child's writes landed in our mapping: one memory, two processes.
        let mut got = vec![0; GRANT_LEN];
        buf.read_at(0, &mut got).unwrap();
        assert_eq!(got, pattern(2, GRANT_LEN));
    }

    #[test]
    fn shared_buf_reads_writes_and_bounds() {
        let mut b = SharedBuf::new("ddf-test", 10_000).unwrap();
        assert_eq!(b.len(), 10_000);
        let mut z = vec![1u8; 10_000];
        b.read_at(0, &mut z).unwrap();
        assert!(z.iter().all(|x| *x == 0), "a new buffer is zero-filled");
        b.write_at(9_990, b"0123456789").unwrap();
        let mut s = [0u8; 4];
        b.read_at(9_996, &mut s).unwrap();
        assert_eq!(&s, b"6789");
        assert!(matches!(
            b.write_at(9_991, b"0123456789"),
            Err(MemError::OutOfBounds { offset: 9_991, len: 10, size: 10_000 })
        ));
        assert!(matches!(b.read_at(usize::MAX, &mut s), Err(MemError::OutOfBounds { .. })));
        // SAFETY: nobody else has this buffer's memfd.
        assert_eq!(&unsafe { b.as_slice() }[9_990..], b"0123456789");
        // SAFETY: as above.
        let whole = unsafe { b.as_mut_slice() };
        whole[0] = 42;
        b.read_at(0, &mut s[..1]).unwrap();
        assert_eq!(s[0], 42);
        // The seals are the ones promised; a second mapping sees the data.
        let seals = fcntl(b.grant(), FcntlArg::F_GET_SEALS).unwrap();
        assert_eq!(seals, CREATED_SEALS);
        assert!(ftruncate(b.grant(), 5).is_err(), "shrinking a sealed memfd must fail");
        let other = SharedBuf::accept(b.try_clone_fd().unwrap(), 10_000).unwrap();
        other.read_at(0, &mut s[..1]).unwrap();
        assert_eq!(s[0], 42);
        let fd = b.into_fd();
        assert!(SharedBuf::accept(fd, 10_000).is_ok());
        assert!(matches!(SharedBuf::new("x", 0), Err(MemError::ZeroLength)));
    }

    /// A region over an ordinary memfd with made-up addresses: pages 0 and
    /// 1 adjacent, then a gap, then pages 2 and 3 adjacent.
    fn fake_region() -> (SharedBuf, DmaRegion) {
        let buf = SharedBuf::new("ddf-test-dma", 4 * 4096).unwrap();
        let grant =
            DmaGrant { len: 4 * 4096, page_size: 4096, pages: vec![0x10000, 0x11000, 0x80000, 0x81000], pinned: true };
        let region = DmaRegion::accept(buf.try_clone_fd().unwrap(), &grant).unwrap();
        (buf, region)
    }

    #[test]
    fn a_dma_region_translates_offsets_and_knows_its_runs() {
        let (other, mut r) = fake_region();
        assert_eq!((r.len(), r.page_size(), r.is_pinned()), (16384, 4096, true));
        let segs: Vec<(usize, u64, usize)> = r.segments().iter().map(|s| (s.offset, s.addr, s.len)).collect();
        assert_eq!(segs, [(0, 0x10000, 4096), (4096, 0x11000, 4096), (8192, 0x80000, 4096), (12288, 0x81000, 4096)]);
        assert_eq!(r.bus_addr(0).unwrap(), 0x10000);
        assert_eq!(r.bus_addr(4097).unwrap(), 0x11001);
        assert_eq!(r.bus_addr(16383).unwrap(), 0x81fff);
        assert!(matches!(r.bus_addr(16384), Err(MemError::OutOfBounds { .. })));
        // Adjacent pages make one run; the gap ends it.
        assert_eq!(r.contiguous_len(0).unwrap(), 8192);
        assert_eq!(r.contiguous_len(100).unwrap(), 8092);
        assert_eq!(r.contiguous_len(9000).unwrap(), 16384 - 9000);
        assert!(r.is_contiguous(4000, 200).unwrap());
        assert!(!r.is_contiguous(8000, 300).unwrap());
        assert!(r.is_contiguous(8192, 8192).unwrap());
        assert!(r.is_contiguous(16384, 0).unwrap());
        assert!(matches!(r.is_contiguous(16000, 1000), Err(MemError::OutOfBounds { .. })));
        // Writes through the region are in the memfd: another mapping sees them.
        r.write_at(5000, b"dma").unwrap();
        let mut got = [0u8; 3];
        other.read_at(5000, &mut got).unwrap();
        assert_eq!(&got, b"dma");
        r.read_at(5000, &mut got).unwrap();
        assert_eq!(&got, b"dma");
    }

    #[test]
    fn dma_grants_that_do_not_describe_their_memfd_are_refused() {
        let buf = SharedBuf::new("ddf-test-dma", 2 * 4096).unwrap();
        let good = DmaGrant { len: 8192, page_size: 4096, pages: vec![0x1000, 0x2000], pinned: false };
        assert!(DmaRegion::accept(buf.try_clone_fd().unwrap(), &good).is_ok());
        let cases = [
            (DmaGrant { len: 4096, ..good.clone() }, "is not 2 pages"),
            (DmaGrant { page_size: 3000, len: 6000, ..good.clone() }, "not a power of two"),
            (DmaGrant { page_size: 2048, len: 4096, ..good.clone() }, "not a power of two of at least 4096"),
            (DmaGrant { pages: vec![0x1000, 0x2800], ..good.clone() }, "0x2800 is not aligned"),
            (DmaGrant { pages: vec![0x1000, u64::MAX - 4095], ..good.clone() }, "is not aligned"),
            (DmaGrant { pages: Vec::new(), len: 0, ..good.clone() }, "0 pages"),
        ];
        for (grant, why) in cases {
            let err = DmaRegion::accept(buf.try_clone_fd().unwrap(), &grant).unwrap_err();
            assert!(matches!(err, MemError::BadDmaGrant { .. }) && err.to_string().contains(why), "{grant:?}: {err}");
        }
        // A grant that does not match the memfd's size is refused by the memfd check.
        let big = DmaGrant { len: 3 * 4096, pages: vec![0x1000, 0x2000, 0x3000], ..good.clone() };
        let err = DmaRegion::accept(buf.try_clone_fd().unwrap(), &big).unwrap_err();
        assert!(matches!(err, MemError::WrongSize { .. }), "{err}");
        // So is a descriptor that is no memfd.
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(DmaRegion::accept(null.into(), &good), Err(MemError::NotMemfd { .. })));
    }

    fn raw_memfd(flags: MFdFlags, len: i64, seals: Option<SealFlag>) -> OwnedFd {
        let fd = memfd_create(c"ddf-test-raw", flags | MFdFlags::MFD_CLOEXEC).unwrap();
        ftruncate(&fd, len).unwrap();
        if let Some(s) = seals {
            fcntl(&fd, FcntlArg::F_ADD_SEALS(s)).unwrap();
        }
        fd
    }

    #[test]
    fn bad_grants_are_refused() {
        let sealing = MFdFlags::MFD_ALLOW_SEALING;
        let size = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;

        // Wrong size, both ways.
        let good = SharedBuf::new("ddf-test", 8192).unwrap();
        let err = SharedBuf::accept(good.try_clone_fd().unwrap(), 4096).unwrap_err();
        assert!(matches!(err, MemError::WrongSize { expected: 4096, actual: 8192, .. }), "{err}");
        let err = SharedBuf::accept(good.try_clone_fd().unwrap(), 8193).unwrap_err();
        assert!(matches!(err, MemError::WrongSize { .. }), "{err}");
        assert!(matches!(SharedBuf::accept(good.try_clone_fd().unwrap(), 0), Err(MemError::ZeroLength)));

        // Unsealed: sealable but no seals; not sealable at all; half sealed.
        let err = SharedBuf::accept(raw_memfd(sealing, 4096, None), 4096).unwrap_err();
        assert!(matches!(err, MemError::MissingSeals { missing: REQUIRED_SEALS, .. }), "{err}");
        let err = SharedBuf::accept(raw_memfd(MFdFlags::empty(), 4096, None), 4096).unwrap_err();
        assert!(matches!(err, MemError::MissingSeals { .. }), "{err}");
        let err = SharedBuf::accept(raw_memfd(sealing, 4096, Some(SealFlag::F_SEAL_SHRINK)), 4096).unwrap_err();
        assert!(matches!(err, MemError::MissingSeals { missing: libc::F_SEAL_GROW, .. }), "{err}");
        // Sealed against writing: cannot be mapped read-write.
        let err = SharedBuf::accept(raw_memfd(sealing, 4096, Some(size | SealFlag::F_SEAL_WRITE)), 4096).unwrap_err();
        assert!(matches!(err, MemError::WriteSealed { .. }), "{err}");
        // Properly sealed by someone else: accepted.
        assert!(SharedBuf::accept(raw_memfd(sealing, 4096, Some(size)), 4096).is_ok());

        // Not a memfd at all: a pipe, a disk file, a device, a socket.
        let (r, _w) = nix::unistd::pipe().unwrap();
        let err = SharedBuf::accept(r, 4096).unwrap_err();
        assert!(matches!(err, MemError::NotMemfd { .. }), "{err}");
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let err = SharedBuf::accept(exe.into(), 4096).unwrap_err();
        assert!(matches!(err, MemError::NotMemfd { .. } | MemError::MissingSeals { .. }), "{err}");
        let null = std::fs::File::open("/dev/null").unwrap();
        let err = SharedBuf::accept(null.into(), 4096).unwrap_err();
        assert!(matches!(err, MemError::NotMemfd { .. }), "{err}");
        let (sock, _) = Channel::pair().unwrap();
        let err = SharedBuf::accept(sock.into(), 4096).unwrap_err();
        assert!(matches!(err, MemError::NotMemfd { .. }), "{err}");

        // A read-only descriptor of a good memfd.
        let path = format!("/proc/self/fd/{}", good.grant().as_raw_fd());
        if let Ok(ro) = std::fs::File::open(&path) {
            let err = SharedBuf::accept(ro.into(), 8192).unwrap_err();
            assert!(matches!(err, MemError::NotReadWrite { .. }), "{err}");
        }

        // A closed descriptor number (inherited numbers are the only way to
        // name one: an OwnedFd is open by construction).
        for raw in [-1, i32::MAX - 1] {
            // SAFETY: these numbers are never open, so nothing is taken over.
            let err = unsafe { SharedBuf::accept_inherited(raw, 4096) }.unwrap_err();
            assert!(matches!(err, MemError::NotOpen { fd } if fd == raw), "{err}");
        }
    }
}

//! libMem: bulk memory between processes, without copies where possible.
//!
//! The paper's libMem copies large slabs between processes and names
//! DMA-able allocation as future work. On Linux we can do better than
//! copying: this module gives the three tools a driver, a client or the DDM
//! needs for bulk data.
//!
//! - [`SharedBuf`]: shared memory. A `memfd` of a fixed size, mapped
//!   read-write in every process that holds it, **sealed** against shrinking
//!   and growing. It is granted to another process by passing its file
//!   descriptor over a [`crate::ipc::Channel`] (`SCM_RIGHTS`), never by a
//!   path: `chan.send(&header, &[], &[buf.grant()])` on one side,
//!   [`SharedBuf::accept`]`(frame.fds.remove(0), len)` on the other. The
//!   receiver verifies the descriptor before it maps it (a memfd, the size
//!   seals present, the agreed size), so a hostile peer can neither hand over
//!   something else nor shrink the file under the mapping later (which would
//!   make every access past the new end a `SIGBUS` in the receiver).
//! - [`copy_from_process`] / [`copy_to_process`] (and their vectored forms):
//!   `process_vm_readv(2)` / `process_vm_writev(2)`, one kernel copy straight
//!   between two address spaces, for the cases where the data is in a
//!   client's ordinary memory and a copy cannot be avoided. Every failure has
//!   its own [`MemError`] variant; a partial transfer is an error, never a
//!   silently short buffer.
//! - [`DmaBuf`]: page-aligned, locked (`mlock`) memory for drivers that think
//!   in DMA terms, on huge pages when the system has them.
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

use std::ffi::CString;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use nix::errno::Errno as NixErrno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::resource::{getrlimit, Resource};
use nix::sys::stat::fstat;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::{ftruncate, Pid};

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

/// The most iovecs one `process_vm_readv`/`process_vm_writev` call takes,
/// per side (`UIO_MAXIOV`).
pub const MAX_IOVECS: usize = libc::UIO_MAXIOV as usize;

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
    /// `process_vm_*`: the process does not exist (`ESRCH`).
    #[error("{op}: no process {pid}")]
    NoSuchProcess {
        /// `process_vm_readv` or `process_vm_writev`.
        op: &'static str,
        /// The process.
        pid: i32,
    },
    /// `process_vm_*`: not allowed to access the process (`EPERM`: it
    /// takes the right to ptrace it: same user and a permissive Yama
    /// `ptrace_scope`, or `CAP_SYS_PTRACE`).
    #[error("{op}: not permitted to access process {pid} (needs ptrace rights)")]
    ProcessVmDenied {
        /// `process_vm_readv` or `process_vm_writev`.
        op: &'static str,
        /// The process.
        pid: i32,
    },
    /// `process_vm_*`: nothing was transferred because an address is not
    /// mapped (or not accessible) in the remote process (`EFAULT`).
    #[error("{op}: bad address {addr:#x} ({len} bytes) in process {pid}")]
    ProcessVmFault {
        /// `process_vm_readv` or `process_vm_writev`.
        op: &'static str,
        /// The process.
        pid: i32,
        /// The first remote address of the transfer.
        addr: usize,
        /// Bytes asked for.
        len: usize,
    },
    /// `process_vm_*` stopped early: the first `done` bytes were transferred,
    /// then the remote memory ended (an unmapped or protected page).
    #[error("{op}: partial transfer with process {pid}: {done} of {wanted} bytes")]
    ProcessVmPartial {
        /// `process_vm_readv` or `process_vm_writev`.
        op: &'static str,
        /// The process.
        pid: i32,
        /// Bytes transferred.
        done: usize,
        /// Bytes asked for.
        wanted: usize,
    },
    /// `process_vm_*`: the local and remote sides describe different
    /// amounts of memory, or too many pieces (more than [`MAX_IOVECS`]).
    #[error("{op}: {local} local bytes in {local_count} pieces, {remote} remote bytes in {remote_count} pieces (must be equal, at most {MAX_IOVECS} pieces)")]
    ProcessVmShape {
        /// `process_vm_readv` or `process_vm_writev`.
        op: &'static str,
        /// Local bytes.
        local: usize,
        /// Local iovecs.
        local_count: usize,
        /// Remote bytes.
        remote: usize,
        /// Remote iovecs.
        remote_count: usize,
    },
    /// `process_vm_*` failed otherwise (`ENOMEM`, `EINVAL`).
    #[error("{op} with process {pid} failed")]
    ProcessVm {
        /// `process_vm_readv` or `process_vm_writev`.
        op: &'static str,
        /// The process.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `mlock` was refused for lack of allowance: the process may lock at
    /// most `RLIMIT_MEMLOCK` bytes (without `CAP_IPC_LOCK`).
    #[error("mlock of {len} bytes refused: RLIMIT_MEMLOCK is {limit} bytes (raise it with `ulimit -l`, LimitMEMLOCK= in a unit, or grant CAP_IPC_LOCK)")]
    MlockLimit {
        /// Bytes to lock.
        len: usize,
        /// The soft `RLIMIT_MEMLOCK`, in bytes.
        limit: u64,
        /// What `mlock` said.
        #[source]
        source: io::Error,
    },
    /// `mlock` failed otherwise.
    #[error("mlock of {len} bytes failed")]
    Mlock {
        /// Bytes to lock.
        len: usize,
        /// Why.
        #[source]
        source: io::Error,
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

/// A range of another process's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRange {
    /// Start address in the remote process.
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
}

const READV: &str = "process_vm_readv";
const WRITEV: &str = "process_vm_writev";

/// Checks the shape of a transfer; returns its length in bytes.
fn vm_shape(op: &'static str, local: &[usize], remote: &[RemoteRange]) -> Result<usize, MemError> {
    let l: Option<usize> = local.iter().try_fold(0usize, |a, n| a.checked_add(*n));
    let r: Option<usize> = remote.iter().try_fold(0usize, |a, x| a.checked_add(x.len));
    match (l, r) {
        (Some(l), Some(r)) if l == r && local.len() <= MAX_IOVECS && remote.len() <= MAX_IOVECS => Ok(l),
        _ => Err(MemError::ProcessVmShape {
            op,
            local: l.unwrap_or(usize::MAX),
            local_count: local.len(),
            remote: r.unwrap_or(usize::MAX),
            remote_count: remote.len(),
        }),
    }
}

/// Turns the outcome of a `process_vm_*` call into a result.
fn vm_result(
    op: &'static str,
    pid: i32,
    remote: &[RemoteRange],
    wanted: usize,
    res: nix::Result<usize>,
) -> Result<usize, MemError> {
    match res {
        Ok(done) if done == wanted => Ok(done),
        Ok(done) => Err(MemError::ProcessVmPartial { op, pid, done, wanted }),
        Err(NixErrno::ESRCH) => Err(MemError::NoSuchProcess { op, pid }),
        Err(NixErrno::EPERM) | Err(NixErrno::EACCES) => Err(MemError::ProcessVmDenied { op, pid }),
        Err(NixErrno::EFAULT) => {
            Err(MemError::ProcessVmFault { op, pid, addr: remote.first().map_or(0, |r| r.addr), len: wanted })
        }
        Err(e) => Err(MemError::ProcessVm { op, pid, source: os_err(e) }),
    }
}

fn remote_iovecs(remote: &[RemoteRange]) -> Vec<RemoteIoVec> {
    remote.iter().map(|r| RemoteIoVec { base: r.addr, len: r.len }).collect()
}

/// Copies `buf.len()` bytes from address `remote_addr` of process `pid` into
/// `buf` (`process_vm_readv`). All or an error: a transfer cut short by an
/// unmapped remote page is [`MemError::ProcessVmPartial`] (the first `done`
/// bytes of `buf` are valid).
///
/// Needs the right to ptrace `pid`.
pub fn copy_from_process(pid: i32, remote_addr: usize, buf: &mut [u8]) -> Result<(), MemError> {
    let remote = [RemoteRange { addr: remote_addr, len: buf.len() }];
    copy_from_process_vectored(pid, &mut [IoSliceMut::new(buf)], &remote).map(|_| ())
}

/// Vectored [`copy_from_process`]: fills `local` in order from the `remote`
/// ranges in order. Both sides must describe the same number of bytes, in at
/// most [`MAX_IOVECS`] pieces each. Returns that number.
pub fn copy_from_process_vectored(
    pid: i32,
    local: &mut [IoSliceMut<'_>],
    remote: &[RemoteRange],
) -> Result<usize, MemError> {
    let lens: Vec<usize> = local.iter().map(|s| s.len()).collect();
    let wanted = vm_shape(READV, &lens, remote)?;
    if wanted == 0 {
        return Ok(0);
    }
    let riov = remote_iovecs(remote);
    let res = process_vm_readv(Pid::from_raw(pid), local, &riov);
    vm_result(READV, pid, remote, wanted, res)
}

/// Copies `data` to address `remote_addr` of process `pid`
/// (`process_vm_writev`). All or an error, as [`copy_from_process`] (after a
/// [`MemError::ProcessVmPartial`] the first `done` bytes were written).
///
/// Needs the right to ptrace `pid`.
///
/// # Safety
/// If `pid` is this process, one of its threads, or a process sharing its
/// address space (`CLONE_VM`), the remote range is this process's own memory:
/// it must then be memory no Rust reference or other live object uses. For
/// any other process this is just a write into someone else's memory, which
/// that process must expect.
pub unsafe fn copy_to_process(pid: i32, remote_addr: usize, data: &[u8]) -> Result<(), MemError> {
    let remote = [RemoteRange { addr: remote_addr, len: data.len() }];
    // SAFETY: the caller's guarantee is the same as ours.
    unsafe { copy_to_process_vectored(pid, &[IoSlice::new(data)], &remote) }.map(|_| ())
}

/// Vectored [`copy_to_process`]: writes `local` in order to the `remote`
/// ranges in order, same shape rules as [`copy_from_process_vectored`].
/// Returns the number of bytes written.
///
/// # Safety
/// As for [`copy_to_process`].
pub unsafe fn copy_to_process_vectored(
    pid: i32,
    local: &[IoSlice<'_>],
    remote: &[RemoteRange],
) -> Result<usize, MemError> {
    let lens: Vec<usize> = local.iter().map(|s| s.len()).collect();
    let wanted = vm_shape(WRITEV, &lens, remote)?;
    if wanted == 0 {
        return Ok(0);
    }
    let riov = remote_iovecs(remote);
    let res = process_vm_writev(Pid::from_raw(pid), local, &riov);
    vm_result(WRITEV, pid, remote, wanted, res)
}

/// What kind of pages back a [`DmaBuf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// Huge pages from the hugetlb pool (`MAP_HUGETLB`), reserved when the
    /// buffer was made; each page is physically contiguous.
    HugeTlb {
        /// Bytes per page.
        page_size: usize,
    },
    /// Normal pages with `madvise(MADV_HUGEPAGE)` accepted and transparent
    /// huge pages enabled: the kernel backs the buffer with huge pages where
    /// it can (it does not say whether it did).
    TransparentHuge,
    /// Normal pages.
    Normal,
}

/// Page-aligned, locked, zero-filled memory for drivers that think in DMA
/// terms.
///
/// [`DmaBuf::new`] tries huge pages from the hugetlb pool first (buffers of
/// at least one huge page), then normal pages advised for transparent huge
/// pages (aligned to a huge page when large enough), and locks the result
/// with `mlock`. [`DmaBuf::kind`] says what it got.
///
/// What user space cannot promise: `mlock` keeps the pages resident (never
/// swapped out), nothing more. They are not physically contiguous (beyond a
/// single huge page), and their physical addresses are not fixed (the
/// kernel may still migrate locked pages, for compaction). Nor is a physical
/// address a bus address a device could use: behind an IOMMU it is not. A
/// device can only be pointed at this memory through VFIO
/// (`VFIO_IOMMU_MAP_DMA` pins the pages and gives them an I/O virtual
/// address in the device's IOMMU domain); `/proc/self/pagemap` is not a
/// substitute (it needs `CAP_SYS_ADMIN` and its numbers can change).
///
/// The memory is private to this process, so the slice accessors are safe;
/// a driver that does give a device access must not hold a slice while the
/// device writes.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    kind: PageKind,
}

// SAFETY: a DmaBuf owns its private mapping outright; nothing in it is tied
// to the creating thread.
unsafe impl Send for DmaBuf {}
// SAFETY: `&DmaBuf` gives only shared (read) access; writes need `&mut`.
unsafe impl Sync for DmaBuf {}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf").field("addr", &self.ptr).field("len", &self.len).field("kind", &self.kind).finish()
    }
}

/// The system page size.
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// The default huge page size (`Hugepagesize` in `/proc/meminfo`), 2 MiB if
/// it cannot be read.
fn huge_page_size() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<usize>().ok())
        })
        .and_then(|kb| kb.checked_mul(1024))
        .unwrap_or(2 << 20)
}

/// Whether transparent huge pages are enabled (`always` or `madvise`).
fn thp_enabled() -> bool {
    match std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") {
        Ok(s) => !s.contains("[never]"),
        // Unknown: trust madvise's verdict.
        Err(_) => true,
    }
}

/// A private anonymous mapping; `flags` are added to
/// `MAP_PRIVATE | MAP_ANONYMOUS`.
fn map_anon(len: usize, flags: libc::c_int) -> Result<NonNull<u8>, io::Error> {
    // SAFETY: a new anonymous mapping at an address of the kernel's choosing
    // replaces nothing this process uses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))
}

/// Maps `len` bytes of normal pages starting at a multiple of `align` (a
/// power of two, a multiple of the page size): maps `len + align` and
/// unmaps the slack on both sides.
fn map_anon_aligned(len: usize, align: usize) -> Result<NonNull<u8>, MemError> {
    let over =
        len.checked_add(align).ok_or(MemError::Mmap { len, source: io::Error::from_raw_os_error(libc::ENOMEM) })?;
    let p = map_anon(over, 0).map_err(|source| MemError::Mmap { len: over, source })?;
    let start = p.as_ptr() as usize;
    let aligned = start.next_multiple_of(align);
    let head = aligned - start;
    let tail = over - head - len;
    if head > 0 {
        // SAFETY: `start..start + head` is the front of the mapping just made,
        // which nothing else uses.
        unsafe { libc::munmap(start as *mut libc::c_void, head) };
    }
    if tail > 0 {
        // SAFETY: `aligned + len..start + over` is the back of the mapping
        // just made, which nothing else uses.
        unsafe { libc::munmap((aligned + len) as *mut libc::c_void, tail) };
    }
    // `aligned` is inside the mapping, so not null.
    NonNull::new(aligned as *mut u8).ok_or(MemError::Mmap { len, source: io::Error::from_raw_os_error(libc::EFAULT) })
}

impl DmaBuf {
    /// Allocates and locks at least `len` bytes (rounded up to whole pages),
    /// trying huge pages first.
    ///
    /// `mlock` refused for lack of allowance is [`MemError::MlockLimit`],
    /// which names `RLIMIT_MEMLOCK`.
    pub fn new(len: usize) -> Result<DmaBuf, MemError> {
        if len == 0 {
            return Err(MemError::ZeroLength);
        }
        let too_big = || MemError::Mmap { len, source: io::Error::from_raw_os_error(libc::ENOMEM) };
        let page = page_size();
        let huge = huge_page_size();
        let mut mapped = None;
        if len >= huge {
            let map_len = len.checked_next_multiple_of(huge).ok_or_else(too_big)?;
            // No huge pages reserved (the usual case) is ENOMEM: fall back.
            if let Ok(ptr) = map_anon(map_len, libc::MAP_HUGETLB) {
                mapped = Some((ptr, map_len, PageKind::HugeTlb { page_size: huge }));
            }
        }
        let (ptr, map_len, kind) = match mapped {
            Some(m) => m,
            None => {
                let map_len = len.checked_next_multiple_of(page).ok_or_else(too_big)?;
                let ptr = if map_len >= huge {
                    map_anon_aligned(map_len, huge)?
                } else {
                    map_anon(map_len, 0).map_err(|source| MemError::Mmap { len: map_len, source })?
                };
                // SAFETY: advice on a mapping we just made; MADV_HUGEPAGE
                // does not change its contents.
                let advised = unsafe { libc::madvise(ptr.as_ptr().cast(), map_len, libc::MADV_HUGEPAGE) } == 0;
                let kind = if advised && thp_enabled() { PageKind::TransparentHuge } else { PageKind::Normal };
                (ptr, map_len, kind)
            }
        };
        // From here on, Drop unmaps.
        let buf = DmaBuf { ptr, len, map_len, kind };
        // SAFETY: locks pages of our own mapping; no memory is changed.
        if unsafe { libc::mlock(buf.ptr.as_ptr().cast(), buf.map_len) } != 0 {
            let source = io::Error::last_os_error();
            let limit = getrlimit(Resource::RLIMIT_MEMLOCK)
                .ok()
                .map(|(soft, _)| soft)
                .filter(|soft| *soft != libc::RLIM_INFINITY);
            let refused = matches!(source.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EAGAIN) | Some(libc::EPERM));
            return Err(match limit {
                Some(limit) if refused => MemError::MlockLimit { len: map_len, limit, source },
                _ => MemError::Mlock { len: map_len, source },
            });
        }
        Ok(buf)
    }

    /// The length asked for.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes actually mapped and locked (the length rounded up to the page
    /// size of [`DmaBuf::kind`]).
    pub fn mapped_len(&self) -> usize {
        self.map_len
    }

    /// The pages backing the buffer.
    pub fn kind(&self) -> PageKind {
        self.kind
    }

    /// The memory, to read.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len <= map_len` bytes of a private mapping owned by
        // `self`, readable while `self` lives; writes need `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The memory, to write.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The start address (page-aligned; huge-page-aligned for
    /// [`PageKind::HugeTlb`] and for large transparent-huge buffers).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The start address, to write through.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping this buffer made (munmap also unlocks
        // it); no reference into it outlives `self`.
        if unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) } != 0 {
            log::warn!("munmap of DMA buffer ({} bytes) failed: {}", self.map_len, io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ipc::{Channel, RecvBuf};
    use std::os::unix::process::CommandExt;
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
        let keep_open = move || {
            // SAFETY: runs in the forked child before exec; fcntl is
            // async-signal-safe and only clears FD_CLOEXEC on `raw`.
            if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the hook only calls fcntl (async-signal-safe), allocates
        // nothing and takes no locks.
        unsafe { cmd.pre_exec(keep_open) };
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
            "vm" => child_vm(&chan),
            "denied" => child_denied(),
            "memlock" => child_memlock(),
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

    /// Addresses the "vm" child reports: (source, destination, fenced page).
    type VmAddrs = (u64, u64, u64);
    const VM_SRC_LEN: usize = 10_000;
    const VM_DST_LEN: usize = 5_000;

    fn child_vm(chan: &Channel) {
        let src = pattern(7, VM_SRC_LEN);
        let dst = vec![0u8; VM_DST_LEN];
        let page = page_size();
        // Two pages, the second one inaccessible: reading across is partial.
        let fence = map_anon(2 * page, 0).unwrap();
        // SAFETY: protects the second page of our own fresh mapping.
        let rc = unsafe { libc::mprotect(fence.as_ptr().add(page).cast(), page, libc::PROT_NONE) };
        assert_eq!(rc, 0);
        let addrs: VmAddrs = (src.as_ptr() as u64, dst.as_ptr() as u64, fence.as_ptr() as u64);
        chan.send(&addrs, &[], &[]).unwrap();
        let mut rb = RecvBuf::default();
        chan.recv(&mut rb).unwrap();
        // The parent wrote dst behind our back: read it the way any foreign
        // write must be read.
        let got: Vec<u8> = (0..VM_DST_LEN)
            // SAFETY: `i < dst.len()`, and volatile keeps the compiler from
            // assuming the zeros it wrote are still there.
            .map(|i| unsafe { std::ptr::read_volatile(dst.as_ptr().add(i)) })
            .collect();
        assert_eq!(got, pattern(9, VM_DST_LEN));
        std::hint::black_box(&src);
    }

    #[test]
    fn process_vm_copies_to_and_from_a_child() {
        let (child, chan) = spawn_child("vm");
        let pid = child.id() as i32;
        let mut rb = RecvBuf::default();
        let (src, dst, fence): VmAddrs = chan.recv(&mut rb).unwrap().decode().unwrap();
        let (src, dst, fence) = (src as usize, dst as usize, fence as usize);

        let mut got = vec![0u8; VM_SRC_LEN];
        copy_from_process(pid, src, &mut got).unwrap();
        assert_eq!(got, pattern(7, VM_SRC_LEN));

        // Vectored: two local pieces from three remote ones.
        let (mut a, mut b) = (vec![0u8; 100], vec![0u8; 50]);
        let remote = [
            RemoteRange { addr: src, len: 60 },
            RemoteRange { addr: src + 1000, len: 40 },
            RemoteRange { addr: src + 2000, len: 50 },
        ];
        let n =
            copy_from_process_vectored(pid, &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)], &remote).unwrap();
        assert_eq!(n, 150);
        let p = pattern(7, VM_SRC_LEN);
        assert_eq!(&a[..60], &p[..60]);
        assert_eq!(&a[60..], &p[1000..1040]);
        assert_eq!(&b[..], &p[2000..2050]);

        // Lengths that disagree are refused before the call.
        let err = copy_from_process_vectored(pid, &mut [IoSliceMut::new(&mut a)], &remote).unwrap_err();
        assert!(matches!(err, MemError::ProcessVmShape { local: 100, remote: 150, .. }), "{err}");

        // A bad address: nothing transferred.
        let err = copy_from_process(pid, 8, &mut got[..16]).unwrap_err();
        assert!(matches!(err, MemError::ProcessVmFault { addr: 8, len: 16, .. }), "{err}");

        // Across the end of the accessible memory: partial, and said so.
        let page = page_size();
        let mut two = vec![0u8; 2 * page];
        let err = copy_from_process(pid, fence, &mut two).unwrap_err();
        assert!(
            matches!(err, MemError::ProcessVmPartial { done, wanted, .. } if done == page && wanted == 2 * page),
            "{err}"
        );

        // Write into the child, in two pieces.
        let data = pattern(9, VM_DST_LEN);
        // SAFETY: `pid` is the child, a separate process.
        unsafe { copy_to_process(pid, dst, &data[..1000]) }.unwrap();
        let remote = [RemoteRange { addr: dst + 1000, len: VM_DST_LEN - 1000 }];
        // SAFETY: as above.
        let n = unsafe { copy_to_process_vectored(pid, &[IoSlice::new(&data[1000..])], &remote) }.unwrap();
        assert_eq!(n, VM_DST_LEN - 1000);

        chan.send(&0u64, &[], &[]).unwrap();
        finish(child);

        // The child is gone (and reaped): no such process.
        let err = copy_from_process(pid, src, &mut got).unwrap_err();
        assert!(matches!(err, MemError::NoSuchProcess { pid: p, .. } if p == pid), "{err}");
        // SAFETY: `pid` is not this process (it was the child's).
        let err = unsafe { copy_to_process(pid, dst, &data) }.unwrap_err();
        assert!(matches!(err, MemError::NoSuchProcess { .. }), "{err}");
    }

    /// Drops to an unprivileged user (if root) and tries to read the parent.
    fn child_denied() {
        // SAFETY: a query of our own credentials.
        let was_root = unsafe { libc::geteuid() } == 0;
        // SAFETY: plain syscalls on this process's credentials.
        unsafe {
            if was_root {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                assert_eq!(libc::setgid(65534), 0);
                assert_eq!(libc::setuid(65534), 0);
            }
        }
        let parent = nix::unistd::getppid().as_raw();
        let mut b = [0u8; 8];
        let err = copy_from_process(parent, 4096, &mut b).unwrap_err();
        // Not root from the start: the parent is ours to read, and the
        // address is simply bad.
        assert!(matches!(err, MemError::ProcessVmDenied { .. } | MemError::ProcessVmFault { .. }), "{err}");
        if was_root {
            assert!(matches!(err, MemError::ProcessVmDenied { pid, .. } if pid == parent), "{err}");
        }
    }

    #[test]
    fn process_vm_without_ptrace_rights_is_denied() {
        let (child, _chan) = spawn_child("denied");
        finish(child);
    }

    /// Lowers RLIMIT_MEMLOCK (and drops root's CAP_IPC_LOCK) and asks for
    /// more locked memory than that.
    fn child_memlock() {
        let limit = 64 * 1024;
        nix::sys::resource::setrlimit(Resource::RLIMIT_MEMLOCK, limit, limit).unwrap();
        // SAFETY: plain syscalls on this process's credentials.
        unsafe {
            if libc::geteuid() == 0 {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                assert_eq!(libc::setgid(65534), 0);
                assert_eq!(libc::setuid(65534), 0);
            }
        }
        let err = DmaBuf::new(1 << 20).unwrap_err();
        assert!(matches!(err, MemError::MlockLimit { limit: l, .. } if l == limit), "{err}");
        assert!(err.to_string().contains("RLIMIT_MEMLOCK"), "{err}");
        // Within the limit it works.
        let small = DmaBuf::new(4096).unwrap();
        assert_eq!(small.len(), 4096);
    }

    #[test]
    fn mlock_over_the_limit_says_so() {
        let (child, _chan) = spawn_child("memlock");
        finish(child);
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

    #[test]
    fn dma_buf_is_aligned_locked_and_usable() {
        let page = page_size();
        for len in [1, page + 1, (4 << 20) + 3] {
            let mut b = match DmaBuf::new(len) {
                Ok(b) => b,
                // An unprivileged run with a small RLIMIT_MEMLOCK: the error
                // must say so, and there is nothing else to check.
                Err(e @ MemError::MlockLimit { .. }) => {
                    eprintln!("skipping {len}: {e}");
                    continue;
                }
                Err(e) => panic!("DmaBuf::new({len}): {e}"),
            };
            assert_eq!(b.len(), len);
            assert!(b.mapped_len() >= len);
            assert_eq!(b.as_ptr() as usize % page, 0);
            match b.kind() {
                PageKind::HugeTlb { page_size } => assert_eq!(b.as_ptr() as usize % page_size, 0),
                PageKind::TransparentHuge if b.mapped_len() >= huge_page_size() => {
                    assert_eq!(b.as_ptr() as usize % huge_page_size(), 0)
                }
                PageKind::TransparentHuge | PageKind::Normal => {}
            }
            assert!(b.as_slice().iter().all(|x| *x == 0));
            b.as_mut_slice()[len - 1] = 0xaa;
            assert_eq!(b.as_slice()[len - 1], 0xaa);
            eprintln!("DmaBuf({len}): {:?}", b.kind());
        }
        assert!(matches!(DmaBuf::new(0), Err(MemError::ZeroLength)));
    }
}

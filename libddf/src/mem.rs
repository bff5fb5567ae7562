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

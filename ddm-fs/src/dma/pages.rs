//! The page-level work behind [`super`]: the huge-page pools and their
//! machine-wide lock, the mapping ddm keeps of a region, the long-term pin,
//! and the physical addresses from `/proc/self/pagemap`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use log::{debug, error, warn};

use super::DmaError;

/// Where the kernel lists its huge page sizes and their pools.
pub(super) const HUGEPAGES_DIR: &str = "/sys/kernel/mm/hugepages";

/// The lock that ddm processes on one machine hold while they raise the
/// huge-page pool and reserve from it.
pub(super) const POOL_LOCK: &str = "/run/ddf-hugepages.lock";

/// Where the physical address of each page of this process is.
pub(super) const PAGEMAP: &str = "/proc/self/pagemap";

/// `IORING_REGISTER_BUFFERS` (linux/io_uring.h).
pub(super) const IORING_REGISTER_BUFFERS: libc::c_uint = 0;

/// The longest buffer io_uring registers in one piece.
pub(super) const IORING_BUFFER_MAX: usize = 1 << 30;

/// The size of a base page.
pub(super) fn base_page() -> u64 {
    // SAFETY: sysconf(3) reads a system value; it has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// The huge page sizes this kernel offers, smallest first.
pub(super) fn huge_sizes() -> Vec<u64> {
    let mut sizes: Vec<u64> = std::fs::read_dir(HUGEPAGES_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            kb.checked_mul(1024)
        })
        .collect();
    sizes.sort_unstable();
    sizes
}

/// The sysfs directory of the pool of huge pages of `size` bytes.
pub(super) fn pool_dir(size: u64) -> PathBuf {
    Path::new(HUGEPAGES_DIR).join(format!("hugepages-{}kB", size / 1024))
}

/// Reads a number from a sysfs file.
pub(super) fn read_number(path: &Path) -> io::Result<u64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{} does not hold a number", path.display())))
}

/// What the pool of one huge page size holds now.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pool {
    /// Persistent pages (`nr_hugepages`).
    pub(super) total: u64,
    /// Free pages, reserved ones included.
    pub(super) free: u64,
    /// Free pages reserved for mappings that have not faulted them yet.
    pub(super) resv: u64,
    /// Pages allocated beyond `total`.
    pub(super) surplus: u64,
    /// How many surplus pages the kernel may allocate.
    pub(super) overcommit: u64,
}

impl Pool {
    pub(super) fn read(dir: &Path) -> io::Result<Pool> {
        let n = |f: &str| read_number(&dir.join(f));
        Ok(Pool {
            total: n("nr_hugepages")?,
            free: n("free_hugepages")?,
            resv: n("resv_hugepages")?,
            surplus: n("surplus_hugepages")?,
            overcommit: n("nr_overcommit_hugepages")?,
        })
    }

    /// Pages a new reservation can take without growing the pool.
    pub(super) fn available(&self) -> u64 {
        self.free.saturating_sub(self.resv)
    }
}

/// The machine-wide pool lock, held until dropped (`None`: it could not be
/// taken, and ddm goes on without it).
pub(super) struct PoolLock(#[allow(dead_code)] Option<File>);

impl PoolLock {
    pub(super) fn take() -> PoolLock {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(POOL_LOCK)
            .and_then(|f| {
                // SAFETY: flock(2) on a descriptor we own; it blocks until
                // the lock is ours and touches no memory.
                if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f)
            });
        match file {
            Ok(f) => PoolLock(Some(f)),
            Err(e) => {
                debug!("cannot take {POOL_LOCK} ({e}); changing the huge-page pool without it");
                PoolLock(None)
            }
        }
    }
}

/// `nr_overcommit_hugepages` raised for one allocation; put back on drop.
pub(super) struct Raised {
    pub(super) path: PathBuf,
    pub(super) old: u64,
}

impl Raised {
    /// Lets the kernel allocate `missing` more pages than the pool has free.
    pub(super) fn overcommit(dir: &Path, pool: &Pool, missing: u64) -> io::Result<Raised> {
        let path = dir.join("nr_overcommit_hugepages");
        let new = pool.overcommit.max(pool.surplus).saturating_add(missing);
        std::fs::write(&path, new.to_string())?;
        Ok(Raised { path, old: pool.overcommit })
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, self.old.to_string()) {
            error!("cannot put {} back to {}: {e}", self.path.display(), self.old);
        }
    }
}

/// A mapping of a whole memfd in ddm, read-write, faulted in; unmapped on
/// drop.
#[derive(Debug)]
pub(super) struct Mapping {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
}

// SAFETY: the mapping is owned by its `Mapping` alone and never accessed
// through it (ddm does not read or write DMA memory); only its address is
// used, for pagemap lookups, mlock and the pin.
unsafe impl Send for Mapping {}
// SAFETY: as above: nothing is read or written through the pointer.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(super) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        // SAFETY: a new shared mapping at an address of the kernel's choosing
        // (NULL hint, no MAP_FIXED) replaces nothing; `fd` is open.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Mapping { ptr, len })
    }

    pub(super) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub(super) fn lock(&self) -> io::Result<()> {
        // SAFETY: mlock(2) of exactly our own live mapping.
        if unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, unmapped
        // once, and no reference into it exists.
        if unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) } != 0 {
            warn!("munmap of a DMA region ({} bytes) failed: {}", self.len, io::Error::last_os_error());
        }
    }
}

/// Takes a long-term pin on the pages of `map`: registers it as the fixed
/// buffers of a new io_uring, which pins every page (`FOLL_LONGTERM`) until
/// the ring is closed.
pub(super) fn pin(map: &Mapping) -> io::Result<OwnedFd> {
    // struct io_uring_params: 120 bytes, all zero (no flags).
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup(2) with one entry and a zeroed params struct of
    // the kernel's size, which it reads and writes; it returns a new
    // descriptor (close-on-exec) or an error.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1 as libc::c_uint, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor, owned by nobody else.
    let ring = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let iovecs: Vec<libc::iovec> = (0..map.len)
        .step_by(IORING_BUFFER_MAX)
        .map(|off| libc::iovec {
            iov_base: (map.addr() + off) as *mut libc::c_void,
            iov_len: (map.len - off).min(IORING_BUFFER_MAX),
        })
        .collect();
    // SAFETY: io_uring_register(2) on our ring with an array of `iovecs.len()`
    // iovecs that lives across the call and describes our own live mapping.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_BUFFERS,
            iovecs.as_ptr(),
            iovecs.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ring)
}

/// The physical address of each page of `page` bytes of `map`, read from
/// the pagemap; checks that every page is present, one run of consecutive
/// frames, and aligned to its size.
pub(super) fn resolve(map: &Mapping, page: u64) -> Result<Vec<u64>, DmaError> {
    let base = base_page();
    let entries = map.len / base as usize;
    let pagemap = File::open(PAGEMAP).map_err(DmaError::Pagemap)?;
    let mut raw = vec![0u8; entries * 8];
    pagemap.read_exact_at(&mut raw, (map.addr() as u64 / base) * 8).map_err(DmaError::Pagemap)?;
    let frames: Vec<u64> = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
    let per_page = (page / base) as usize;
    let mut pages = Vec::with_capacity(entries / per_page);
    for (index, chunk) in frames.chunks(per_page).enumerate() {
        let mut first = None;
        for (k, e) in chunk.iter().enumerate() {
            if e >> 63 == 0 {
                return Err(DmaError::NotPresent { index });
            }
            let pfn = e & ((1 << 55) - 1);
            if pfn == 0 {
                return Err(DmaError::NoAddresses);
            }
            match first {
                None => first = Some(pfn),
                Some(f) if pfn == f + k as u64 => {}
                Some(_) => return Err(DmaError::NotContiguous { index }),
            }
        }
        let addr = first.unwrap_or(0) * base;
        if addr % page != 0 {
            return Err(DmaError::NotContiguous { index });
        }
        pages.push(addr);
    }
    Ok(pages)
}

//! DMA memory for drivers: memory a device can address, which ddm allocates
//! for a driver whose manifest asks for it (`[dma] bytes = "4M"`,
//! `contiguous = "2M"`), keeps for the driver instance across its
//! incarnations, and frees when the instance stops.
//!
//! The privileged part is done here, because drivers run unprivileged and
//! sandboxed: only root can read the physical addresses of pages
//! (`/proc/self/pagemap`) and change the huge-page pool. For each request:
//!
//! 1. **Accounting.** The bytes (rounded up to whole pages) are reserved
//!    against `ddm --dma-limit` ([`Budget`]), the most all drivers together
//!    may hold; past it the request is refused.
//! 2. **Huge pages.** A hugetlb memfd (`MFD_HUGETLB`) of the smallest huge
//!    page size at least as large as `contiguous`: every huge page is
//!    physically contiguous. The pages come from the pool the administrator
//!    reserved (`vm.nr_hugepages`). When it has too few free, ddm lets the
//!    kernel allocate the missing ones for this allocation only
//!    (`nr_overcommit_hugepages` is raised just for the reservation and put
//!    back at once, under a machine-wide lock that other ddm processes take
//!    too): such *surplus* pages go back to the kernel when they are freed,
//!    so the pool is as it was once the memory is freed, even if ddm dies.
//!    `ddm --dma-reserved-only` forbids that: only reserved pages are used.
//! 3. **Without huge pages.** If none can be had, the request fails with a
//!    message that names it and says what to do (`vm.nr_hugepages`), unless
//!    it accepts page-sized segments (`contiguous = "4K"`): then it gets an
//!    ordinary memfd of locked base pages, one segment per page.
//! 4. **Pinning.** ddm maps the memfd, faults every page in, seals the size
//!    (`F_SEAL_SHRINK`, `F_SEAL_GROW`), locks the mapping (`mlock`), and
//!    takes a long-term pin on the pages by registering the mapping as an
//!    io_uring fixed buffer (`FOLL_LONGTERM`): the kernel then neither swaps
//!    nor migrates them. If io_uring is not available the region is locked
//!    only, and says so (`pinned: false`).
//! 5. **Addresses.** Only after the pin (which may first move a page out of
//!    a movable zone) does ddm read the physical address of every page from
//!    its own `/proc/self/pagemap`, and check that each page's frames are
//!    consecutive.
//!
//! The driver gets the memfd and the page addresses in a
//! [`ddf::proto::DdmToDriver::Dma`] grant before every incarnation's
//! `Start` (see [`ddf::mem::DmaRegion`] for what it may rely on). Before
//! handing the region to a new incarnation ddm checks that it is still the
//! memory it pinned ([`Region::intact`]): a driver that punched holes into
//! its memfd (`fallocate`) would otherwise get stale addresses; such a
//! region is replaced by a new one, and the driver loses its contents.
//!
//! The region is freed (unmapped, unpinned, closed, the budget released)
//! when its instance is stopped: unloaded (`ddmctl unload`), stopped by the
//! plugin manager when it has no device left, or at ddm's shutdown. A
//! quarantined driver keeps it for its `ddmctl restart`.
//!
//! `ddmctl status` and the driver's `user.ddf.dma_*` attributes show its
//! size, page size, segments and whether it is pinned, not the addresses:
//! those are privileged information, for the driver alone.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ddf::params::Size;
use ddf::proto::{DmaGrant, DmaStatus};
use log::{debug, error, info, warn};

use crate::manifest::Dma;

/// Where the kernel lists its huge page sizes and their pools.
const HUGEPAGES_DIR: &str = "/sys/kernel/mm/hugepages";

/// The lock that ddm processes on one machine hold while they raise the
/// huge-page pool and reserve from it.
const POOL_LOCK: &str = "/run/ddf-hugepages.lock";

/// Where the physical address of each page of this process is.
const PAGEMAP: &str = "/proc/self/pagemap";

/// `--dma-limit` when none is given.
pub const DEFAULT_LIMIT: u64 = 64 << 20;

/// `IORING_REGISTER_BUFFERS` (linux/io_uring.h).
const IORING_REGISTER_BUFFERS: libc::c_uint = 0;

/// The longest buffer io_uring registers in one piece.
const IORING_BUFFER_MAX: usize = 1 << 30;

/// Why a driver's DMA memory could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    /// The request would take ddm past `--dma-limit`.
    #[error(
        "[dma] asks for {asked}, which would bring the DMA memory of all drivers to {total}, past ddm's --dma-limit of {limit} ({in_use} held by other drivers): raise --dma-limit or ask for less"
    )]
    OverLimit {
        /// Bytes asked for (whole pages).
        asked: Size,
        /// Bytes other drivers hold.
        in_use: Size,
        /// What all would hold.
        total: Size,
        /// The limit.
        limit: Size,
    },
    /// Not enough huge pages, and page-sized segments are not accepted.
    #[error(
        "[dma] bytes = \"{bytes}\", contiguous = \"{contiguous}\" needs {pages} huge pages of {page}, and they cannot be had: the pool has {free} free{why}; reserve huge pages ({reserve}){fallback}"
    )]
    NoHugePages {
        /// The request's size.
        bytes: Size,
        /// The request's contiguity.
        contiguous: Size,
        /// Huge pages needed.
        pages: u64,
        /// Their size.
        page: Size,
        /// Free (unreserved) pages of that size in the pool.
        free: u64,
        /// Why ddm could not get more (begins with `, `).
        why: String,
        /// The command that reserves enough.
        reserve: String,
        /// What else the manifest could say (begins with `, `), if anything.
        fallback: String,
    },
    /// No huge page size is as large as the contiguity asked for.
    #[error(
        "[dma] contiguous = \"{contiguous}\" needs huge pages of at least that size, and this machine has {sizes}"
    )]
    NoPageSize {
        /// The contiguity asked for.
        contiguous: Size,
        /// The sizes there are.
        sizes: String,
    },
    /// `memfd_create` failed.
    #[error("memfd_create({name:?}) failed")]
    Memfd {
        /// The memfd's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Sizing the memfd failed.
    #[error("sizing the memfd to {len} bytes failed")]
    Ftruncate {
        /// The size.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Mapping (and faulting in) the memfd failed.
    #[error("mapping {len} bytes failed")]
    Mmap {
        /// The size.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Sealing the memfd's size failed.
    #[error("sealing the memfd failed")]
    Seal(#[source] io::Error),
    /// `mlock` failed.
    #[error("locking {len} bytes in memory failed")]
    Mlock {
        /// The size.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `/proc/self/pagemap` could not be read.
    #[error("reading {PAGEMAP} failed")]
    Pagemap(#[source] io::Error),
    /// The pagemap shows no frame numbers: ddm lacks `CAP_SYS_ADMIN`.
    #[error("{PAGEMAP} shows no physical addresses: ddm must run as root (CAP_SYS_ADMIN) to resolve DMA memory")]
    NoAddresses,
    /// A page was not in memory after it was faulted in and locked.
    #[error("page {index} of the region is not in memory after it was faulted in")]
    NotPresent {
        /// The page.
        index: usize,
    },
    /// A page's frames are not consecutive, or not aligned to its size.
    #[error("page {index} of the region is not one physically contiguous, aligned run")]
    NotContiguous {
        /// The page.
        index: usize,
    },
}

/// The DMA memory all drivers together may hold (`--dma-limit`), and what
/// they hold.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget { limit, used: AtomicU64::new(0) })
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes `bytes` out of the budget until the reservation is dropped.
    fn reserve(self: &Arc<Budget>, bytes: u64) -> Result<Reservation, DmaError> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let total = used.saturating_add(bytes);
            if total > self.limit {
                return Err(DmaError::OverLimit {
                    asked: Size(bytes),
                    in_use: Size(used),
                    total: Size(total),
                    limit: Size(self.limit),
                });
            }
            match self.used.compare_exchange_weak(used, total, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Reservation { budget: self.clone(), bytes }),
                Err(now) => used = now,
            }
        }
    }
}

/// Bytes taken out of a [`Budget`]; given back on drop.
#[derive(Debug)]
struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The size of a base page.
fn base_page() -> u64 {
    // SAFETY: sysconf(3) reads a system value; it has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// The huge page sizes this kernel offers, smallest first.
fn huge_sizes() -> Vec<u64> {
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
fn pool_dir(size: u64) -> PathBuf {
    Path::new(HUGEPAGES_DIR).join(format!("hugepages-{}kB", size / 1024))
}

/// Reads a number from a sysfs file.
fn read_number(path: &Path) -> io::Result<u64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{} does not hold a number", path.display())))
}

/// What the pool of one huge page size holds now.
#[derive(Debug, Clone, Copy, Default)]
struct Pool {
    /// Persistent pages (`nr_hugepages`).
    total: u64,
    /// Free pages, reserved ones included.
    free: u64,
    /// Free pages reserved for mappings that have not faulted them yet.
    resv: u64,
    /// Pages allocated beyond `total`.
    surplus: u64,
    /// How many surplus pages the kernel may allocate.
    overcommit: u64,
}

impl Pool {
    fn read(dir: &Path) -> io::Result<Pool> {
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
    fn available(&self) -> u64 {
        self.free.saturating_sub(self.resv)
    }
}

/// The machine-wide pool lock, held until dropped (`None`: it could not be
/// taken, and ddm goes on without it).
struct PoolLock(#[allow(dead_code)] Option<File>);

impl PoolLock {
    fn take() -> PoolLock {
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
struct Raised {
    path: PathBuf,
    old: u64,
}

impl Raised {
    /// Lets the kernel allocate `missing` more pages than the pool has free.
    fn overcommit(dir: &Path, pool: &Pool, missing: u64) -> io::Result<Raised> {
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
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by its `Mapping` alone and never accessed
// through it (ddm does not read or write DMA memory); only its address is
// used, for pagemap lookups, mlock and the pin.
unsafe impl Send for Mapping {}
// SAFETY: as above: nothing is read or written through the pointer.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
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

    fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    fn lock(&self) -> io::Result<()> {
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
fn pin(map: &Mapping) -> io::Result<OwnedFd> {
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
fn resolve(map: &Mapping, page: u64) -> Result<Vec<u64>, DmaError> {
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

/// Why no huge page could be had, for [`DmaError::NoHugePages`].
enum Short {
    /// `--dma-reserved-only`.
    ReservedOnly,
    /// Raising the pool failed.
    CannotRaise(io::Error),
    /// The kernel would not give the pages (memory short or fragmented, or
    /// taken by someone else meanwhile).
    Refused,
}

/// One driver's DMA memory, held by ddm: the memfd, ddm's own locked
/// mapping, the pin, the page addresses, and its share of the budget.
#[derive(Debug)]
pub struct Region {
    memfd: OwnedFd,
    map: Mapping,
    /// The io_uring whose fixed buffers pin the pages (`None`: locked only).
    pin: Option<OwnedFd>,
    page_size: u64,
    pages: Vec<u64>,
    huge: bool,
    /// Declared last: given back after the memory is.
    _reservation: Reservation,
}

impl Region {
    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.map.len as u64
    }

    /// Whether it holds nothing (never: a region has at least one page).
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }

    /// The grant a driver gets with [`Region::memfd`].
    pub fn grant(&self) -> DmaGrant {
        DmaGrant { len: self.len(), page_size: self.page_size, pages: self.pages.clone(), pinned: self.pin.is_some() }
    }

    /// The memfd, to send with the grant.
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// What `ddmctl status` shows of it.
    pub fn status(&self) -> DmaStatus {
        DmaStatus {
            bytes: self.len(),
            page_size: self.page_size,
            segments: self.pages.len() as u32,
            pinned: self.pin.is_some(),
        }
    }

    /// For log lines: `4M in 2 huge pages of 2M, pinned`.
    pub fn describe(&self) -> String {
        format!(
            "{} in {} {}pages of {}, {}",
            Size(self.len()),
            self.pages.len(),
            if self.huge { "huge " } else { "locked " },
            Size(self.page_size),
            if self.pin.is_some() { "pinned" } else { "not pinned (locked only)" }
        )
    }

    /// Whether every page is still the one pinned and resolved: a driver
    /// that punched a hole into the memfd took pages out of it.
    pub fn intact(&self) -> bool {
        resolve(&self.map, self.page_size).is_ok_and(|now| now == self.pages)
    }

    /// A region over an ordinary memfd with made-up addresses, for the
    /// core's unit tests (no root, no pin).
    #[cfg(test)]
    pub fn fake(budget: &Arc<Budget>, pages: usize) -> Region {
        let len = pages * 4096;
        let _reservation = budget.reserve(len as u64).unwrap_or_else(|e| panic!("{e}"));
        let memfd = nix::sys::memfd::memfd_create(c"ddf-dma-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap_or_else(|e| panic!("{e}"));
        nix::unistd::ftruncate(&memfd, len as i64).unwrap_or_else(|e| panic!("{e}"));
        let map = Mapping::new(memfd.as_fd(), len).unwrap_or_else(|e| panic!("{e}"));
        let pages = (0..pages as u64).map(|i| 0x1_0000_0000 + i * 0x2000).collect();
        Region { memfd, map, pin: None, page_size: 4096, pages, huge: false, _reservation }
    }
}

/// Allocates DMA memory for drivers, within the budget.
#[derive(Debug)]
pub struct Allocator {
    budget: Arc<Budget>,
    reserved_only: bool,
}

impl Allocator {
    /// An allocator with `limit` bytes for all drivers; with
    /// `reserved_only`, it never grows the huge-page pool.
    pub fn new(limit: u64, reserved_only: bool) -> Allocator {
        Allocator { budget: Budget::new(limit), reserved_only }
    }

    /// What all drivers hold, and the limit.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Allocates, locks, pins and resolves the memory `req` asks for, for
    /// driver `instance`.
    pub fn allocate(&self, instance: &str, req: &Dma) -> Result<Region, DmaError> {
        let base = base_page();
        let contiguous = req.contiguous.bytes();
        let sizes = huge_sizes();
        let name = format!("ddf-dma:{instance}");
        let Some(huge) = sizes.iter().copied().find(|s| *s >= contiguous) else {
            if contiguous <= base {
                return self.small(instance, &name, req, base);
            }
            let sizes = if sizes.is_empty() {
                "no huge pages at all".to_owned()
            } else {
                let s: Vec<String> = sizes.iter().map(|s| Size(*s).to_string()).collect();
                format!("huge pages of {}", s.join(", "))
            };
            return Err(DmaError::NoPageSize { contiguous: req.contiguous, sizes });
        };
        match self.huge(instance, &name, req, huge) {
            Err(DmaError::NoHugePages { .. }) if contiguous <= base => {
                info!(
                    "driver {instance}: no huge pages to be had for its DMA memory; it gets locked pages of {}, as its manifest allows (contiguous = \"{}\")",
                    Size(base),
                    req.contiguous
                );
                self.small(instance, &name, req, base)
            }
            other => other,
        }
    }

    /// Huge pages of `page` bytes, from the pool (grown if need be).
    fn huge(&self, instance: &str, name: &str, req: &Dma, page: u64) -> Result<Region, DmaError> {
        let len = req.bytes.bytes().div_ceil(page) * page;
        let pages = len / page;
        let reservation = self.budget.reserve(len)?;
        let flags = libc::MFD_HUGETLB | (page.trailing_zeros() << libc::MFD_HUGE_SHIFT);
        let memfd = memfd(name, flags)?;
        size(&memfd, len)?;
        let dir = pool_dir(page);
        let map = {
            let _lock = PoolLock::take();
            let pool = Pool::read(&dir).unwrap_or_default();
            let short = |why: Short| no_huge_pages(req, page, pages, &pool, why);
            let _raised = if pool.available() < pages {
                if self.reserved_only {
                    return Err(short(Short::ReservedOnly));
                }
                let missing = pages - pool.available();
                let raised = Raised::overcommit(&dir, &pool, missing).map_err(|e| short(Short::CannotRaise(e)))?;
                info!(
                    "driver {instance}: the huge-page pool has {} of the {pages} pages of {} its DMA memory needs free; letting the kernel allocate {missing} more (surplus pages, given back to it when freed)",
                    pool.available(),
                    Size(page)
                );
                Some(raised)
            } else {
                None
            };
            match Mapping::new(memfd.as_fd(), len as usize) {
                Ok(m) => m,
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => return Err(short(Short::Refused)),
                Err(source) => return Err(DmaError::Mmap { len, source }),
            }
        };
        finish(memfd, map, page, true, reservation)
    }

    /// Ordinary locked pages of `page` bytes (the base page).
    fn small(&self, _instance: &str, name: &str, req: &Dma, page: u64) -> Result<Region, DmaError> {
        let len = req.bytes.bytes().div_ceil(page) * page;
        let reservation = self.budget.reserve(len)?;
        let memfd = memfd(name, 0)?;
        size(&memfd, len)?;
        let map = Mapping::new(memfd.as_fd(), len as usize).map_err(|source| DmaError::Mmap { len, source })?;
        finish(memfd, map, page, false, reservation)
    }
}

/// The error for huge pages that cannot be had, with what to do.
fn no_huge_pages(req: &Dma, page: u64, pages: u64, pool: &Pool, why: Short) -> DmaError {
    let why = match why {
        Short::ReservedOnly => ", and ddm may take only reserved pages (--dma-reserved-only)".to_owned(),
        Short::CannotRaise(e) => format!(", and ddm could not raise the pool ({e})"),
        Short::Refused => {
            ", and the kernel could not allocate more (too little free memory, or too fragmented)".to_owned()
        }
    };
    let want = pool.total + pages.saturating_sub(pool.available());
    let default_size = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("Hugepagesize:").map(|v| v.trim().to_owned())))
        .and_then(|v| v.strip_suffix("kB").and_then(|k| k.trim().parse::<u64>().ok()))
        .map(|kb| kb * 1024);
    let reserve = if default_size == Some(page) {
        format!("sysctl vm.nr_hugepages={want}, or echo {want} > /proc/sys/vm/nr_hugepages")
    } else {
        format!("echo {want} > {}", pool_dir(page).join("nr_hugepages").display())
    };
    let fallback = if req.contiguous.bytes() > base_page() {
        format!(", or accept page-sized segments with contiguous = \"{}\"", Size(base_page()))
    } else {
        String::new()
    };
    DmaError::NoHugePages {
        bytes: req.bytes,
        contiguous: req.contiguous,
        pages,
        page: Size(page),
        free: pool.available(),
        why,
        reserve,
        fallback,
    }
}

/// A new memfd named `name`, close-on-exec, sealable, with `flags`.
fn memfd(name: &str, flags: libc::c_uint) -> Result<OwnedFd, DmaError> {
    let err = |source| DmaError::Memfd { name: name.to_owned(), source };
    let cname = std::ffi::CString::new(name).map_err(|_| err(io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: memfd_create(2) with a valid C string; it returns a new
    // descriptor or an error.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | flags) };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: the kernel just gave us this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sizes a new memfd.
fn size(memfd: &OwnedFd, len: u64) -> Result<(), DmaError> {
    let off = libc::off_t::try_from(len)
        .map_err(|_| DmaError::Ftruncate { len, source: io::Error::from_raw_os_error(libc::EFBIG) })?;
    nix::unistd::ftruncate(memfd, off).map_err(|e| DmaError::Ftruncate { len, source: e.into() })
}

/// Seals, locks, pins and resolves a faulted-in mapping of `memfd`.
fn finish(memfd: OwnedFd, map: Mapping, page: u64, huge: bool, reservation: Reservation) -> Result<Region, DmaError> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| DmaError::Seal(e.into()))?;
    map.lock().map_err(|source| DmaError::Mlock { len: map.len as u64, source })?;
    let pin = match pin(&map) {
        Ok(ring) => Some(ring),
        Err(e) => {
            warn!("DMA memory cannot be pinned ({e}: io_uring is needed); it is locked only, which keeps it in memory but does not forbid every migration");
            None
        }
    };
    let pages = resolve(&map, page)?;
    Ok(Region { memfd, map, pin, page_size: page, pages, huge, _reservation: reservation })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_budget_refuses_past_its_limit_and_takes_back_what_is_freed() {
        let b = Budget::new(4 << 20);
        let a = b.reserve(2 << 20).unwrap();
        let err = b.reserve(4 << 20).unwrap_err().to_string();
        assert!(
            err.contains("asks for 4M")
                && err.contains("to 6M, past ddm's --dma-limit of 4M (2M held by other drivers)")
                && err.contains("raise --dma-limit"),
            "{err}"
        );
        let c = b.reserve(2 << 20).unwrap();
        assert_eq!(b.used(), 4 << 20);
        drop(a);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(b.reserve(4 << 20).is_ok());
    }

    #[test]
    fn no_huge_pages_says_what_was_asked_and_what_to_do() {
        let req = Dma { bytes: Size(4 << 20), contiguous: Size(2 << 20) };
        let pool = Pool { total: 1, free: 1, resv: 0, surplus: 0, overcommit: 0 };
        let e = no_huge_pages(&req, 2 << 20, 2, &pool, Short::ReservedOnly).to_string();
        assert!(e.starts_with("[dma] bytes = \"4M\", contiguous = \"2M\" needs 2 huge pages of 2M"), "{e}");
        assert!(e.contains("the pool has 1 free, and ddm may take only reserved pages (--dma-reserved-only)"), "{e}");
        assert!(e.contains("vm.nr_hugepages=2") || e.contains("echo 2 > "), "{e}");
        assert!(e.ends_with("or accept page-sized segments with contiguous = \"4K\""), "{e}");
    }

    #[test]
    fn a_contiguity_no_page_size_has_is_refused_before_anything_is_taken() {
        let alloc = Allocator::new(16 << 30, true);
        let req = Dma { bytes: Size(16 << 30), contiguous: Size(16 << 30) };
        let e = alloc.allocate("t", &req).unwrap_err();
        assert!(matches!(e, DmaError::NoPageSize { .. }), "{e}");
        assert!(e.to_string().starts_with("[dma] contiguous = \"16G\" needs huge pages of at least that size"), "{e}");
        assert_eq!(alloc.budget().used(), 0);
    }

    #[test]
    fn locked_pages_resolve_to_their_frames_as_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: resolving physical addresses needs root");
            return;
        }
        let alloc = Allocator::new(1 << 20, true);
        let req = Dma { bytes: Size(3 * 4096 + 1), contiguous: Size(4096) };
        let r = alloc.small("t", "ddf-dma:test", &req, 4096).unwrap();
        assert_eq!((r.len(), r.grant().pages.len()), (4 * 4096, 4));
        assert_eq!(alloc.budget().used(), 4 * 4096);
        assert!(r.grant().pages.iter().all(|a| *a != 0 && a % 4096 == 0));
        assert!(r.intact());
        // Punching a page out of the memfd is seen.
        // SAFETY: fallocate(2) on our own memfd.
        let rc = unsafe {
            libc::fallocate(r.memfd().as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 4096, 4096)
        };
        assert_eq!(rc, 0);
        assert!(!r.intact());
        drop(r);
        assert_eq!(alloc.budget().used(), 0);
    }
}

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

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ddf::params::Size;
use ddf::proto::{DmaGrant, DmaStatus};
use log::{info, warn};

use crate::manifest::Dma;

mod pages;
use pages::{base_page, huge_sizes, pin, pool_dir, resolve, Mapping, Pool, PoolLock, Raised, PAGEMAP};

/// `--dma-limit` when none is given.
pub const DEFAULT_LIMIT: u64 = 64 << 20;

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
    use std::os::fd::AsRawFd;

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

//! The storage of a RAM disk, apart from any driver: a byte array of fixed
//! capacity in a sealed memfd, with the read/write rules of a Linux block
//! device. Tested here without a DDM.
//!
//! ## End-of-device rules
//!
//! These follow the kernel's own block device file operations
//! (`blkdev_read_iter` and `blkdev_write_iter` in `block/fops.c`), so that a
//! program sees the same thing on `/ddf/ram0` as on `/dev/ram0`:
//!
//! - a read at or past the end returns 0 bytes (end of file); a read that
//!   crosses the end returns the bytes up to the end (a short read);
//! - a write of 0 bytes returns 0, wherever it is;
//! - a write that starts at or past the end fails with `ENOSPC`;
//! - a write that crosses the end writes what fits and returns that (short)
//!   count; the caller's next write, at the end, gets `ENOSPC`.
//!
//! Vectored reads and writes ([`Disk::scatter`], [`Disk::gather`]) are one
//! contiguous transfer from the offset on, spread over the buffers in order,
//! and follow the same rules as a whole.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};

use ddf::mem::SharedBuf;
use ddf::Errno;

use crate::RamdiskError;

/// The name of a RAM disk's memfd (in `/proc/PID/maps`: `memfd:ddf-ramdisk`).
pub const MEMFD_NAME: &str = "ddf-ramdisk";

/// A RAM disk's contents: `size` bytes in a sealed memfd.
///
/// The memfd outlives the driver if someone else holds a descriptor of it
/// (the DDM's state store): [`Disk::from_memfd`] picks the contents up again
/// in the driver's next incarnation.
#[derive(Debug)]
pub struct Disk {
    buf: SharedBuf,
    /// The capacity, in bytes; equal to `buf.len()`.
    len: usize,
}

impl Disk {
    /// A new, zero-filled disk of `size` bytes. The memory is taken only as
    /// it is written: a 1 GiB disk that holds 4 KiB costs 4 KiB.
    pub fn new(size: u64) -> Result<Disk, RamdiskError> {
        let len = Self::len_of(size)?;
        let buf = SharedBuf::new(MEMFD_NAME, len)?;
        Ok(Disk { buf, len })
    }

    /// The disk kept in an existing memfd (one that an earlier incarnation
    /// of the driver made and left with the DDM's state store). The memfd is
    /// verified as [`SharedBuf::accept`] does: it must be a sealed memfd of
    /// exactly `size` bytes, or it is refused ([`ddf::mem::MemError`]).
    pub fn from_memfd(fd: OwnedFd, size: u64) -> Result<Disk, RamdiskError> {
        let len = Self::len_of(size)?;
        let buf = SharedBuf::accept(fd, len)?;
        Ok(Disk { buf, len })
    }

    fn len_of(size: u64) -> Result<usize, RamdiskError> {
        match usize::try_from(size) {
            Ok(0) | Err(_) => Err(RamdiskError::Capacity(size)),
            Ok(len) => Ok(len),
        }
    }

    /// The capacity in bytes (the device's `st_size`).
    pub fn size(&self) -> u64 {
        self.len as u64
    }

    /// The memfd holding the contents, to hand over (a state store, a FUSE
    /// passthrough backing file) with [`ddf::ipc::Channel::send`].
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.buf.grant()
    }

    /// A descriptor of the memfd of one's own, to keep after the disk is
    /// gone.
    pub fn try_clone_memfd(&self) -> Result<OwnedFd, RamdiskError> {
        Ok(self.buf.try_clone_fd()?)
    }

    /// Where `offset` is, if inside the disk.
    fn inside(&self, offset: u64) -> Option<usize> {
        usize::try_from(offset).ok().filter(|o| *o < self.len)
    }

    /// Copies out what of `buf.len()` bytes at `off` (inside) fits.
    fn copy_out(&self, off: usize, buf: &mut [u8]) -> Result<usize, Errno> {
        let n = buf.len().min(self.len - off);
        self.buf.read_at(off, &mut buf[..n]).map_err(|e| {
            log::error!("ramdisk read of {n} bytes at {off}: {e}");
            Errno::EIO
        })?;
        Ok(n)
    }

    /// Copies in what of `data` at `off` (inside) fits.
    fn copy_in(&mut self, off: usize, data: &[u8]) -> Result<usize, Errno> {
        let n = data.len().min(self.len - off);
        self.buf.write_at(off, &data[..n]).map_err(|e| {
            log::error!("ramdisk write of {n} bytes at {off}: {e}");
            Errno::EIO
        })?;
        Ok(n)
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many: fewer at
    /// the end of the disk, 0 at or past it.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        match self.inside(offset) {
            Some(off) => self.copy_out(off, buf),
            None => Ok(0),
        }
    }

    /// Writes `data` at `offset`; returns how many bytes were written: all,
    /// or what fits before the end. `ENOSPC` if a non-empty write starts at
    /// or past the end.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        if data.is_empty() {
            return Ok(0);
        }
        match self.inside(offset) {
            Some(off) => self.copy_in(off, data),
            None => Err(Errno::ENOSPC),
        }
    }

    /// `readv`: fills `bufs` in order from `offset` on; returns the bytes
    /// read (short at the end of the disk, 0 at or past it).
    pub fn scatter(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> Result<usize, Errno> {
        let Some(mut off) = self.inside(offset) else {
            return Ok(0);
        };
        let mut total = 0;
        for b in bufs.iter_mut() {
            if off == self.len {
                break;
            }
            let n = self.copy_out(off, b)?;
            off += n;
            total += n;
        }
        Ok(total)
    }

    /// `writev`: writes `bufs` in order from `offset` on; returns the bytes
    /// written (short if the end comes first). `ENOSPC` if there is
    /// something to write and `offset` is at or past the end.
    pub fn gather(&mut self, offset: u64, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        let Some(mut off) = self.inside(offset) else {
            return Err(Errno::ENOSPC);
        };
        let mut total = 0;
        for b in bufs {
            if off == self.len {
                break;
            }
            let n = self.copy_in(off, b)?;
            off += n;
            total += n;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// xorshift64*: small, seeded, good enough to pick offsets.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Uniform-ish in `0..n` (n > 0).
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// What a block device answers, computed on a plain vector.
    struct Model(Vec<u8>);

    impl Model {
        fn read(&self, offset: u64, len: usize) -> Vec<u8> {
            let size = self.0.len() as u64;
            if offset >= size {
                return Vec::new();
            }
            let end = (offset + len as u64).min(size);
            self.0[offset as usize..end as usize].to_vec()
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<usize, Errno> {
            let size = self.0.len() as u64;
            if data.is_empty() {
                return Ok(0);
            }
            if offset >= size {
                return Err(Errno::ENOSPC);
            }
            let n = data.len().min((size - offset) as usize);
            self.0[offset as usize..offset as usize + n].copy_from_slice(&data[..n]);
            Ok(n)
        }
    }

    /// Splits `total` into 1..=5 random pieces (some may be empty).
    fn pieces(rng: &mut Rng, total: usize) -> Vec<usize> {
        let k = 1 + rng.below(5) as usize;
        let mut cuts: Vec<usize> = (0..k - 1).map(|_| rng.below(total as u64 + 1) as usize).collect();
        cuts.push(0);
        cuts.push(total);
        cuts.sort_unstable();
        cuts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn random_workload_matches_the_model() {
        // An odd size, so that the end is not page-aligned.
        const SIZE: u64 = (1 << 20) + 4099;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut disk = Disk::new(SIZE).unwrap();
        let mut model = Model(vec![0; SIZE as usize]);
        let (mut short, mut nospc, mut eof) = (0, 0, 0);
        for step in 0..6000 {
            // Offsets mostly anywhere, often near the end, sometimes past it.
            let offset = match rng.below(4) {
                0 => SIZE - rng.below(70_000).min(SIZE),
                1 => SIZE + rng.below(10_000),
                _ => rng.below(SIZE),
            };
            let len = match rng.below(8) {
                0 => 0,
                1 => rng.below(200_000) as usize,
                _ => rng.below(9000) as usize,
            };
            match rng.below(4) {
                0 => {
                    let data = rng.bytes(len);
                    let want = model.write(offset, &data);
                    assert_eq!(disk.write_at(offset, &data), want, "step {step}: write {len} at {offset}");
                    match want {
                        Ok(n) if n < len => short += 1,
                        Err(_) => nospc += 1,
                        Ok(_) => {}
                    }
                }
                1 => {
                    let mut buf = vec![0xee; len];
                    let n = disk.read_at(offset, &mut buf).unwrap();
                    let want = model.read(offset, len);
                    assert_eq!(&buf[..n], &want[..], "step {step}: read {len} at {offset}");
                    if n == 0 && len > 0 {
                        eof += 1;
                    }
                }
                2 => {
                    let data = rng.bytes(len);
                    let parts = pieces(&mut rng, len);
                    let mut rest = &data[..];
                    let mut slices = Vec::new();
                    for p in &parts {
                        let (a, b) = rest.split_at(*p);
                        slices.push(IoSlice::new(a));
                        rest = b;
                    }
                    let want = model.write(offset, &data);
                    assert_eq!(disk.gather(offset, &slices), want, "step {step}: gather {parts:?} at {offset}");
                }
                _ => {
                    let parts = pieces(&mut rng, len);
                    let mut buf = vec![0xee; len];
                    let n = {
                        let mut rest = &mut buf[..];
                        let mut slices = Vec::new();
                        for p in &parts {
                            let (a, b) = rest.split_at_mut(*p);
                            slices.push(IoSliceMut::new(a));
                            rest = b;
                        }
                        disk.scatter(offset, &mut slices).unwrap()
                    };
                    let want = model.read(offset, len);
                    assert_eq!(&buf[..n], &want[..], "step {step}: scatter {parts:?} at {offset}");
                }
            }
        }
        // The workload did reach the edge cases.
        assert!(short > 10 && nospc > 10 && eof > 10, "short {short} nospc {nospc} eof {eof}");
        // And the whole disk agrees with the model at the end.
        let mut all = vec![0; SIZE as usize];
        assert_eq!(disk.read_at(0, &mut all).unwrap(), SIZE as usize);
        assert!(all == model.0);
    }

    #[test]
    fn end_of_device() {
        let mut d = Disk::new(1000).unwrap();
        assert_eq!(d.size(), 1000);
        let mut b = [0u8; 64];
        // Reads: short across the end, EOF at and past it.
        assert_eq!(d.write_at(990, &[7; 10]), Ok(10));
        assert_eq!(d.read_at(980, &mut b), Ok(20));
        assert_eq!(&b[10..20], &[7; 10]);
        assert_eq!(d.read_at(1000, &mut b), Ok(0));
        assert_eq!(d.read_at(5000, &mut b), Ok(0));
        assert_eq!(d.read_at(u64::MAX, &mut b), Ok(0));
        // Writes: short across the end, ENOSPC at and past it, 0 bytes is 0.
        assert_eq!(d.write_at(995, &[1; 64]), Ok(5));
        assert_eq!(d.write_at(1000, &[1; 64]), Err(Errno::ENOSPC));
        assert_eq!(d.write_at(u64::MAX, &[1]), Err(Errno::ENOSPC));
        assert_eq!(d.write_at(1000, &[]), Ok(0));
        assert_eq!(d.write_at(u64::MAX, &[]), Ok(0));
        assert_eq!(d.write_at(999, &[2]), Ok(1));
        let mut last = [0u8; 1];
        assert_eq!(d.read_at(999, &mut last), Ok(1));
        assert_eq!(last, [2]);
        // Vectored, the same rules over the whole transfer.
        let (a, c) = ([3u8; 4], [4u8; 8]);
        assert_eq!(d.gather(994, &[IoSlice::new(&a), IoSlice::new(&c)]), Ok(6));
        assert_eq!(d.gather(1000, &[IoSlice::new(&a)]), Err(Errno::ENOSPC));
        assert_eq!(d.gather(1000, &[IoSlice::new(&[]), IoSlice::new(&[])]), Ok(0));
        let (mut x, mut y) = ([0u8; 4], [0u8; 8]);
        let n = d.scatter(994, &mut [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)]).unwrap();
        assert_eq!(n, 6);
        assert_eq!((x, &y[..2]), ([3; 4], &[4u8, 4][..]));
        assert_eq!(d.scatter(1000, &mut [IoSliceMut::new(&mut x)]), Ok(0));
        // A zero-sized disk is refused.
        assert!(matches!(Disk::new(0), Err(RamdiskError::Capacity(0))));
    }

    #[test]
    fn a_disk_from_an_existing_memfd_sees_the_old_contents() {
        let mut d = Disk::new(1 << 20).unwrap();
        d.write_at(12_345, b"survives a restart").unwrap();
        d.write_at((1 << 20) - 3, b"end").unwrap();
        // What the state store would keep: a descriptor of the memfd.
        let kept = d.try_clone_memfd().unwrap();
        drop(d);
        let wrong = Disk::from_memfd(kept.try_clone().unwrap(), 1 << 19).unwrap_err();
        assert!(matches!(wrong, RamdiskError::Memory(ddf::mem::MemError::WrongSize { .. })), "{wrong}");
        let d = Disk::from_memfd(kept, 1 << 20).unwrap();
        let mut b = [0u8; 18];
        d.read_at(12_345, &mut b).unwrap();
        assert_eq!(&b, b"survives a restart");
        let mut e = [0u8; 3];
        d.read_at((1 << 20) - 3, &mut e).unwrap();
        assert_eq!(&e, b"end");
    }
}

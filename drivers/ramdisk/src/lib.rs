//! `ddf-ramdisk`: a RAM-backed block device, `/ddf/ram0`.
//!
//! The driver registers one block device whose `st_size` is its capacity and
//! serves reads and writes at any offset with the end-of-device rules of a
//! Linux block device (see [`disk`]): short reads at the end, `ENOSPC` for a
//! write that starts at or past it, a short count for one that crosses it.
//! `readv`/`writev` arrive as scatter/gather and are served the same way.
//!
//! ## Parameters (manifest `[params]`)
//!
//! | key    | default | meaning |
//! |--------|---------|---------|
//! | `name` | `ram0`  | the device's file name on the bus |
//! | `size` | `64M`   | capacity: bytes (`1048576`) or with a binary suffix, `K`, `M`, `G`, `T` (also `KiB` ... ; case does not matter) |
//!
//! ## Where the contents live
//!
//! In a sealed memfd ([`ddf::mem::SharedBuf`]), not in the driver's heap, for
//! two reasons:
//!
//! - **crash survival**: at `init` the driver leaves a descriptor of the
//!   memfd with the DDM's state store (key [`STATE_KEY`], bytes: the capacity
//!   as a little-endian `u64`). That keeps the memory alive when the driver
//!   dies; the next incarnation finds it at its `init`
//!   ([`disk_from_state`], [`Disk::from_memfd`]) and sees every byte that
//!   was acknowledged, since every write lands in the memfd before its reply
//!   is sent. Saved state whose capacity differs from the `size` parameter
//!   (the administrator changed it) is dropped with a warning, and the disk
//!   starts empty;
//! - **zero copy**: a read-only open hands the same descriptor to the DDM
//!   ([`ddf::driver::Driver::backing_file`]), which registers it with the
//!   kernel as the FUSE passthrough backing file of that open: the kernel
//!   reads the memfd itself, with neither the DDM nor the driver in the
//!   path. Opens that may write are served by the driver, because a write
//!   past the end must answer `ENOSPC` and the sealed memfd would answer
//!   `EPERM` under passthrough.
//!
//! The driver itself copies: a read is one copy out of the memfd into a
//! reused buffer, then the socket; a write one copy from the request into
//! the memfd. That is the path of opens that may write.
//!
//! ## Block device ioctls
//!
//! `BLKGETSIZE64` answers the capacity (its size is encoded in the command,
//! so it passes through FUSE's restricted ioctls); everything else is
//! `ENOTTY`.

pub mod disk;

use std::collections::HashSet;
use std::io::{IoSlice, IoSliceMut};

use ddf::driver::{Context, Driver, IoctlReply, ReadReply, SavedState, StartInfo, WriteReply};
use ddf::ipc::PAYLOAD_MAX;
use ddf::mem::MemError;
use ddf::proto::{DeviceClass, DeviceId, Errno, Handle};
use log::{info, warn};

pub use disk::Disk;

/// Default capacity: 64 MiB.
pub const DEFAULT_SIZE: u64 = 64 << 20;

/// Default device name.
pub const DEFAULT_NAME: &str = "ram0";

/// The key of the disk's memfd in the DDM's state store.
pub const STATE_KEY: &str = "disk";

/// `BLKGETSIZE64`, `_IOR(0x12, 114, u64)`: the capacity in bytes.
pub const BLKGETSIZE64: u32 = 0x8008_1272;

/// What can keep a RAM disk from starting.
#[derive(Debug, thiserror::Error)]
pub enum RamdiskError {
    /// The `size` parameter is not a capacity.
    #[error("bad size {value:?}: {why}")]
    Size {
        /// What was given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The `name` parameter is not a file name.
    #[error("bad device name {0:?}: must be a non-empty file name without '/', not '.' or '..'")]
    Name(String),
    /// Making or taking over the memfd failed.
    #[error("disk memory")]
    Memory(#[from] MemError),
    /// State saved by an earlier incarnation is not a disk of this size.
    #[error("saved disk state unusable: {0}")]
    SavedState(String),
}

/// The disk an earlier incarnation left in the state store under
/// [`STATE_KEY`], if it is a disk of `size` bytes: the state's bytes are the
/// capacity (`u64`, little endian), its one descriptor the memfd.
pub fn disk_from_state(mut saved: SavedState, size: u64) -> Result<Disk, RamdiskError> {
    let bytes: [u8; 8] = saved
        .bytes
        .as_slice()
        .try_into()
        .map_err(|_| RamdiskError::SavedState(format!("{} bytes of state, expected 8", saved.bytes.len())))?;
    let saved_size = u64::from_le_bytes(bytes);
    if saved_size != size {
        return Err(RamdiskError::SavedState(format!(
            "the saved disk has {saved_size} bytes, the size parameter says {size}"
        )));
    }
    if saved.fds.len() != 1 {
        return Err(RamdiskError::SavedState(format!("{} descriptors, expected one memfd", saved.fds.len())));
    }
    let fd = saved.fds.remove(0);
    Disk::from_memfd(fd, size)
}

/// Parses a capacity: a number of bytes, optionally followed by a binary
/// suffix `K`, `M`, `G` or `T` (powers of 1024), which may be spelled
/// `KiB` ... too. Case does not matter; zero is refused.
pub fn parse_size(value: &str) -> Result<u64, RamdiskError> {
    let bad = |why| RamdiskError::Size { value: value.to_owned(), why };
    let s = value.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits);
    if num.is_empty() {
        return Err(bad("expected a number, like 64M or 1048576"));
    }
    let n: u64 = num.parse().map_err(|_| bad("number too large"))?;
    let suffix = suffix.to_ascii_lowercase();
    let unit = suffix.strip_suffix("ib").unwrap_or(&suffix);
    let shift = match unit {
        "" if suffix.is_empty() => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad("unknown unit (use K, M, G or T)")),
    };
    let bytes = n.checked_mul(1u64 << shift).ok_or_else(|| bad("too large"))?;
    if bytes == 0 {
        return Err(bad("a disk needs at least one byte"));
    }
    Ok(bytes)
}

/// The driver's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Device name on the bus.
    pub name: String,
    /// Capacity in bytes.
    pub size: u64,
}

impl Params {
    /// Reads `name` and `size` from the start parameters, with defaults.
    pub fn from_start(info: &StartInfo) -> Result<Params, RamdiskError> {
        let name = info.param("name").unwrap_or(DEFAULT_NAME).to_owned();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(RamdiskError::Name(name));
        }
        let size = match info.param("size") {
            Some(v) => parse_size(v)?,
            None => DEFAULT_SIZE,
        };
        Ok(Params { name, size })
    }
}

/// The RAM disk driver: one block device backed by a [`Disk`].
#[derive(Debug)]
pub struct RamDisk {
    name: String,
    disk: Disk,
    device: Option<DeviceId>,
    handles: HashSet<Handle>,
    next_handle: Handle,
    /// Reads are copied out of the disk into this, then sent.
    scratch: Vec<u8>,
}

impl RamDisk {
    /// A driver serving `disk` as device `name`: a fresh [`Disk::new`], or
    /// one taken over from an earlier incarnation with [`Disk::from_memfd`].
    pub fn new(name: impl Into<String>, disk: Disk) -> RamDisk {
        RamDisk {
            name: name.into(),
            disk,
            device: None,
            handles: HashSet::new(),
            next_handle: 1,
            scratch: vec![0; PAYLOAD_MAX],
        }
    }

    /// A driver with a fresh, empty disk as the start parameters say.
    pub fn from_start(info: &StartInfo) -> Result<RamDisk, RamdiskError> {
        let p = Params::from_start(info)?;
        Ok(RamDisk::new(p.name, Disk::new(p.size)?))
    }

    /// The disk (for its memfd: [`Disk::memfd`]).
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    fn check(&self, handle: Handle) -> Result<(), Errno> {
        if self.handles.contains(&handle) {
            Ok(())
        } else {
            Err(Errno::EBADF)
        }
    }

    /// Answers with `n` bytes of scratch (or the error).
    fn answer(&self, n: Result<usize, Errno>, reply: ReadReply) {
        match n {
            Ok(n) => reply.data(&self.scratch[..n]),
            Err(e) => reply.error(e),
        }
    }
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    ddf::error_chain(e)
}

/// A byte count for a reply (a transfer is at most one frame).
fn count(n: Result<usize, Errno>, reply: WriteReply) {
    match n.map(u32::try_from) {
        Ok(Ok(n)) => reply.written(n),
        Ok(Err(_)) => reply.error(Errno::EIO),
        Err(e) => reply.error(e),
    }
}

impl Driver for RamDisk {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        let size = self.disk.size();
        let instance = ctx.instance().to_owned();
        if let Some(saved) = ctx.take_state(STATE_KEY) {
            match disk_from_state(saved, size) {
                Ok(disk) => {
                    info!("{instance}: {}: contents taken over from the previous incarnation", self.name);
                    self.disk = disk;
                }
                Err(e) => warn!("{instance}: {}: starting empty: {}", self.name, chain(&e)),
            }
        }
        ctx.save_state(STATE_KEY, &size.to_le_bytes(), &[self.disk.memfd()])?;
        self.device = Some(ctx.add_device(&self.name, DeviceClass::Block, size)?);
        info!("{}: {} is a block device of {size} bytes in a memfd", ctx.instance(), self.name);
        Ok(())
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, _flags: i32) -> Result<Handle, Errno> {
        if self.device != Some(device) {
            return Err(Errno::ENXIO);
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(handle);
        Ok(handle)
    }

    fn close(&mut self, _ctx: &mut Context, handle: Handle) {
        self.handles.remove(&handle);
    }

    /// Read-only opens get the memfd as a FUSE passthrough backing file:
    /// the kernel reads it directly, no copy through the DDM or the driver.
    /// Opens that may write stay on the driver's path, because a write past
    /// the end must answer `ENOSPC`, where the sealed memfd would answer
    /// `EPERM`.
    fn backing_file(&mut self, _ctx: &mut Context, _handle: Handle, flags: i32) -> Option<std::os::fd::OwnedFd> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return None;
        }
        match self.disk.try_clone_memfd() {
            Ok(fd) => Some(fd),
            Err(e) => {
                warn!("{}: no passthrough: {}", self.name, chain(&e));
                None
            }
        }
    }

    fn read(&mut self, _ctx: &mut Context, handle: Handle, offset: u64, len: u32, reply: ReadReply) {
        if let Err(e) = self.check(handle) {
            return reply.error(e);
        }
        let len = (len as usize).min(self.scratch.len());
        let n = self.disk.read_at(offset, &mut self.scratch[..len]);
        self.answer(n, reply);
    }

    fn write(&mut self, _ctx: &mut Context, handle: Handle, offset: u64, data: &[u8], reply: WriteReply) {
        if let Err(e) = self.check(handle) {
            return reply.error(e);
        }
        count(self.disk.write_at(offset, data), reply);
    }

    fn scatter(&mut self, _ctx: &mut Context, handle: Handle, offset: u64, lens: &[u32], reply: ReadReply) {
        if let Err(e) = self.check(handle) {
            return reply.error(e);
        }
        // The caller's buffers, laid end to end in scratch, cut at what one
        // answer carries.
        let max = (reply.max_len() as usize).min(self.scratch.len());
        let mut rest = &mut self.scratch[..max];
        let mut bufs = Vec::with_capacity(lens.len());
        for len in lens {
            if rest.is_empty() {
                break;
            }
            let (b, r) = rest.split_at_mut((*len as usize).min(rest.len()));
            bufs.push(IoSliceMut::new(b));
            rest = r;
        }
        let n = self.disk.scatter(offset, &mut bufs);
        drop(bufs);
        self.answer(n, reply);
    }

    fn gather(
        &mut self,
        _ctx: &mut Context,
        handle: Handle,
        offset: u64,
        lens: &[u32],
        data: &[u8],
        reply: WriteReply,
    ) {
        if let Err(e) = self.check(handle) {
            return reply.error(e);
        }
        // The runtime checked that `lens` add up to `data.len()`.
        let mut rest = data;
        let mut bufs = Vec::with_capacity(lens.len());
        for len in lens {
            let (b, r) = rest.split_at((*len as usize).min(rest.len()));
            bufs.push(IoSlice::new(b));
            rest = r;
        }
        count(self.disk.gather(offset, &bufs), reply);
    }

    fn ioctl(&mut self, _ctx: &mut Context, handle: Handle, cmd: u32, _input: &[u8], out_len: u32, reply: IoctlReply) {
        if let Err(e) = self.check(handle) {
            return reply.error(e);
        }
        match cmd {
            BLKGETSIZE64 if out_len >= 8 => reply.ok(0, &self.disk.size().to_ne_bytes()),
            BLKGETSIZE64 => reply.error(Errno::EINVAL),
            _ => reply.error(Errno::ENOTTY),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn start(params: &[(&str, &str)]) -> StartInfo {
        StartInfo {
            instance: "ramdisk".into(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn sizes_parse() {
        for (s, n) in [
            ("1", 1),
            ("4096", 4096),
            ("64M", 64 << 20),
            ("64m", 64 << 20),
            ("64MiB", 64 << 20),
            ("512K", 512 << 10),
            ("1G", 1 << 30),
            ("2gib", 2 << 30),
            ("1T", 1 << 40),
            (" 8M ", 8 << 20),
        ] {
            assert_eq!(parse_size(s).unwrap(), n, "{s}");
        }
        for s in ["", "0", "0M", "M", "-1", "1.5G", "64MB", "64 M", "12X", "99999999999999999999", "20000000T", "ib"] {
            assert!(parse_size(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn params_have_defaults_and_are_checked() {
        let p = Params::from_start(&start(&[])).unwrap();
        assert_eq!(p, Params { name: "ram0".into(), size: DEFAULT_SIZE });
        let p = Params::from_start(&start(&[("size", "1M"), ("name", "ram1")])).unwrap();
        assert_eq!(p, Params { name: "ram1".into(), size: 1 << 20 });
        assert!(matches!(Params::from_start(&start(&[("name", "a/b")])), Err(RamdiskError::Name(_))));
        assert!(matches!(Params::from_start(&start(&[("size", "lots")])), Err(RamdiskError::Size { .. })));
        let d = RamDisk::from_start(&start(&[("size", "1G")])).unwrap();
        assert_eq!(d.disk().size(), 1 << 30);
    }

    #[test]
    fn saved_state_is_taken_over_only_if_it_fits() {
        let mut d = Disk::new(1 << 20).unwrap();
        d.write_at(77, b"kept").unwrap();
        let saved = |size: u64, fds: Vec<std::os::fd::OwnedFd>| SavedState { bytes: size.to_le_bytes().to_vec(), fds };
        let fd = || d.try_clone_memfd().unwrap();
        let back = disk_from_state(saved(1 << 20, vec![fd()]), 1 << 20).unwrap();
        let mut b = [0u8; 4];
        back.read_at(77, &mut b).unwrap();
        assert_eq!(&b, b"kept");
        // Another size, no descriptor, two, or garbage bytes: refused.
        for (state, size) in [
            (saved(1 << 20, vec![fd()]), 2 << 20),
            (saved(1 << 20, vec![]), 1 << 20),
            (saved(1 << 20, vec![fd(), fd()]), 1 << 20),
            (SavedState { bytes: vec![1, 2, 3], fds: vec![fd()] }, 1 << 20),
        ] {
            let err = disk_from_state(state, size).unwrap_err();
            assert!(matches!(err, RamdiskError::SavedState(_)), "{err}");
        }
        // A descriptor that is not the disk's memfd: refused by libMem.
        let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = disk_from_state(saved(1 << 20, vec![r.into()]), 1 << 20).unwrap_err();
        assert!(matches!(err, RamdiskError::Memory(_)), "{err}");
    }

    #[test]
    fn blkgetsize64_is_the_encoded_ioctl() {
        // _IOR(0x12, 114, u64): direction read (2) << 30, size 8 << 16,
        // type 0x12 << 8, number 114.
        assert_eq!(BLKGETSIZE64, (2 << 30) | (8 << 16) | (0x12 << 8) | 114);
    }
}

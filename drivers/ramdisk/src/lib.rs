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
use ddf::params::{ParamError, Size};
use ddf::proto::{Access, DeviceClass, DeviceId, Errno, Handle, OpenFlags};
use log::{info, warn};
use serde::Deserialize;

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
    /// A parameter is missing a value it needs, or has one it cannot take.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// A capacity of zero bytes, or one larger than the address space.
    #[error("a disk of {0} bytes cannot be made: the capacity must be at least one byte and fit the address space")]
    Capacity(u64),
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

/// The driver's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Device name on the bus.
    pub name: String,
    /// Capacity.
    pub size: Size,
}

impl Default for Params {
    fn default() -> Params {
        Params { name: DEFAULT_NAME.to_owned(), size: Size(DEFAULT_SIZE) }
    }
}

impl Params {
    /// Reads `name` and `size` from the start parameters, with defaults.
    pub fn from_start(info: &StartInfo) -> Result<Params, RamdiskError> {
        let p: Params = info.config()?;
        let bad = |key: &str, value: String, reason: &str| ParamError {
            instance: info.instance.clone(),
            key: Some(key.to_owned()),
            value: Some(value),
            reason: reason.to_owned(),
        };
        if p.name.is_empty() || p.name.contains('/') || p.name == "." || p.name == ".." {
            let why = "must be a non-empty file name without '/', not '.' or '..'";
            return Err(bad("name", p.name, why).into());
        }
        if p.size.bytes() == 0 {
            return Err(bad("size", p.size.to_string(), "a disk needs at least one byte").into());
        }
        Ok(p)
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
            next_handle: Handle(1),
            scratch: vec![0; PAYLOAD_MAX],
        }
    }

    /// A driver with a fresh, empty disk as the start parameters say.
    pub fn from_start(info: &StartInfo) -> Result<RamDisk, RamdiskError> {
        let p = Params::from_start(info)?;
        Ok(RamDisk::new(p.name, Disk::new(p.size.bytes())?))
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
                Err(e) => warn!("{instance}: {}: starting empty: {}", self.name, ddf::error_chain(&e)),
            }
        }
        ctx.save_state(STATE_KEY, &size.to_le_bytes(), &[self.disk.memfd()])?;
        self.device = Some(ctx.add_device(&self.name, DeviceClass::Block, size)?);
        info!("{}: {} is a block device of {size} bytes in a memfd", ctx.instance(), self.name);
        Ok(())
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, _flags: OpenFlags) -> Result<Handle, Errno> {
        if self.device != Some(device) {
            return Err(Errno::ENXIO);
        }
        let handle = self.next_handle;
        self.next_handle.0 += 1;
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
    fn backing_file(&mut self, _ctx: &mut Context, _handle: Handle, flags: OpenFlags) -> Option<std::os::fd::OwnedFd> {
        if flags.access() != Access::Read {
            return None;
        }
        match self.disk.try_clone_memfd() {
            Ok(fd) => Some(fd),
            Err(e) => {
                warn!("{}: no passthrough: {}", self.name, ddf::error_chain(&e));
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
        StartInfo::new("ramdisk", params)
    }

    #[test]
    fn params_have_defaults_and_are_checked() {
        let p = Params::from_start(&start(&[])).unwrap();
        assert_eq!(p, Params { name: "ram0".into(), size: Size(DEFAULT_SIZE) });
        let p = Params::from_start(&start(&[("size", "1M"), ("name", "ram1")])).unwrap();
        assert_eq!(p, Params { name: "ram1".into(), size: Size(1 << 20) });
        for (key, value) in [("name", "a/b"), ("size", "lots"), ("size", "0"), ("colour", "red")] {
            let err = Params::from_start(&start(&[(key, value)])).unwrap_err();
            let RamdiskError::Params(e) = &err else { panic!("{err}") };
            assert_eq!(e.key.as_deref(), Some(key), "{err}");
            assert!(err.to_string().starts_with(&format!("parameters of ramdisk: {key} = ")), "{err}");
        }
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

//! `ddf-pci`: the machine's real PCI bus as `/ddf/pci`.
//!
//! A bus driver (paper §3.3): it enumerates the PCI functions the kernel
//! knows, from sysfs, reports each as a device on the bus `pci` (kind
//! `pci`), offers it to the plugin manager, and keeps the bus current as
//! the kernel adds and removes functions.
//!
//! ## Parameters (manifest `[params]`)
//!
//! | key          | default | meaning |
//! |--------------|---------|---------|
//! | `sysfs_root` | `/sys`  | where sysfs is mounted; tests point it at a fake tree |
//! | `hotplug`    | `true`  | follow kernel uevents; `false`: the bus changes only on rescan |
//!
//! ## The nodes
//!
//! One node per directory in `<sysfs_root>/bus/pci/devices`, named by the
//! function's address (`0000:00:03.0`), which is also its bus address. It
//! is a **block** device whose size is the size of the function's sysfs
//! `config` file (256 or 4096), so that `cmp /ddf/pci/X
//! /sys/bus/pci/devices/X/config` holds.
//!
//! - **Reading** gives the configuration space exactly as sysfs gives it: a
//!   `pread` of the `config` file at the same offset, short at the end.
//!   Sysfs gives root the whole space and others only its first 64 bytes;
//!   `ddm`, which runs the driver, is root.
//! - The nodes are **read-only**: an open that asks for write access gets
//!   `EROFS`, and so does a write on any handle. Writing configuration space
//!   from user space is a driver's business, through a bound driver, not
//!   the bus's.
//! - Once a driver whose manifest matches a function is bound to it, that
//!   driver serves the node; this one serves it until then.
//!
//! ## Metadata
//!
//! Shown by the DDM as `user.ddf.<key>` and matched by manifests:
//!
//! | key | from | example |
//! |-----|------|---------|
//! | `vendor`, `device` | sysfs `vendor`, `device` | `0x1af4`, `0x1041` |
//! | `subsystem_vendor`, `subsystem_device` | the files of those names | `0x1af4`, `0x1100` |
//! | `pci_class` | sysfs `class` (class, subclass, prog-if) | `0x020000` |
//! | `revision` | sysfs `revision` | `0x01` |
//! | `irq` | sysfs `irq` | `11` |
//! | `resources` | sysfs `resource`: non-empty BARs as `start-end:flags`, space-separated | `0xc040-0xc05f:0x40101 0xfe000000-0xfe003fff:0x14220c` |
//! | `kernel_driver` | the kernel driver bound to it (the `driver` symlink), empty if none | `virtio-pci` |
//!
//! Values are sysfs's text, trimmed. A file that cannot be read leaves its
//! key out (see [`sysfs`]). The PCI class and the kernel driver are not
//! called `class` and `driver`: those `user.ddf.*` names are the DDM's own
//! (the node's device class, `block`, and the ddf driver serving it), and
//! the DDM does not show a bus's keys that would shadow them. A manifest
//! matches them as `[match.ids] pci_class = "0x0200*"`.
//!
//! ## Hotplug and rescan
//!
//! The driver listens on a `NETLINK_KOBJECT_UEVENT` socket ([`uevent`]).
//! When a batch of events holds a PCI `add`, `remove`, `bind` or `unbind`,
//! or when the socket overflowed (events lost), it scans sysfs again and
//! reports the difference ([`diff`](mod@diff)): new functions are added, gone ones
//! removed. A function whose description changed (another kernel driver
//! bound, another IRQ) is removed and added again, since the protocol has
//! no message that changes a device in place: its node is recreated, and a
//! ddf driver bound to it is unbound and matched anew. The kernel removes a
//! function from `/sys/bus/pci/devices` before it sends `remove`, and
//! creates it before it sends `add`, so a scan after the event sees the new
//! state. Without the right to open the socket the driver logs a warning
//! and lives without hotplug. [`ddf::driver::Driver::rescan`] (`ddmctl
//! rescan pci`) scans in any case. A scan that cannot list the bus at all
//! changes nothing.

pub mod diff;
pub mod sysfs;
pub mod uevent;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use ddf::driver::{Context, Driver, ReadReply, StartInfo, WriteReply};
use ddf::params::ParamError;
use ddf::proto::{Access, BusId, DeviceClass, DeviceId, DeviceSpec, Errno, Handle, OpenFlags};
use log::{debug, info, warn};
use serde::Deserialize;

use crate::diff::{diff, Diff};
use crate::sysfs::{Function, Sysfs};
use crate::uevent::{Received, UeventSocket, UEVENT_MAX};

/// Name and kind of the bus this driver creates.
pub const BUS_NAME: &str = "pci";

/// Default `sysfs_root`.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";

/// Read-only file system: the answer to writes and to opens for writing.
pub const EROFS: Errno = Errno(libc::EROFS);

/// The [`Context::watch`] token of the uevent socket.
const UEVENT_TOKEN: u64 = 1;

/// The most datagrams taken from the uevent socket in one go, so that a
/// storm of events cannot keep requests waiting; the rest come next time.
const UEVENTS_PER_WAKE: usize = 256;

/// What can keep the PCI driver from starting.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    /// A parameter is unknown, or has a value it cannot take.
    #[error(transparent)]
    Params(#[from] ParamError),
}

/// The driver's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Where sysfs is mounted.
    pub sysfs_root: String,
    /// Whether to follow kernel uevents.
    pub hotplug: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params { sysfs_root: DEFAULT_SYSFS_ROOT.to_owned(), hotplug: true }
    }
}

impl Params {
    /// Reads the parameters, with defaults.
    pub fn from_start(info: &StartInfo) -> Result<Params, PciError> {
        let p: Params = info.config()?;
        if p.sysfs_root.is_empty() {
            return Err(ParamError {
                instance: info.instance.clone(),
                key: Some("sysfs_root".into()),
                value: Some(String::new()),
                reason: "empty path".into(),
            }
            .into());
        }
        Ok(p)
    }
}

/// A function reported to the DDM.
#[derive(Debug)]
struct Reported {
    device: DeviceId,
    function: Function,
}

/// An open node: the function's `config` file, until the function goes.
#[derive(Debug)]
struct Open {
    device: DeviceId,
    config: Option<File>,
}

/// The PCI bus driver.
#[derive(Debug)]
pub struct PciBus {
    sysfs: Sysfs,
    hotplug: bool,
    bus: Option<BusId>,
    /// What the DDM was told, by address.
    reported: BTreeMap<String, Reported>,
    /// Device number → address, for opens.
    addresses: HashMap<DeviceId, String>,
    handles: HashMap<Handle, Open>,
    next_handle: Handle,
    uevents: Option<UeventSocket>,
    uevent_buf: Vec<u8>,
}

impl PciBus {
    /// A driver for the sysfs at `sysfs_root`.
    pub fn new(params: Params) -> PciBus {
        PciBus {
            sysfs: Sysfs::new(params.sysfs_root),
            hotplug: params.hotplug,
            bus: None,
            reported: BTreeMap::new(),
            addresses: HashMap::new(),
            handles: HashMap::new(),
            next_handle: Handle(1),
            uevents: None,
            uevent_buf: Vec::new(),
        }
    }

    /// The driver from its start parameters.
    pub fn from_start(info: &StartInfo) -> Result<PciBus, PciError> {
        Ok(PciBus::new(Params::from_start(info)?))
    }

    /// Scans sysfs and reports the difference to what the DDM knows.
    fn resync(&mut self, ctx: &mut Context, why: &str) {
        let now = match self.sysfs.scan() {
            Ok(now) => now,
            Err(e) => {
                // Not "every function went away": keep what we have.
                warn!("pci: {why}: {e}: {}; the bus is left as it was", io_cause(&e));
                return;
            }
        };
        let was: BTreeMap<String, Function> =
            self.reported.iter().map(|(a, r)| (a.clone(), r.function.clone())).collect();
        let d = diff(&was, &now);
        if d.is_empty() {
            debug!("pci: {why}: no change ({} functions)", now.len());
            return;
        }
        info!("pci: {why}: {} added, {} removed, {} changed", d.added.len(), d.removed.len(), d.changed.len());
        self.apply(ctx, d, now);
    }

    /// Tells the DDM about `d`, the difference to `now`.
    fn apply(&mut self, ctx: &mut Context, d: Diff<String>, mut now: BTreeMap<String, Function>) {
        for addr in d.removed.iter().chain(&d.changed) {
            self.forget(ctx, addr);
        }
        for addr in d.changed.iter().chain(&d.added) {
            if let Some(function) = now.remove(addr) {
                self.report(ctx, function);
            }
        }
    }

    /// Removes the node of the function at `addr`.
    fn forget(&mut self, ctx: &mut Context, addr: &str) {
        let Some(r) = self.reported.remove(addr) else {
            return;
        };
        self.addresses.remove(&r.device);
        for open in self.handles.values_mut().filter(|o| o.device == r.device) {
            open.config = None;
        }
        if let Err(e) = ctx.remove_device(r.device) {
            warn!("pci: removing {addr}: {e}");
        }
    }

    /// Adds a node for `function`.
    fn report(&mut self, ctx: &mut Context, function: Function) {
        let spec = DeviceSpec {
            device: DeviceId(0),
            name: function.address.clone(),
            class: DeviceClass::Block,
            size: function.config_size,
            bus: self.bus,
            address: Some(function.address.clone()),
            meta: function.meta.clone(),
            offer: true,
            serves: None,
        };
        match ctx.add(spec) {
            Ok(device) => {
                debug!("pci: {} is device {device}", function.address);
                self.addresses.insert(device, function.address.clone());
                self.reported.insert(function.address.clone(), Reported { device, function });
            }
            Err(e) => warn!("pci: adding {}: {e}", function.address),
        }
    }

    /// Takes what the uevent socket holds; whether the bus may have changed.
    fn drain_uevents(&mut self) -> bool {
        let Some(sock) = self.uevents.take() else {
            return false;
        };
        self.uevent_buf.resize(UEVENT_MAX, 0);
        let mut changed = false;
        for _ in 0..UEVENTS_PER_WAKE {
            match sock.recv(&mut self.uevent_buf) {
                Ok(Received::Message(n)) => {
                    let bytes = &self.uevent_buf[..n.min(self.uevent_buf.len())];
                    match uevent::parse(bytes) {
                        Ok(ev) => {
                            if let Some(addr) = ev.pci_function() {
                                debug!("pci: uevent {:?} {addr}", ev.action);
                                changed = true;
                            }
                        }
                        Err(e) => warn!("pci: uevent of {n} bytes skipped: {e}"),
                    }
                }
                Ok(Received::NotKernel) => debug!("pci: uevent not from the kernel skipped"),
                Ok(Received::Drained) => break,
                Ok(Received::Overflow) => {
                    warn!("pci: uevents were lost (socket overflow); rescanning");
                    changed = true;
                }
                Err(e) => {
                    warn!("pci: uevent socket failed: {e}; hotplug is off, rescan still works");
                    return true;
                }
            }
        }
        self.uevents = Some(sock);
        changed
    }
}

/// The I/O error under a sysfs error, for the log.
fn io_cause(e: &sysfs::SysfsError) -> &io::Error {
    match e {
        sysfs::SysfsError::ListDevices { source, .. } => source,
    }
}

/// The errno of an I/O error (`EIO` when it has none).
fn errno(e: &io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Reads up to `len` bytes at `offset` from `file`: as many as it gives,
/// short only at its end (or when it fails after some bytes).
fn pread(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0; len];
    let mut got = 0;
    while got < len {
        // Past the largest offset is past the end.
        let Some(at) = offset.checked_add(got as u64) else {
            break;
        };
        match file.read_at(&mut out[got..], at) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if got > 0 => {
                debug!("pci: config read stopped after {got} bytes: {e}");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    out.truncate(got);
    Ok(out)
}

impl Driver for PciBus {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        self.bus = Some(ctx.add_bus(BUS_NAME, BUS_NAME, None)?);
        if self.hotplug {
            // Listen before the first scan, so that nothing that happens
            // in between is missed.
            match UeventSocket::open() {
                Ok(sock) => {
                    ctx.watch(&sock, UEVENT_TOKEN);
                    self.uevents = Some(sock);
                }
                Err(e) => {
                    let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
                    warn!("pci: no hotplug: {e}: {cause}; `ddmctl rescan pci` updates the bus")
                }
            }
        }
        self.resync(ctx, "enumeration");
        info!(
            "pci: {} functions from {}{}",
            self.reported.len(),
            self.sysfs.devices_dir().display(),
            if self.uevents.is_some() { ", following hotplug" } else { "" }
        );
        Ok(())
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, flags: OpenFlags) -> Result<Handle, Errno> {
        let addr = self.addresses.get(&device).ok_or(Errno::ENODEV)?;
        if flags.access() != Access::Read {
            return Err(EROFS);
        }
        let path = self.sysfs.config_path(addr);
        let config = File::open(&path).map_err(|e| {
            debug!("pci: open {}: {e}", path.display());
            errno(&e)
        })?;
        let handle = self.next_handle;
        self.next_handle.0 += 1;
        self.handles.insert(handle, Open { device, config: Some(config) });
        Ok(handle)
    }

    fn close(&mut self, _ctx: &mut Context, handle: Handle) {
        self.handles.remove(&handle);
    }

    fn read(&mut self, _ctx: &mut Context, handle: Handle, offset: u64, len: u32, reply: ReadReply) {
        let Some(open) = self.handles.get(&handle) else {
            return reply.error(Errno::EBADF);
        };
        let Some(config) = &open.config else {
            return reply.error(Errno::ENODEV);
        };
        match pread(config, offset, len as usize) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(&mut self, _ctx: &mut Context, _handle: Handle, _offset: u64, _data: &[u8], reply: WriteReply) {
        reply.error(EROFS);
    }

    fn rescan(&mut self, ctx: &mut Context) {
        self.resync(ctx, "rescan");
    }

    fn ready(&mut self, ctx: &mut Context, token: u64) {
        if token != UEVENT_TOKEN {
            return;
        }
        let changed = self.drain_uevents();
        if self.uevents.is_none() {
            ctx.unwatch(UEVENT_TOKEN);
        }
        if changed {
            self.resync(ctx, "hotplug");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn start(params: &[(&str, &str)]) -> StartInfo {
        StartInfo::new("pci", params)
    }

    #[test]
    fn params_have_defaults_and_are_checked() {
        assert_eq!(Params::from_start(&start(&[])).unwrap(), Params { sysfs_root: "/sys".into(), hotplug: true });
        let p = Params::from_start(&start(&[("sysfs_root", "/tmp/fake"), ("hotplug", "false")])).unwrap();
        assert_eq!((p.sysfs_root.as_str(), p.hotplug), ("/tmp/fake", false));
        for (key, value) in [("hotplug", "maybe"), ("sysfs_root", ""), ("sysfs", "/sys")] {
            let Err(PciError::Params(e)) = Params::from_start(&start(&[(key, value)])) else { panic!("{key}") };
            assert_eq!(e.key.as_deref(), Some(key));
        }
    }

    #[test]
    fn pread_is_short_only_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        let bytes: Vec<u8> = (0..=255).collect();
        std::fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(pread(&f, 0, 4).unwrap(), [0, 1, 2, 3]);
        assert_eq!(pread(&f, 250, 64).unwrap(), [250, 251, 252, 253, 254, 255]);
        assert!(pread(&f, 256, 64).unwrap().is_empty());
        assert!(pread(&f, 1 << 40, 64).unwrap().is_empty());
        // Offsets no file can have: an error or nothing, never a panic.
        for off in [u64::MAX, u64::MAX - 10, 1 << 63] {
            assert!(pread(&f, off, 64).map_or(true, |b| b.is_empty()), "{off}");
        }
    }

    /// The rescan of a fake tree: a function added, one removed, and one
    /// whose kernel driver changed, as the driver would report them.
    #[test]
    fn a_changed_tree_gives_the_expected_difference() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        sysfs::tests::fake_function(root, "0000:00:01.0", "0x8086", &[1; 64], None);
        sysfs::tests::fake_function(root, "0000:00:02.0", "0x1af4", &[2; 64], None);
        let fs = Sysfs::new(root);
        let before = fs.scan().unwrap();

        std::fs::remove_dir_all(root.join("bus/pci/devices/0000:00:01.0")).unwrap();
        sysfs::tests::fake_function(root, "0000:00:07.0", "0x1b36", &[7; 256], None);
        let drv = root.join("bus/pci/drivers/virtio-pci");
        std::fs::create_dir_all(&drv).unwrap();
        std::os::unix::fs::symlink(&drv, root.join("bus/pci/devices/0000:00:02.0/driver")).unwrap();

        let after = fs.scan().unwrap();
        let d = diff(&before, &after);
        assert_eq!(d.added, ["0000:00:07.0"]);
        assert_eq!(d.removed, ["0000:00:01.0"]);
        assert_eq!(d.changed, ["0000:00:02.0"]);
        assert_eq!(after["0000:00:02.0"].meta("kernel_driver"), Some("virtio-pci"));
    }
}

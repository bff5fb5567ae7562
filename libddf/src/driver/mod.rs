//! libDriver: the [`Driver`] trait, the runtime that serves it, and the
//! client proxy that calls a driver directly.
//!
//! A driver is a process of its own. Its `main` builds a value that
//! implements [`Driver`] and hands it to [`run`]; the runtime does the rest:
//! it takes the socket the DDM passed it, does the handshake, calls
//! [`Driver::init`] (where the driver registers its devices through
//! [`Context::add_device`]), and then pulls requests from its FIFO, the
//! socket, **one at a time** (paper §3.2), calling the matching method.
//!
//! ## Deferred replies
//!
//! Methods that may have to wait (read, write, ioctl, scatter, gather) get a
//! reply object ([`ReadReply`], [`WriteReply`], [`IoctlReply`]) instead of
//! returning a value. A driver answers at once by consuming it, or keeps it
//! and answers later, for example a keyboard with no key pending keeps the
//! read until a key arrives. The queue keeps moving meanwhile: one parked
//! request never stops the next. Every request is answered exactly once: a
//! reply object dropped without an answer answers `EIO` itself.
//!
//! When a caller gives up on a parked request (it was signalled), the DDM
//! sends a cancel and the runtime calls [`Driver::cancel`] with that id: the
//! driver drops (or answers) the reply it holds.
//!
//! ## Events from outside
//!
//! A driver that waits on something besides its requests (an input device, a
//! FIFO) registers the descriptor with [`Context::watch`]; the runtime calls
//! [`Driver::ready`] when it is readable. A driver that runs its own threads
//! wakes the runtime with a [`Waker`]; the runtime calls [`Driver::wake`].
//! The driver's own state is only ever touched from the runtime's thread.
//!
//! ## Defaults
//!
//! Every operation has a default that answers the way the file API expects
//! of a device that does not support it: `open` is `ENXIO`, `read` and
//! `write` are `EINVAL` (what the kernel answers for a file without that
//! operation), `scatter` and `gather` are one `read` or `write` of the whole
//! run, `ioctl` is `ENOTTY`, and `poll` says "readable and writable" (the
//! kernel's default poll mask). `close`, `init` and `fini` succeed. A driver
//! implements only what it means.
//!
//! ## Start here
//!
//! `libddf/examples/hello.rs` is the whole driver of ddf-driver(7)'s
//! tutorial: one device that reads `hello` and then end of file.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use log::warn;
use nix::sys::eventfd::EventFd;
use serde::de::DeserializeOwned;

use crate::ipc::Channel;
use crate::mem::DmaRegion;
use crate::params::ParamError;
use crate::proto::{
    BoundDevice, BusId, DeviceClass, DeviceId, DeviceSpec, DriverToDdm, Errno, Handle, OpenFlags, RequestId,
};

mod client;
mod reply;
mod runtime;

pub use client::{Client, ClientError};
pub use reply::{IoctlReply, ReadReply, WriteReply};
pub use runtime::{run, RunError};

/// The environment variable that names the descriptor of the DDM socket a
/// driver inherits.
pub const SOCKET_FD_ENV: &str = "DDF_SOCKET_FD";

/// The environment variable that holds a driver's instance name from the
/// moment its process starts (before the DDM's `Start` says it again), so
/// that its log lines name it from the first one.
pub const INSTANCE_ENV: &str = "DDF_INSTANCE";

/// `poll(2)` event bits, as [`Driver::poll`] uses them.
pub mod poll_events {
    /// Data to read.
    pub const POLLIN: u32 = libc::POLLIN as u32;
    /// Room to write.
    pub const POLLOUT: u32 = libc::POLLOUT as u32;
    /// Error.
    pub const POLLERR: u32 = libc::POLLERR as u32;
    /// Hung up.
    pub const POLLHUP: u32 = libc::POLLHUP as u32;
    /// Normal data to read.
    pub const POLLRDNORM: u32 = libc::POLLRDNORM as u32;
    /// Room for normal data.
    pub const POLLWRNORM: u32 = libc::POLLWRNORM as u32;
}

/// A device driver. Implement only what the device does; see the module
/// documentation for the defaults.
#[allow(unused_variables)]
pub trait Driver {
    /// Called once before any request: register devices here.
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        Ok(())
    }

    /// Called once when the DDM asks the driver to stop.
    fn fini(&mut self, ctx: &mut Context) {}

    /// Opens `device` with `open(2)` `flags`; returns the driver's handle.
    fn open(&mut self, ctx: &mut Context, device: DeviceId, flags: OpenFlags) -> Result<Handle, Errno> {
        Err(Errno::ENXIO)
    }

    /// The last close of a handle. Any request of this handle still parked
    /// should be answered (or dropped) now.
    fn close(&mut self, ctx: &mut Context, handle: Handle) {}

    /// The file that holds the bytes of the device opened as `handle` with
    /// `flags`, if reads and writes of this open may go straight to it (a
    /// ramdisk's memfd). The DDM then hands it to the kernel (FUSE
    /// passthrough) and this open's reads and writes never reach the driver
    /// nor the DDM. Return `None` (the default) when every call must come to
    /// the driver, for example because a write past the end must answer
    /// `ENOSPC` (a sealed memfd would answer `EPERM`).
    fn backing_file(&mut self, ctx: &mut Context, handle: Handle, flags: OpenFlags) -> Option<OwnedFd> {
        None
    }

    /// Reads up to `len` bytes at `offset`; answer now or later. A handle
    /// read with `O_NONBLOCK` set ([`ReadReply::nonblocking`]) that has
    /// nothing to give answers `EAGAIN` rather than parking.
    fn read(&mut self, ctx: &mut Context, handle: Handle, offset: u64, len: u32, reply: ReadReply) {
        reply.error(Errno::EINVAL);
    }

    /// Writes `data` at `offset`; answer now or later.
    fn write(&mut self, ctx: &mut Context, handle: Handle, offset: u64, data: &[u8], reply: WriteReply) {
        reply.error(Errno::EINVAL);
    }

    /// Reads into buffers of sizes `lens` from `offset` on (readv); the
    /// answer is all the bytes, in order. The default reads them as one
    /// run with [`Driver::read`].
    fn scatter(&mut self, ctx: &mut Context, handle: Handle, offset: u64, lens: &[u32], reply: ReadReply) {
        let len = reply.max_len();
        self.read(ctx, handle, offset, len, reply);
    }

    /// Writes `data`, made of buffers of sizes `lens`, from `offset` on
    /// (writev). The default writes them as one run with [`Driver::write`].
    fn gather(&mut self, ctx: &mut Context, handle: Handle, offset: u64, lens: &[u32], data: &[u8], reply: WriteReply) {
        self.write(ctx, handle, offset, data, reply);
    }

    /// Device control.
    fn ioctl(&mut self, ctx: &mut Context, handle: Handle, cmd: u32, input: &[u8], out_len: u32, reply: IoctlReply) {
        reply.error(Errno::ENOTTY);
    }

    /// Which of `events` ([`poll_events`]) are ready now. When readiness
    /// changes later, call [`Context::poll_wake`].
    fn poll(&mut self, ctx: &mut Context, handle: Handle, events: u32) -> u32 {
        events & (poll_events::POLLIN | poll_events::POLLOUT | poll_events::POLLRDNORM | poll_events::POLLWRNORM)
    }

    /// The plugin manager hands this driver a device its manifest matches.
    /// Register a device with [`DeviceSpec::serves`] = `dev.path` (through
    /// [`Context::add`]) and serve it; an error leaves the device unbound.
    fn bind(&mut self, ctx: &mut Context, dev: &BoundDevice) -> Result<(), Errno> {
        Err(Errno::ENODEV)
    }

    /// The device at `path` that was bound to this driver is gone.
    fn unbind(&mut self, ctx: &mut Context, path: &str) {}

    /// Enumerate the bus again (bus drivers): add what appeared, remove what
    /// went.
    fn rescan(&mut self, ctx: &mut Context) {}

    /// The caller of request `id` gave up: drop or answer the reply kept for it.
    fn cancel(&mut self, ctx: &mut Context, id: RequestId) {}

    /// A descriptor registered with [`Context::watch`] under `token` is readable.
    fn ready(&mut self, ctx: &mut Context, token: u64) {}

    /// A [`Waker`] was woken.
    fn wake(&mut self, ctx: &mut Context) {}
}

/// Wakes a driver's runtime from another thread: the runtime then calls
/// [`Driver::wake`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Waker(Arc<EventFd>);

impl Waker {
    /// Asks the runtime to call [`Driver::wake`] soon. Wakes that arrive
    /// before the runtime gets to them are merged into one call.
    pub fn wake(&self) {
        if let Err(e) = self.0.write(1) {
            warn!("waker: eventfd write failed: {e}");
        }
    }
}

/// State an earlier incarnation left with the DDM (see
/// [`Context::save_state`]).
#[derive(Debug)]
pub struct SavedState {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its descriptors, now owned by this process.
    pub fds: Vec<OwnedFd>,
}

/// What the runtime lends a driver in every call.
#[derive(Debug)]
pub struct Context {
    chan: Arc<Channel>,
    state: HashMap<String, SavedState>,
    start: StartInfo,
    dma: Option<DmaRegion>,
    watches: Vec<(RawFd, u64)>,
    poll_waiters: HashSet<Handle>,
    waker: Waker,
    next_device: u32,
    next_bus: u32,
    stop: bool,
}

impl Context {
    /// The instance name the DDM gave this driver.
    pub fn instance(&self) -> &str {
        &self.start.instance
    }

    /// The value of parameter `key`, if given.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.start.param(key)
    }

    /// All parameters, in the order given.
    pub fn params(&self) -> &[(String, String)] {
        &self.start.params
    }

    /// Registers a device (libDDM): it appears under the mount where this
    /// driver is attached. Returns the driver's number for it.
    pub fn add_device(&mut self, name: &str, class: DeviceClass, size: u64) -> Result<DeviceId, Errno> {
        self.add(DeviceSpec::new(DeviceId(0), name, class, size))
    }

    /// Registers a device described in full (on one of the driver's buses,
    /// with its address and identifiers, offered to the plugin manager, or
    /// serving a bound node). The `device` field is filled in; returns it.
    pub fn add(&mut self, mut spec: DeviceSpec) -> Result<DeviceId, Errno> {
        let device = DeviceId(self.next_device);
        self.next_device += 1;
        spec.device = device;
        self.send(&DriverToDdm::AddDevice(spec))?;
        Ok(device)
    }

    /// Creates a bus (a directory) of `kind` named `name`, on `parent` or
    /// where the driver is attached. Returns the driver's number for it.
    pub fn add_bus(&mut self, name: &str, kind: &str, parent: Option<BusId>) -> Result<BusId, Errno> {
        let bus = BusId(self.next_bus);
        self.next_bus += 1;
        self.send(&DriverToDdm::AddBus { bus, name: name.to_owned(), kind: kind.to_owned(), parent })?;
        Ok(bus)
    }

    /// Removes a bus and everything on it.
    pub fn remove_bus(&mut self, bus: BusId) -> Result<(), Errno> {
        self.send(&DriverToDdm::RemoveBus { bus })
    }

    /// Removes a device from the tree; its open handles fail from now on.
    pub fn remove_device(&mut self, device: DeviceId) -> Result<(), Errno> {
        self.send(&DriverToDdm::RemoveDevice { device })
    }

    /// Calls [`Driver::ready`] with `token` whenever `fd` is readable. The
    /// driver keeps owning `fd`; call [`Context::unwatch`] before closing it.
    pub fn watch(&mut self, fd: &impl AsRawFd, token: u64) {
        self.watches.push((fd.as_raw_fd(), token));
    }

    /// Stops watching the descriptor registered under `token`.
    pub fn unwatch(&mut self, token: u64) {
        self.watches.retain(|(_, t)| *t != token);
    }

    /// A handle other threads can use to wake this driver.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Tells pollers of `handle` that its readiness changed. Only sent if a
    /// poller asked to be told; cheap otherwise.
    pub fn poll_wake(&mut self, handle: Handle) {
        if self.poll_waiters.remove(&handle) {
            let _ = self.send(&DriverToDdm::PollWake { handle });
        }
    }

    /// The state saved under `key` by an earlier incarnation, if any.
    pub fn state(&self, key: &str) -> Option<&SavedState> {
        self.state.get(key)
    }

    /// Takes the saved state under `key` (its descriptors become yours).
    pub fn take_state(&mut self, key: &str) -> Option<SavedState> {
        self.state.remove(key)
    }

    /// The DMA memory the DDM granted this driver, as its manifest's `[dma]`
    /// table asks (`None` without one). Every incarnation gets the same
    /// memory, at the same addresses, with what the last one left in it.
    /// See [`crate::mem`] for what is guaranteed.
    pub fn dma(&self) -> Option<&DmaRegion> {
        self.dma.as_ref()
    }

    /// The DMA memory, to write through its mapping.
    pub fn dma_mut(&mut self) -> Option<&mut DmaRegion> {
        self.dma.as_mut()
    }

    /// Takes the DMA memory out of the context: the driver owns its mapping
    /// from now on (the DDM keeps the memory itself either way).
    pub fn take_dma(&mut self) -> Option<DmaRegion> {
        self.dma.take()
    }

    /// Leaves state with the DDM for the next incarnation (the state store):
    /// `bytes` and up to [`crate::ipc::MAX_FDS`] descriptors (a memfd holding
    /// a disk, ...). It replaces what was saved under `key`. Because the DDM
    /// handles this driver's messages in order, state saved before a reply
    /// is stored before the client sees that reply: acknowledged state
    /// survives a crash.
    pub fn save_state(&mut self, key: &str, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
        let msg = DriverToDdm::SaveState { key: key.to_owned() };
        self.chan.send(&msg, bytes, fds).map_err(|e| {
            warn!("{}: saving state {key:?} failed: {e}", self.start.instance);
            Errno::EIO
        })
    }

    /// Reports the driver's own counters (`lost_bytes`, ...); `ddmctl
    /// status` shows the latest value of each.
    pub fn counters(&mut self, counters: &[(&str, u64)]) -> Result<(), Errno> {
        let v = counters.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        self.send(&DriverToDdm::Counters(v))
    }

    /// Forgets the state saved under `key`.
    pub fn drop_state(&mut self, key: &str) -> Result<(), Errno> {
        self.send(&DriverToDdm::DropState { key: key.to_owned() })
    }

    /// Asks the runtime to stop after the current call (fini, then exit 0).
    pub fn stop(&mut self) {
        self.stop = true;
    }

    fn send(&self, msg: &DriverToDdm) -> Result<(), Errno> {
        self.chan.send(msg, &[], &[]).map_err(|e| {
            warn!("{}: send to DDM failed: {e}", self.start.instance);
            Errno::EIO
        })
    }
}

/// Parameters a driver is started with (what [`run`]'s constructor sees).
#[derive(Debug, Clone)]
pub struct StartInfo {
    /// Instance name.
    pub instance: String,
    /// `key=value` parameters.
    pub params: Vec<(String, String)>,
}

impl StartInfo {
    /// Start parameters for instance `instance` (a driver's unit tests).
    pub fn new(instance: &str, params: &[(&str, &str)]) -> StartInfo {
        let params = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        StartInfo { instance: instance.to_owned(), params }
    }

    /// The value of parameter `key`, if given (the last one wins).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The parameters as the driver's own configuration type (see
    /// [`crate::params`]): numbers, flags, sizes (`64M`), lists and
    /// choices are parsed, unknown or missing keys refused, and the error
    /// names this instance, the key and the value.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, ParamError> {
        crate::params::from_params(&self.instance, &self.params)
    }
}

/// Sets up a driver process's log: `env_logger`, `info` unless `RUST_LOG`
/// says otherwise, and every line names the instance ([`INSTANCE_ENV`]).
/// A driver's standard error is the DDM's, so its lines land in the DDM's
/// log. Call it first thing in `main`.
pub fn init_logging() {
    use std::io::Write;
    let instance = std::env::var(INSTANCE_ENV).ok();
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(instance) = instance {
        builder.format(move |buf, record| {
            let ts = buf.timestamp();
            let level = buf.default_level_style(record.level());
            writeln!(buf, "[{ts} {level}{:<5}{level:#} {instance}] {}", record.level(), record.args())
        });
    }
    // A second call (a test that runs two drivers in one process) keeps the first.
    let _ = builder.try_init();
}

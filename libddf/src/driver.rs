//! libDriver: the [`Driver`] trait and the runtime that serves it.
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
//! of a device that does not support it: `open` is `ENXIO`, `read`, `write`,
//! `scatter` and `gather` are `EINVAL` (what the kernel answers for a file
//! without that operation), `ioctl` is `ENOTTY`, and `poll` says "readable
//! and writable" (the kernel's default poll mask). `close`, `init` and `fini`
//! succeed. A driver implements only what it means.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;

use log::{debug, error, warn};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::ipc::{Channel, IpcError, RecvBuf, PAYLOAD_MAX};
use crate::proto::{
    Answer, BoundDevice, BusId, Call, DdmToDriver, DeviceClass, DeviceId, DeviceSpec, DriverToDdm, Errno, Fault,
    Handle, RequestId, StateEntry,
};

/// The environment variable that names the descriptor of the DDM socket a
/// driver inherits.
pub const SOCKET_FD_ENV: &str = "DDF_SOCKET_FD";

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
    fn open(&mut self, ctx: &mut Context, device: DeviceId, flags: i32) -> Result<Handle, Errno> {
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
    fn backing_file(&mut self, ctx: &mut Context, handle: Handle, flags: i32) -> Option<OwnedFd> {
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
    /// answer is all the bytes, in order.
    fn scatter(&mut self, ctx: &mut Context, handle: Handle, offset: u64, lens: &[u32], reply: ReadReply) {
        reply.error(Errno::EINVAL);
    }

    /// Writes `data`, made of buffers of sizes `lens`, from `offset` on
    /// (writev).
    fn gather(&mut self, ctx: &mut Context, handle: Handle, offset: u64, lens: &[u32], data: &[u8], reply: WriteReply) {
        reply.error(Errno::EINVAL);
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
    instance: String,
    params: Vec<(String, String)>,
    watches: Vec<(RawFd, u64)>,
    poll_waiters: HashSet<Handle>,
    waker: Waker,
    next_device: DeviceId,
    next_bus: BusId,
    stop: bool,
}

impl Context {
    /// The instance name the DDM gave this driver.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The value of parameter `key`, if given.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// All parameters, in the order given.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Registers a device (libDDM): it appears under the mount where this
    /// driver is attached. Returns the driver's number for it.
    pub fn add_device(&mut self, name: &str, class: DeviceClass, size: u64) -> Result<DeviceId, Errno> {
        self.add(DeviceSpec::new(0, name, class, size))
    }

    /// Registers a device described in full (on one of the driver's buses,
    /// with its address and identifiers, offered to the plugin manager, or
    /// serving a bound node). The `device` field is filled in; returns it.
    pub fn add(&mut self, mut spec: DeviceSpec) -> Result<DeviceId, Errno> {
        let device = self.next_device;
        self.next_device += 1;
        spec.device = device;
        self.send(&DriverToDdm::AddDevice(spec))?;
        Ok(device)
    }

    /// Creates a bus (a directory) of `kind` named `name`, on `parent` or
    /// where the driver is attached. Returns the driver's number for it.
    pub fn add_bus(&mut self, name: &str, kind: &str, parent: Option<BusId>) -> Result<BusId, Errno> {
        let bus = self.next_bus;
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

    /// Leaves state with the DDM for the next incarnation (the state store):
    /// `bytes` and up to [`crate::ipc::MAX_FDS`] descriptors (a memfd holding
    /// a disk, ...). It replaces what was saved under `key`. Because the DDM
    /// handles this driver's messages in order, state saved before a reply
    /// is stored before the client sees that reply: acknowledged state
    /// survives a crash.
    pub fn save_state(&mut self, key: &str, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
        let msg = DriverToDdm::SaveState { key: key.to_owned() };
        self.chan.send(&msg, bytes, fds).map_err(|e| {
            warn!("{}: saving state {key:?} failed: {e}", self.instance);
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
            warn!("{}: send to DDM failed: {e}", self.instance);
            Errno::EIO
        })
    }
}

/// The part every reply object shares: where the answer goes, and the
/// guarantee that it goes exactly once.
#[derive(Debug)]
struct ReplyTo {
    id: RequestId,
    chan: Arc<Channel>,
    sent: bool,
}

impl ReplyTo {
    fn send(&mut self, result: Result<Answer, Errno>, payload: &[u8]) {
        self.send_fds(result, payload, &[]);
    }

    fn send_fds(&mut self, result: Result<Answer, Errno>, payload: &[u8], fds: &[BorrowedFd<'_>]) {
        self.sent = true;
        let msg = DriverToDdm::Reply { id: self.id, result };
        if let Err(e) = self.chan.send(&msg, payload, fds) {
            // The DDM is gone or the answer is malformed; the DDM fails the
            // request on its side in both cases.
            warn!("reply to request {}: {e}", self.id.0);
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if !self.sent {
            debug!("request {} dropped without an answer: answering EIO", self.id.0);
            self.send(Err(Errno::EIO), &[]);
        }
    }
}

/// The answer to a read or a scatter: data or an error, now or later.
#[derive(Debug)]
pub struct ReadReply {
    to: ReplyTo,
    max: u32,
    flags: i32,
}

impl ReadReply {
    /// The request this answers (to match a [`Driver::cancel`]).
    pub fn id(&self) -> RequestId {
        self.to.id
    }

    /// The most bytes the caller takes.
    pub fn max_len(&self) -> u32 {
        self.max
    }

    /// The file's `O_*` flags at the time of the call.
    pub fn flags(&self) -> i32 {
        self.flags
    }

    /// Whether the caller asked not to block (`O_NONBLOCK`).
    pub fn nonblocking(&self) -> bool {
        self.flags & libc::O_NONBLOCK != 0
    }

    /// Answers with `data` (cut to [`ReadReply::max_len`]); an empty slice
    /// is end of file.
    pub fn data(mut self, data: &[u8]) {
        let n = data.len().min(self.max as usize);
        self.to.send(Ok(Answer::Data), &data[..n]);
    }

    /// Answers with an error.
    pub fn error(mut self, err: Errno) {
        self.to.send(Err(err), &[]);
    }
}

/// The answer to a write or a gather.
#[derive(Debug)]
pub struct WriteReply {
    to: ReplyTo,
}

impl WriteReply {
    /// The request this answers.
    pub fn id(&self) -> RequestId {
        self.to.id
    }

    /// Answers that `len` bytes were taken.
    pub fn written(mut self, len: u32) {
        self.to.send(Ok(Answer::Written { len }), &[]);
    }

    /// Answers with an error.
    pub fn error(mut self, err: Errno) {
        self.to.send(Err(err), &[]);
    }
}

/// The answer to an ioctl.
#[derive(Debug)]
pub struct IoctlReply {
    to: ReplyTo,
    max: u32,
}

impl IoctlReply {
    /// The request this answers.
    pub fn id(&self) -> RequestId {
        self.to.id
    }

    /// The most output bytes the caller takes.
    pub fn max_len(&self) -> u32 {
        self.max
    }

    /// Answers with `ioctl(2)`'s return value and output bytes (cut to what
    /// the caller takes).
    pub fn ok(mut self, result: i32, out: &[u8]) {
        let n = out.len().min(self.max as usize);
        self.to.send(Ok(Answer::Ioctl { result }), &out[..n]);
    }

    /// Answers with an error.
    pub fn error(mut self, err: Errno) {
        self.to.send(Err(err), &[]);
    }
}

/// How a driver process ends.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The socket from the DDM is missing or not a number.
    #[error("no DDM socket: {SOCKET_FD_ENV} is {0:?} (drivers are started by ddm, not by hand)")]
    NoSocket(Option<String>),
    /// The link to the DDM failed.
    #[error("link to the DDM failed")]
    Ipc(#[from] IpcError),
    /// The DDM sent something other than what the protocol allows here.
    #[error("unexpected message from the DDM: {0}")]
    Protocol(String),
    /// The driver's constructor or `init` refused.
    #[error("driver failed to start: {0}")]
    Init(String),
    /// Creating the wake-up eventfd or polling failed.
    #[error("runtime setup failed")]
    Setup(#[source] std::io::Error),
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
    /// The value of parameter `key`, if given (the last one wins).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Serves a driver until the DDM says stop or goes away. `make` builds the
/// driver from its start parameters. Returns the process exit code: 0 after
/// a requested shutdown or when the DDM closes the link, 1 on errors (logged).
pub fn run<D, F>(make: F) -> ExitCode
where
    D: Driver,
    F: FnOnce(&StartInfo) -> Result<D, String>,
{
    match serve(make) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Ipc(IpcError::Closed)) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn serve<D, F>(make: F) -> Result<(), RunError>
where
    D: Driver,
    F: FnOnce(&StartInfo) -> Result<D, String>,
{
    let var = std::env::var(SOCKET_FD_ENV).ok();
    let raw: RawFd = var
        .as_deref()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd >= 3)
        .ok_or_else(|| RunError::NoSocket(var.clone()))?;
    // Refuse a number that is not an open descriptor instead of owning garbage.
    // SAFETY: F_GETFD only reads the descriptor table entry for `raw`.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(RunError::NoSocket(var));
    }
    // SAFETY: the DDM passed us `raw` for our exclusive use, we checked it is
    // open, and nothing else in this process owns it.
    let chan = Arc::new(unsafe { Channel::from_raw_fd(raw) }?);
    // Do not leak the socket into programs the driver may start.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };

    let mut buf = RecvBuf::default();
    chan.handshake(&mut buf)?;
    let (start, state) = {
        let frame = chan.recv(&mut buf)?;
        let msg = frame.decode::<DdmToDriver>()?;
        match msg {
            DdmToDriver::Start { instance, params, state } => {
                (StartInfo { instance, params }, take_state(state, frame.fds)?)
            }
            other => return Err(RunError::Protocol(format!("expected Start, got {other:?}"))),
        }
    };
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| RunError::Setup(e.into()))?;
    let mut ctx = Context {
        chan: chan.clone(),
        state,
        instance: start.instance.clone(),
        params: start.params.clone(),
        watches: Vec::new(),
        poll_waiters: HashSet::new(),
        waker: Waker(Arc::new(efd)),
        next_device: 0,
        next_bus: 0,
        stop: false,
    };
    let mut driver = make(&start).map_err(RunError::Init)?;
    driver.init(&mut ctx).map_err(|e| RunError::Init(format!("init: {e}")))?;
    chan.send(&DriverToDdm::Ready, &[], &[])?;

    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut clients: Vec<ClientLink> = Vec::new();
    loop {
        if ctx.stop {
            driver.fini(&mut ctx);
            return Ok(());
        }
        pollfds.clear();
        for fd in [chan.as_fd().as_raw_fd(), ctx.waker.0.as_fd().as_raw_fd()] {
            pollfds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
        for c in &clients {
            pollfds.push(libc::pollfd { fd: c.chan.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let first_watch = pollfds.len();
        for (fd, _) in &ctx.watches {
            pollfds.push(libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: `pollfds` is a live, correctly sized array of pollfd; poll
        // on a descriptor that was closed meanwhile only reports POLLNVAL.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RunError::Setup(e));
        }
        if pollfds[1].revents != 0 {
            let _ = ctx.waker.0.read();
            driver.wake(&mut ctx);
        }
        let ready: Vec<u64> = pollfds[first_watch..]
            .iter()
            .zip(ctx.watches.iter())
            .filter(|(p, _)| p.revents != 0)
            .map(|(_, (_, t))| *t)
            .collect();
        for token in ready {
            driver.ready(&mut ctx, token);
        }
        // Direct clients, newest first so that removal keeps indices valid.
        for i in (0..clients.len()).rev() {
            if pollfds[2 + i].revents == 0 {
                continue;
            }
            if let Err(why) = serve_client(&mut driver, &mut ctx, &mut clients[i], &mut buf) {
                debug!("direct client gone: {why}");
                let gone = clients.swap_remove(i);
                for h in gone.handles {
                    ctx.poll_waiters.remove(&h);
                    driver.close(&mut ctx, h);
                }
            }
        }
        if pollfds[0].revents != 0 {
            let frame = chan.recv(&mut buf)?;
            let msg: DdmToDriver = frame.decode()?;
            let fds = frame.fds;
            dispatch(&mut driver, &mut ctx, msg, frame.payload, fds, &mut clients)?;
        }
    }
}

/// A direct client of the driver (see [`DdmToDriver::Attach`]).
#[derive(Debug)]
struct ClientLink {
    chan: Arc<Channel>,
    device: DeviceId,
    access: i32,
    /// Handles this client opened: the only ones it may use.
    handles: HashSet<Handle>,
    greeted: bool,
}

/// Whether `flags` ask for no more than `granted` (`O_ACCMODE` values).
fn access_within(flags: i32, granted: i32) -> bool {
    let want = flags & libc::O_ACCMODE;
    granted == libc::O_RDWR || want == granted
}

/// Serves one frame of a direct client. An error ends the client's link
/// (its handles are closed); it never ends the driver.
fn serve_client<D: Driver>(
    driver: &mut D,
    ctx: &mut Context,
    client: &mut ClientLink,
    buf: &mut RecvBuf,
) -> Result<(), String> {
    let frame = client.chan.recv(buf).map_err(|e| e.to_string())?;
    if !frame.fds.is_empty() {
        return Err("a direct client sent descriptors".into());
    }
    if !client.greeted {
        let hello: crate::proto::Hello = frame.decode().map_err(|e| e.to_string())?;
        if hello != crate::proto::Hello::ours() {
            return Err(format!("direct client speaks {hello:?}"));
        }
        client.greeted = true;
        return Ok(());
    }
    let DdmToDriver::Call { id, call } = frame.decode::<DdmToDriver>().map_err(|e| e.to_string())? else {
        return Err("a direct client sent something other than a call".into());
    };
    let mut to = ReplyTo { id, chan: client.chan.clone(), sent: false };
    let can_read = client.access != libc::O_WRONLY;
    let can_write = client.access != libc::O_RDONLY;
    let (handle, needs_read, needs_write) = match &call {
        Call::Open { device, flags } => {
            if *device != client.device || !access_within(*flags, client.access) {
                to.send(Err(Errno::EPERM), &[]);
                return Ok(());
            }
            match driver.open(ctx, *device, *flags) {
                Ok(h) => {
                    client.handles.insert(h);
                    to.send(Ok(Answer::Opened { handle: h }), &[]);
                }
                Err(e) => to.send(Err(e), &[]),
            }
            return Ok(());
        }
        Call::Close { handle } => (*handle, false, false),
        Call::Read { handle, .. } | Call::Scatter { handle, .. } => (*handle, true, false),
        Call::Write { handle, .. } | Call::Gather { handle, .. } => (*handle, false, true),
        Call::Ioctl { handle, .. } | Call::Poll { handle, .. } => (*handle, false, false),
    };
    if !client.handles.contains(&handle) {
        to.send(Err(Errno::EBADF), &[]);
        return Ok(());
    }
    if (needs_read && !can_read) || (needs_write && !can_write) {
        to.send(Err(Errno::EBADF), &[]);
        return Ok(());
    }
    let call = match call {
        // No one to wake: a direct client polls.
        Call::Poll { handle, events, .. } => Call::Poll { handle, events, notify: false },
        Call::Close { handle } => {
            client.handles.remove(&handle);
            Call::Close { handle }
        }
        other => other,
    };
    call_driver(driver, ctx, to, call, frame.payload);
    Ok(())
}

/// What can go wrong calling a driver directly.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The link to the driver failed (it died or restarted: connect again).
    #[error("link to the driver failed")]
    Ipc(#[from] IpcError),
    /// The driver answered with an error.
    #[error("driver answered {0}")]
    Errno(Errno),
    /// The driver answered something that does not fit the call.
    #[error("unexpected answer from the driver: {0}")]
    Protocol(String),
}

/// The libDriver client proxy: calls to one device's driver that look like
/// local method calls, over a direct socket to the driver process (no FUSE,
/// no DDM in the path). Get one from [`crate::ddm::Ddm::connect_device`],
/// which checks the caller's right to the device first.
///
/// A link does not survive a restart of the driver: calls then fail with
/// [`ClientError::Ipc`], and a new connection is needed.
#[derive(Debug)]
pub struct Client {
    chan: Channel,
    buf: RecvBuf,
    next: u64,
    device: DeviceId,
    access: i32,
}

impl Client {
    /// Wraps the socket the DDM handed over and does the handshake.
    pub fn new(chan: Channel, device: DeviceId, access: i32) -> Result<Client, ClientError> {
        let mut buf = RecvBuf::default();
        chan.handshake(&mut buf)?;
        Ok(Client { chan, buf, next: 1, device, access })
    }

    /// The access this link was granted (`O_RDONLY`, `O_WRONLY`, `O_RDWR`).
    pub fn access(&self) -> i32 {
        self.access
    }

    /// Makes one call and returns the answer and its payload (copied into `out`).
    pub fn call(&mut self, call: Call, payload: &[u8], out: &mut [u8]) -> Result<(Answer, usize), ClientError> {
        let id = RequestId(self.next);
        self.next += 1;
        self.chan.send(&DdmToDriver::Call { id, call }, payload, &[])?;
        let frame = self.chan.recv(&mut self.buf)?;
        match frame.decode::<DriverToDdm>()? {
            DriverToDdm::Reply { id: got, result } if got == id => {
                let answer = result.map_err(ClientError::Errno)?;
                let n = frame.payload.len().min(out.len());
                out[..n].copy_from_slice(&frame.payload[..n]);
                Ok((answer, n))
            }
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Opens the device with `open(2)` flags (within the granted access).
    pub fn open(&mut self, flags: i32) -> Result<Handle, ClientError> {
        let call = Call::Open { device: self.device, flags };
        match self.call(call, &[], &mut [])? {
            (Answer::Opened { handle } | Answer::OpenedBacked { handle }, _) => Ok(handle),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Reads into `buf` at `offset`; returns the bytes read (0 is end of file).
    pub fn read(&mut self, handle: Handle, offset: u64, buf: &mut [u8]) -> Result<usize, ClientError> {
        let len = buf.len().min(PAYLOAD_MAX) as u32;
        let call = Call::Read { handle, offset, len, flags: 0 };
        match self.call(call, &[], buf)? {
            (Answer::Data, n) => Ok(n),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Writes `data` at `offset` (at most [`PAYLOAD_MAX`] bytes per call);
    /// returns the bytes taken.
    pub fn write(&mut self, handle: Handle, offset: u64, data: &[u8]) -> Result<usize, ClientError> {
        let data = &data[..data.len().min(PAYLOAD_MAX)];
        let call = Call::Write { handle, offset, flags: 0 };
        match self.call(call, data, &mut [])? {
            (Answer::Written { len }, _) => Ok(len as usize),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Device control; returns `ioctl(2)`'s value and the output bytes.
    pub fn ioctl(
        &mut self,
        handle: Handle,
        cmd: u32,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(i32, usize), ClientError> {
        let call = Call::Ioctl { handle, cmd, out_len: out.len().min(PAYLOAD_MAX) as u32 };
        match self.call(call, input, out)? {
            (Answer::Ioctl { result }, n) => Ok((result, n)),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Closes a handle.
    pub fn close(&mut self, handle: Handle) -> Result<(), ClientError> {
        match self.call(Call::Close { handle }, &[], &mut [])? {
            (Answer::Closed, _) => Ok(()),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}

/// Pairs the saved state entries with the descriptors that came with them.
fn take_state(entries: Vec<StateEntry>, fds: Vec<OwnedFd>) -> Result<HashMap<String, SavedState>, RunError> {
    let want: usize = entries.iter().map(|e| usize::from(e.fds)).sum();
    if want != fds.len() {
        return Err(RunError::Protocol(format!("state names {want} descriptors, {} came", fds.len())));
    }
    let mut fds = fds.into_iter();
    Ok(entries
        .into_iter()
        .map(|e| {
            let mine: Vec<OwnedFd> = fds.by_ref().take(usize::from(e.fds)).collect();
            (e.key, SavedState { bytes: e.bytes, fds: mine })
        })
        .collect())
}

/// Does what [`DdmToDriver::Inject`] asks. Most of these do not return.
fn inject(chan: &Channel, fault: Fault) -> Result<(), RunError> {
    warn!("fault injected on request: {fault:?}");
    match fault {
        Fault::Panic => panic!("injected panic (ddmctl inject)"),
        Fault::Abort => std::process::abort(),
        Fault::Segv => {
            // The Rust runtime handles SIGSEGV (to report stack overflows)
            // and returns from a raised one; restore the default action so
            // that the signal ends the process like a real invalid access.
            // SAFETY: signal(2) with SIG_DFL and raise(2) have no memory
            // preconditions; ending the process is the point.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            Ok(())
        }
        Fault::Hang => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Fault::Garbage => {
            let junk = [0xffu8; 64];
            chan.send_raw(&junk, &[], false)?;
            Ok(())
        }
        Fault::Exit(code) => std::process::exit(code),
        Fault::Flood => loop {
            chan.send(&DriverToDdm::PollWake { handle: 0 }, &[], &[])?;
        },
        Fault::StrayReply => {
            let stray = DriverToDdm::Reply { id: RequestId(u64::MAX), result: Err(Errno::EIO) };
            chan.send(&stray, &[], &[])?;
            Ok(())
        }
    }
}

fn dispatch<D: Driver>(
    driver: &mut D,
    ctx: &mut Context,
    msg: DdmToDriver,
    payload: &[u8],
    fds: Vec<OwnedFd>,
    clients: &mut Vec<ClientLink>,
) -> Result<(), RunError> {
    if !fds.is_empty() && !matches!(msg, DdmToDriver::Attach { .. }) {
        return Err(RunError::Protocol("descriptors with a message that takes none".into()));
    }
    match msg {
        DdmToDriver::Attach { device, access } => {
            let Some(fd) = fds.into_iter().next() else {
                return Err(RunError::Protocol("Attach without a socket".into()));
            };
            let chan = Arc::new(Channel::from_fd(fd)?);
            chan.send(&crate::proto::Hello::ours(), &[], &[])?;
            debug!("direct client attached for device {device} (access {access:#o})");
            clients.push(ClientLink {
                chan,
                device,
                access: access & libc::O_ACCMODE,
                handles: HashSet::new(),
                greeted: false,
            });
        }
        DdmToDriver::Start { .. } => {
            return Err(RunError::Protocol("second Start".into()));
        }
        DdmToDriver::Ping { seq } => {
            ctx.chan.send(&DriverToDdm::Pong { seq }, &[], &[])?;
        }
        DdmToDriver::Shutdown => ctx.stop = true,
        DdmToDriver::Bind(dev) => {
            if let Err(e) = driver.bind(ctx, &dev) {
                warn!("{}: cannot serve {}: {e}", ctx.instance, dev.path);
            }
        }
        DdmToDriver::Unbind { path } => driver.unbind(ctx, &path),
        DdmToDriver::Rescan => driver.rescan(ctx),
        DdmToDriver::Inject(fault) => inject(&ctx.chan, fault)?,
        DdmToDriver::Cancel { id } => driver.cancel(ctx, id),
        DdmToDriver::Call { id, call } => {
            let to = ReplyTo { id, chan: ctx.chan.clone(), sent: false };
            call_driver(driver, ctx, to, call, payload);
        }
    }
    Ok(())
}

fn call_driver<D: Driver>(driver: &mut D, ctx: &mut Context, mut to: ReplyTo, call: Call, payload: &[u8]) {
    match call {
        Call::Open { device, flags } => match driver.open(ctx, device, flags) {
            Ok(handle) => match driver.backing_file(ctx, handle, flags) {
                Some(fd) => to.send_fds(Ok(Answer::OpenedBacked { handle }), &[], &[fd.as_fd()]),
                None => to.send(Ok(Answer::Opened { handle }), &[]),
            },
            Err(e) => to.send(Err(e), &[]),
        },
        Call::Close { handle } => {
            ctx.poll_waiters.remove(&handle);
            driver.close(ctx, handle);
            to.send(Ok(Answer::Closed), &[]);
        }
        Call::Read { handle, offset, len, flags } => {
            let max = len.min(PAYLOAD_MAX as u32);
            driver.read(ctx, handle, offset, max, ReadReply { to, max, flags });
        }
        Call::Write { handle, offset, flags: _ } => {
            driver.write(ctx, handle, offset, payload, WriteReply { to });
        }
        Call::Scatter { handle, offset, lens } => {
            let total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
            let max = total.min(PAYLOAD_MAX as u64) as u32;
            let reply = ReadReply { to, max, flags: 0 };
            driver.scatter(ctx, handle, offset, &lens, reply);
        }
        Call::Gather { handle, offset, lens } => {
            let total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
            if total != payload.len() as u64 {
                to.send(Err(Errno::EINVAL), &[]);
                return;
            }
            driver.gather(ctx, handle, offset, &lens, payload, WriteReply { to });
        }
        Call::Ioctl { handle, cmd, out_len } => {
            let max = out_len.min(PAYLOAD_MAX as u32);
            driver.ioctl(ctx, handle, cmd, payload, max, IoctlReply { to, max });
        }
        Call::Poll { handle, events, notify } => {
            let revents = driver.poll(ctx, handle, events);
            if notify && revents & events == 0 {
                ctx.poll_waiters.insert(handle);
            }
            to.send(Ok(Answer::Polled { revents }), &[]);
        }
    }
}
